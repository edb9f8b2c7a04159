from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.client.wait import (
    CREATE_PATH,
    GONE,
    Done,
    Failed,
    Pending,
    Target,
    Verdict,
    follow,
    judge,
    judge_resource,
)
from ucloud.errors import WaitFailed
from ucloud.projections.views import VmStatus


def vm(status: str, host: str = "", restart: str = "always", reason: str = "") -> dict[str, Any]:
    return {"id": "v1", "name": "web", "status": status, "host": host, "restart": restart,
            "reason": reason}


@pytest.mark.parametrize(
    ("target", "view", "verdict"),
    [
        (Target("running"), vm("requested"), Pending()),
        (Target("running"), vm("running", "h1"), Done()),
        (Target("scheduled"), vm("scheduled", "h1"), Done()),
        (Target("scheduled"), vm("starting", "h1"), Done()),  # a poll missed "scheduled"
        (Target("scheduled"), vm("running", "h1"), Done()),
        (Target("running"), vm("failed", reason="no capacity"), Failed("is failed: no capacity")),
        (Target("running"), vm("lost"), Failed("is lost")),
        (Target("stopped"), vm("failed"), Failed("is failed")),
        (Target("running"), vm("deleting"), Failed("is being deleted")),
        (Target("running"), None, Failed("no longer exists")),
        (Target("running"), vm("crashed", restart="always"), Pending()),
        (Target("running"), vm("crashed", restart="never"), Failed(
            "crashed and its restart policy is never")),
        (Target("stopped"), vm("crashed", restart="never"), Pending()),
        (Target("stopped"), vm("stopping", "h1"), Pending()),
        (Target("stopped"), vm("stopped", "h1"), Done()),
        (Target("running"), vm("stopped", "h1"), Pending()),  # start: not begun yet
        (Target(GONE), vm("deleting", "h1"), Pending()),
        (Target(GONE), vm("failed"), Pending()),
        (Target(GONE), None, Done()),
        (Target("running", away_from="h1"), vm("running", "h1"), Pending()),
        (Target("running", away_from="h1"), vm("migrating", "h1"), Pending()),
        (Target("running", away_from="h1"), vm("running", "h2"), Done()),
        (Target("running", away_from="h1"), vm("lost"), Failed("is lost")),
    ],
)
def test_judge(target: Target, view: dict[str, Any] | None, verdict: Verdict) -> None:
    assert judge(target, view) == verdict


STATUSES = get_args(VmStatus)


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_a_wait_ends_well_exactly_when_the_target_is_reached(wanted: str, seen: str) -> None:
    later_on_the_create_path = (
        wanted in CREATE_PATH
        and seen in CREATE_PATH
        and CREATE_PATH.index(seen) > CREATE_PATH.index(wanted)
    )
    reached = seen == wanted or later_on_the_create_path
    assert (judge(Target(wanted), vm(seen, "h1")) == Done()) == reached


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_follow_prints_one_line_per_status_change() -> None:
    polls = iter([vm("requested"), vm("scheduled", "h1"), vm("scheduled", "h1"),
                  vm("starting", "h1"), vm("running", "h1")])
    lines: list[str] = []
    clock = Clock()
    final = follow(lambda: next(polls), Target("running"), name="web", first=vm("requested"),
                   timeout=60, interval=0.25, report=lines.append, clock=clock,
                   sleep=clock.sleep)
    assert final is not None and final["status"] == "running"
    assert lines == [
        "web: requested",
        "web: requested -> scheduled on h1",
        "web: scheduled -> starting on h1",
        "web: starting -> running on h1",
    ]
    assert clock.now == pytest.approx(5 * 0.25)


def test_follow_a_delete_until_gone() -> None:
    polls = iter([vm("deleting", "h1"), None])
    lines: list[str] = []
    final = follow(lambda: next(polls), Target(GONE), name="web", first=vm("deleting", "h1"),
                   timeout=60, interval=0.01, report=lines.append)
    assert final is None
    assert lines == ["web: deleting on h1", "web: deleting -> gone"]


def test_follow_fails_with_the_vms_reason() -> None:
    polls = iter([vm("failed", reason="no host has 64 CPUs free")])
    with pytest.raises(WaitFailed, match="vm web is failed: no host has 64 CPUs free"):
        follow(lambda: next(polls), Target("running"), name="web", first=vm("requested"),
               timeout=60, interval=0.01, report=lambda line: None)


def test_follow_gives_up_after_the_timeout_naming_the_last_status() -> None:
    clock = Clock()
    polls: list[int] = []

    def fetch() -> dict[str, Any]:
        polls.append(1)
        return vm("requested")

    with pytest.raises(WaitFailed, match=r"after 2s \(last status: requested\)"):
        follow(fetch, Target("running"), name="web", first=vm("requested"), timeout=2,
               interval=0.5, report=lambda line: None, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(2.0)
    assert len(polls) == 4


@pytest.mark.parametrize(
    ("target", "view", "verdict"),
    [
        ("created", {"status": "requested"}, Pending()),
        ("created", {"status": "created"}, Done()),
        ("created", {"status": "failed", "reason": "no VNI left"}, Failed("failed: no VNI left")),
        ("created", {"status": "deleting"}, Failed("is being deleted")),
        ("created", None, Failed("no longer exists")),
        (GONE, {"status": "deleting"}, Pending()),
        (GONE, {"status": "failed", "reason": "in use"}, Failed("failed: in use")),
        (GONE, None, Done()),
    ],
)
def test_judge_resource(target: str, view: dict[str, Any] | None, verdict: Verdict) -> None:
    assert judge_resource(Target(target), view) == verdict
