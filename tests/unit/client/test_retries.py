"""A logged-in POST carries one Idempotency-Key through a bounded number of retries.

The gateway's side (a retry answers the first answer) is tested against the real gateway in
tests/integration/test_gateway_idempotency.py; here an httpx mock transport plays a
gateway or proxy that fails in chosen ways, to pin what the client sends and when.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from ucloud.client.http import GatewayClient
from ucloud.errors import ApiError, Unreachable

Reply = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers each request with the next reply; records the requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[httpx.Request] = []
        self.reports: list[str] = []
        self.pauses: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.replies.pop(0)(request) if len(self.replies) > 1 else self.replies[0](request)

    def client(self, token: str | None = "t") -> GatewayClient:
        return GatewayClient(
            "http://gateway", token, transport=httpx.MockTransport(self),
            report=self.reports.append, sleep=self.pauses.append,
        )

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.seen]


def status(code: int, field: str = "", reason: str = "nope", **headers: str) -> Reply:
    return lambda _: httpx.Response(code, json={"error": reason, "field": field}, headers=headers)


def made(_: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"id": "vm1"})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_a_create_is_retried_with_the_same_key_through_503s() -> None:
    script = Script(status(503, reason="backend unavailable, try again"), status(504), made)
    with script.client() as gateway:
        assert gateway.post("/v1/vms", {"name": "web"}) == {"id": "vm1"}
    assert len(script.seen) == 3 and len(set(script.keys)) == 1 and script.keys[0]
    assert script.reports == [
        "retrying in 1s: HTTP 503: backend unavailable, try again",
        "retrying in 2s: HTTP 504: nope",
    ]
    assert script.pauses == [1.0, 2.0]


def test_an_unreachable_gateway_is_tried_a_bounded_number_of_times() -> None:
    script = Script(refused)
    with script.client() as gateway, pytest.raises(Unreachable) as info:
        gateway.post("/v1/vms", {"name": "web"})
    assert "connection refused" in str(info.value)
    assert len(script.seen) == 6 and len(set(script.keys)) == 1
    assert script.reports == [
        f"retrying in {s}s: connection refused" for s in ("1", "2", "4", "8", "8")
    ]


def test_a_key_in_progress_is_retried_after_retry_after() -> None:
    busy = status(409, "Idempotency-Key", "still in progress; retry", **{"Retry-After": "3"})
    script = Script(busy, made)
    with script.client() as gateway:
        assert gateway.post("/v1/vms", {}) == {"id": "vm1"}
    assert script.pauses == [3.0] and script.reports == ["retrying in 3s: still in progress; retry"]


@pytest.mark.parametrize("code", [400, 409, 422, 500])
def test_other_errors_are_not_retried(code: int) -> None:
    script = Script(status(code, "name"), made)
    with script.client() as gateway, pytest.raises(ApiError) as info:
        gateway.post("/v1/vms", {})
    assert info.value.status == code and len(script.seen) == 1 and script.reports == []


def test_each_create_has_its_own_key_and_a_login_has_none() -> None:
    script = Script(made)
    with script.client() as gateway:
        gateway.post("/v1/vms", {"name": "a"})
        gateway.post("/v1/vms", {"name": "b"})
        gateway.get("/v1/vms")
    assert script.keys[0] != script.keys[1] and script.keys[2] is None
    anonymous = Script(status(503), made)
    with anonymous.client(token=None) as gateway, pytest.raises(ApiError):
        gateway.post("/v1/auth/token", {"otp": "1"})  # a one-time password is not sent twice
    assert anonymous.keys == [None] and anonymous.reports == []


def test_a_delete_is_retried_through_an_unavailable_backend() -> None:
    script = Script(status(503, reason="backend unavailable, try again"), made)
    with script.client() as gateway:
        assert gateway.delete("/v1/vms/web") == {"id": "vm1"}
    assert [r.method for r in script.seen] == ["DELETE", "DELETE"]
    assert script.reports == ["retrying in 1s: HTTP 503: backend unavailable, try again"]
