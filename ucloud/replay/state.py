"""The cloud as the log says it was at a time: the projection folded in memory up to T.

Theory of operation. ``StateAt(t)`` folds events in stream order with the projector's
own rules (``ucloud.projections.apply.changes``) over a dict, from nothing: the state at
``t`` is the fold of every event from sequence 1 up to the *last* one whose ``at`` is at
or before ``t``. An event's ``at`` is taken on its appender's clock, so a later event may
carry an earlier time; events past ``t`` wait in ``pending`` and join the fold when an
event at or before ``t`` follows them, and are dropped at the end.

``StateDiff(t1, t2)`` folds to both times at once and keeps, for each key, the events
the fold to ``t2`` applied past the fold to ``t1`` that changed it: ``differences`` lists
the keys of VMs, hosts and networks whose values differ, each with those events (who
changed it, when). Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ucloud.events import Event
from ucloud.projections.apply import changes
from ucloud.projections.views import HostView, NetView, Value, VmView

SHOWN = ("vm/", "host/", "net/")  # the views a state shows; indexes and the rest are not


class StateAt:
    """The views at ``at``, folded by feeding the log in stream order."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.state: dict[str, Value] = {}
        self.last_seq = 0  # the last sequence folded
        self.pending: list[tuple[int, Event]] = []

    def feed(self, seq: int, event: Event) -> list[tuple[int, Event, list[str]]]:
        """Fold ``event`` (when it belongs before ``at``); what was applied, with the keys
        each changed."""
        if event.at > self.at:
            self.pending.append((seq, event))
            return []
        applied = [*self.pending, (seq, event)]
        self.pending = []
        return [(s, e, self._apply(s, e)) for s, e in applied]

    def _apply(self, seq: int, event: Event) -> list[str]:
        keys = []
        for key, value in changes(self.state, event):
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
            keys.append(key)
        self.last_seq = seq
        return keys

    def views(self) -> dict[str, Any]:
        """VMs, hosts and networks as plain data, in the shape of the gateway's views."""
        return {
            "at": self.at.isoformat(),
            "sequence": self.last_seq,
            "vms": _of(self.state, VmView),
            "hosts": _of(self.state, HostView),
            "networks": _of(self.state, NetView),
        }


def _of(state: dict[str, Value], cls: type[Any]) -> list[dict[str, Any]]:
    found = [v for k, v in sorted(state.items()) if k.startswith(SHOWN) and isinstance(v, cls)]
    return [msgspec.to_builtins(v) for v in found]


@dataclass(frozen=True)
class Change:
    """One event that changed a key between the two times (its actor: ``event.actor``)."""

    seq: int
    event: Event


@dataclass(frozen=True)
class Difference:
    key: str
    before: Any  # plain data, None when the key did not exist
    after: Any
    by: list[Change] = field(default_factory=list)


class StateDiff:
    """What changed between ``since`` and ``until`` (``since`` before ``until``)."""

    def __init__(self, since: datetime, until: datetime) -> None:
        self.before = StateAt(since)
        self.after = StateAt(until)
        self._by: dict[str, list[tuple[int, Event]]] = {}

    def feed(self, seq: int, event: Event) -> None:
        self.before.feed(seq, event)
        for applied, e, keys in self.after.feed(seq, event):
            for key in keys:
                if key.startswith(SHOWN):
                    self._by.setdefault(key, []).append((applied, e))

    def differences(self) -> list[Difference]:
        out = []
        keys = {k for k in (*self.before.state, *self.after.state) if k.startswith(SHOWN)}
        for key in sorted(keys):
            before, after = self.before.state.get(key), self.after.state.get(key)
            if before == after:
                continue
            by = [
                Change(seq, e) for seq, e in self._by.get(key, []) if seq > self.before.last_seq
            ]
            out.append(Difference(key, _plain(before), _plain(after), by))
        return out


def _plain(value: Value | None) -> Any:
    return None if value is None else msgspec.to_builtins(value)
