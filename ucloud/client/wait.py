"""Following a VM until it reaches a status (``--wait``).

Theory of operation: the CLI polls ``GET /v1/vms/{id}`` and hands each answer (the view,
or None once it answers 404) to ``judge``, which decides from the target alone whether the
wait is over, has failed or goes on. ``judge`` reads no clock and does no I/O; ``follow``
is the loop around it, with the clock, the sleep and the printer passed in.

- The create path ``requested -> scheduled -> starting -> running`` is ordered: waiting for
  ``scheduled`` is also over when the VM is already ``starting`` or ``running`` (a poll
  can miss a short-lived status).
- ``failed`` and ``lost`` end every wait but one for ``gone``; so does ``deleting`` (someone
  deleted it) and a 404; ``crashed`` ends a wait for ``running`` only when the VM's restart
  policy is ``never`` (otherwise hostd restarts it).
- A migration is over when the VM runs on a host other than the one it left. It failed
  when the VM runs on where it was with a reason (``migration_failed`` keeps it running
  there and says why; the request cleared the reason before).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ucloud.errors import WaitFailed, WaitTimedOut

GONE = "gone"
CREATE_PATH = ("requested", "scheduled", "starting", "running")
_FATAL = ("failed", "lost")

View = Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    status: str  # a VM status, or GONE
    away_from: str = ""  # a migration: the host the VM must leave


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class Failed:
    reason: str


Verdict = Done | Pending | Failed


def judge(target: Target, view: View | None) -> Verdict:
    """Whether a poll that saw ``view`` (None: 404) ends the wait for ``target``."""
    if view is None:
        return Done() if target.status == GONE else Failed("no longer exists")
    status = str(view.get("status", ""))
    host = str(view.get("host") or "")
    if target.status == GONE:
        return Pending()
    if _reached(target.status, status):
        if target.away_from and host in ("", target.away_from):
            why = str(view.get("reason") or "")
            return Failed(f"did not move: {why}") if status == "running" and why else Pending()
        return Done()
    reason = str(view.get("reason") or "")
    if status in _FATAL:
        return Failed(f"is {status}" + (f": {reason}" if reason else ""))
    if status == "deleting":
        return Failed("is being deleted")
    if status == "crashed" and target.status == "running" and view.get("restart") == "never":
        return Failed("crashed and its restart policy is never" + (f": {reason}" if reason else ""))
    return Pending()


def judge_resource(target: Target, view: View | None) -> Verdict:
    """The rule for images and networks: reach the status, or fail saying why."""
    if view is None:
        return Done() if target.status == GONE else Failed("no longer exists")
    status = str(view.get("status", ""))
    if status == target.status:
        return Done()
    if status == "failed":
        return Failed(f"failed: {view.get('reason') or 'no reason given'}")
    if status == "deleting" and target.status != GONE:
        return Failed("is being deleted")
    return Pending()


def progress(name: str, view: View | None, elapsed: float, *, first: bool = False) -> str:
    """The line printed when the status (or host, or reason) changes, with the time since
    the wait began: ``   0.0s  web: requested`` first, then ``  12.3s  scheduled on h1``."""
    what = step(view)
    if first:  # the first line names the resource
        what = f"{name}: {what}"
    return f"{elapsed:6.1f}s  {what}"


def step(view: View | None) -> str:
    """``scheduled on h1``, ``failed (no host has 64 CPUs free)``, ``gone``."""
    if view is None:
        return GONE
    text = str(view.get("status", ""))
    host = str(view.get("host") or "")
    reason = str(view.get("reason") or "")
    return text + (f" on {host}" if host else "") + (f" ({reason})" if reason else "")


def follow(
    fetch: Callable[[], View | None],
    target: Target,
    *,
    name: str,
    first: View | None,
    timeout: float,
    interval: float,
    report: Callable[[str], None],
    rule: Callable[[Target, View | None], Verdict] = judge,
    noun: str = "vm",
    steps: Callable[[], list[str]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> View | None:
    """Poll until ``rule`` says done; the last view (None when gone). WaitFailed otherwise
    (WaitTimedOut after ``timeout``).

    ``report`` gets one line per change of the view's step, with the elapsed time;
    ``steps`` (if given) is asked after each poll for further lines, e.g. the VM's new
    events during a migration. ``noun`` names the resource in messages and in the
    ``ucloud <noun> show`` hint.
    """
    began = clock()
    deadline = began + timeout
    seen: str | None = None
    view = first
    while True:
        status = GONE if view is None else str(view.get("status", ""))
        now = step(view)
        if now != seen:
            report(progress(name, view, clock() - began, first=seen is None))
            seen = now
        for line in steps() if steps is not None else ():
            report(f"{clock() - began:6.1f}s  {line}")
        verdict = rule(target, view)
        if isinstance(verdict, Done):
            return view
        if isinstance(verdict, Failed):
            raise WaitFailed(f"{noun} {name} {verdict.reason}")
        left = deadline - clock()
        if left <= 0:
            wanted = target.status + (f" away from {target.away_from}" if target.away_from else "")
            raise WaitTimedOut(
                f"gave up waiting for {noun} {name} to be {wanted} after {timeout:g}s "
                f"(last status: {status}); see `ucloud {noun} show {name}`"
            )
        sleep(min(interval, left))
        view = fetch()


def _reached(wanted: str, status: str) -> bool:
    if status == wanted:
        return True
    if wanted in CREATE_PATH and status in CREATE_PATH:
        return CREATE_PATH.index(status) >= CREATE_PATH.index(wanted)
    return False
