"""The gateway over HTTP: requests out, values or errors back.

Every answer becomes either decoded JSON or one of the ``ClientError``s: the gateway's
``{"error", "field"}`` body as ``ApiError``, a rejected token as ``NotLoggedIn``, a refused
or silent connection as ``Unreachable`` naming the URL. The token goes only into the
``Authorization`` header; it is in no message, log line or repr.

A logged-in POST carries a fresh ``Idempotency-Key`` and is retried with the same key, a
bounded number of times with growing pauses (``RETRY_DELAYS_S``), when the connection
failed or the gateway (or a proxy) answered 502, 503 or 504, or said the first request
with the key is still in progress: the gateway answers a retry with the first answer, so
a create whose answer was lost makes one resource, not two. A DELETE is retried the same
way (asked twice, it deletes once). Each retry is one line for
people (``retrying in 1s: connection refused``); the last failure is raised as it was.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from ucloud.errors import ApiError, NotLoggedIn, Unreachable

DEFAULT_TIMEOUT_S = 30.0
# one pause before each retry: 23 s in all, as long as a cluster takes to elect new leaders
# after losing a node
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 8.0)
IDEMPOTENCY_KEY = "Idempotency-Key"
RETRIED_STATUSES = frozenset({502, 503, 504})


def path(*parts: str) -> str:
    """A URL path from segments, each quoted (a VM name may hold any character)."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


def api_error(status: int, body: bytes) -> ApiError:
    """The error a 4xx/5xx answer stands for; a body not in the contract's shape still says
    what the gateway (or a proxy in front of it) answered."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        field = data.get("field")
        return ApiError(status, field if isinstance(field, str) else "", data["error"])
    text = body.decode("utf-8", "replace").strip().splitlines()
    detail = f": {text[0][:200]}" if text else ""
    return ApiError(status, "", f"HTTP {status}{detail}")


class GatewayClient:
    """A synchronous client of one gateway; use it as a context manager."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        report: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry_delays = tuple(retry_delays)
        self.report = report or _to_stderr
        self.sleep = sleep
        headers = {"Accept": "application/json", "User-Agent": "ucloud-cli"}
        self._authenticated = token is not None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"GatewayClient({self.url!r})"

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, url_path: str) -> Any:
        return self.request("GET", url_path)

    def post(self, url_path: str, body: dict[str, Any] | None = None) -> Any:
        """POST ``body``; logged in, with an idempotency key and retries (see above)."""
        body = body if body is not None else {}
        if not self._authenticated:  # a key belongs to a user; a login is not retried
            return self.request("POST", url_path, body)
        return self._retrying("POST", url_path, body, {IDEMPOTENCY_KEY: str(uuid.uuid4())})

    def delete(self, url_path: str) -> Any:
        """DELETE, retried as a keyed POST is (a delete asked twice deletes once)."""
        return self._retrying("DELETE", url_path)

    def _retrying(
        self, method: str, url_path: str, body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        for delay in self.retry_delays:
            try:
                return self.request(method, url_path, body, headers=headers)
            except (Unreachable, ApiError) as exc:
                reason = retry_reason(exc)
                if reason is None:
                    raise
                if isinstance(exc, ApiError) and exc.retry_after_s is not None:
                    delay = max(delay, exc.retry_after_s)
                self.report(f"retrying in {delay:g}s: {reason}")
                self.sleep(delay)
        return self.request(method, url_path, body, headers=headers)

    def request(
        self,
        method: str,
        url_path: str,
        body: dict[str, Any] | None = None,
        *,
        content: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Decoded JSON of a 2xx answer (None for an empty one); raises ClientError otherwise.

        ``content`` sends raw bytes (streamed from an iterable) instead of a JSON body."""
        try:
            if content is not None:
                response = self._http.request(method, url_path, content=content, headers=headers)
            else:
                response = self._http.request(method, url_path, json=body, headers=headers)
        except httpx.ConnectError as exc:
            raise Unreachable(self.url, _connect_detail(exc)) from exc
        except httpx.TimeoutException as exc:
            raise Unreachable(self.url, f"no answer within {self.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from exc
        if response.status_code >= 400:
            error = api_error(response.status_code, response.content)
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code == 429 and retry_after.isdigit():
                error = ApiError(429, error.field, f"{error.reason} (retry in {retry_after}s)")
            if retry_after.isdigit():
                error.retry_after_s = int(retry_after)
            if response.status_code == 401 and self._authenticated:
                raise NotLoggedIn(f"the gateway rejected the token ({error})") from error
            raise error
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "", f"the gateway answered {method} {url_path} with non-JSON"
            ) from exc


def retry_reason(exc: Unreachable | ApiError) -> str | None:
    """Why a keyed request is worth sending again (None: it is not)."""
    if isinstance(exc, Unreachable):
        return exc.detail.split(" (", 1)[0]
    if exc.status in RETRIED_STATUSES:
        return exc.reason if exc.reason.startswith("HTTP ") else f"HTTP {exc.status}: {exc.reason}"
    if exc.status == 409 and exc.field == IDEMPOTENCY_KEY:  # the first is still running
        return exc.reason
    return None


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def quiet_http_logging() -> None:
    """httpx logs every request at INFO; the CLI shows them only with ``-v``."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _connect_detail(exc: httpx.ConnectError) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    return text or "cannot connect"
