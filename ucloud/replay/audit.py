"""The audit trail: who did what to which resource, when, and because of which request.

Theory of operation: every event becomes one ``AuditLine`` with its time, actor,
correlation (the user request that started the chain: a ``vm.requested`` and the
``vm.scheduled``, ``vm.started``, ``vm.crashed`` and restart it caused share it) and a
one-line summary of the change (the event's fields that differ from their defaults).

A resource's owner is learned from the event that created it (any event with an
``owner`` field: ``vm.requested``, ``net.requested``, ``image.requested``,
``file.uploaded``, ``order.placed``); a user owns the ``user`` aggregate of their name.
Host and pool events belong to no owner. A VM's audit is exactly the events of its
``vm`` aggregate, in log order.

Who was on a VM's console: every opening of its serial or VNC console is a
``vm.console_opened`` (``kind=serial|vnc``) whose actor is the user who opened it, so
``events={"vm.console_opened"}`` with ``vm=X`` lists exactly those (``ucloud replay audit
--vm X --event vm.console_opened``).

The fold is pure (events in, lines out); ``audit_vm`` is its one I/O shell for readers
of a single VM (``GET /v1/vms/{id}/events``, ``ucloud vm events``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from ucloud.errors import NotFound
from ucloud.eventlog import EventLog
from ucloud.events import Event, Resources, subject

_ENVELOPE = frozenset({"id", "at", "actor", "causation", "correlation"})
_MAX_VALUE = 80
_REQUIRED = object()  # compares unequal to every value
_NEEDS_QUOTES = re.compile(r"^$|\s")


class AuditLine(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    # gc=False: lines hold only strings, ints and times (no cycles), and an audit of a
    # large log keeps millions of them, which the cycle collector would walk again and again.
    seq: int
    at: datetime
    actor: str
    correlation: str
    causation: str
    event_id: str
    event: str  # the tag, e.g. "vm.started"
    aggregate: str
    id: str  # the aggregate's id
    owner: str  # "" when the resource belongs to no user (hosts, pools) or is unknown
    summary: str


class AuditFold:
    """Folds ``(seq, event)`` in log order into the lines that pass the filters."""

    def __init__(
        self,
        *,
        vm: str | None = None,
        owner: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        events: frozenset[str] | None = None,
    ) -> None:
        self.vm = vm
        self.events = events
        self.owner = owner
        self.since = since
        self.until = until
        self.owners: dict[tuple[str, str], str] = {}
        self.lines: list[AuditLine] = []

    def apply(self, seq: int, event: Event) -> None:
        aggregate, aggregate_id = event.aggregate, event.aggregate_id
        key = (aggregate, aggregate_id)
        owner = self.owners.get(key)
        if owner is None:
            owner = _owner_of(event)
            if owner:
                self.owners[key] = owner
        if self.vm is not None and (aggregate != "vm" or aggregate_id != self.vm):
            return
        if self.owner is not None and owner != self.owner:
            return
        if self.events is not None and event.tag() not in self.events:
            return
        if (self.since is not None and event.at < self.since) or (
            self.until is not None and event.at >= self.until
        ):
            return
        self.lines.append(
            AuditLine(
                seq=seq,
                at=event.at,
                actor=event.actor,
                correlation=event.correlation or event.id,
                causation=event.causation,
                event_id=event.id,
                event=event.tag(),
                aggregate=aggregate,
                id=aggregate_id,
                owner=owner,
                summary=summarize(event),
            )
        )


def audit(
    stored: Iterable[tuple[int, Event]],
    *,
    vm: str | None = None,
    owner: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    events: frozenset[str] | None = None,
) -> list[AuditLine]:
    """The audit lines of ``(seq, event)`` pairs in log order, filtered."""
    fold = AuditFold(vm=vm, owner=owner, since=since, until=until, events=events)
    for seq, event in stored:
        fold.apply(seq, event)
    return fold.lines


async def audit_vm(log: EventLog, vm_id: str, *, owner: str | None = None) -> list[AuditLine]:
    """The events of one VM, in order. With ``owner``, only when the VM is theirs.

    NotFound when the VM has no events, or is not ``owner``'s (an owner cannot tell the
    two apart); InputError when ``vm_id`` is not a valid id.
    """
    subject("vm", vm_id)  # InputError for ids that are not subject tokens
    events, _ = await log.load("vm", vm_id)
    lines = audit(((s.seq, s.event) for s in events), vm=vm_id)
    if not lines or (owner is not None and lines[0].owner != owner):
        raise NotFound("vm", f"no VM {vm_id}")
    return lines


def summarize(event: Event) -> str:
    """One line: the event name and its fields that differ from their defaults."""
    parts = [event.event_name]
    for name, default in _summarized_fields(type(event)):
        value = getattr(event, name)
        if value != default:
            parts.append(f"{name}={_render(value)}")
    return " ".join(parts)


@functools.cache
def _summarized_fields(cls: type[Event]) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the fields a summary shows; ``_REQUIRED`` when there is none."""
    out = []
    for field in msgspec.structs.fields(cls):
        if field.name in _ENVELOPE or field.name == cls.aggregate:
            continue
        if field.default is not msgspec.NODEFAULT:
            default = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        else:
            default = _REQUIRED
        out.append((field.name, default))
    return tuple(out)


def _owner_of(event: Event) -> str:
    if event.aggregate == "user":
        return event.aggregate_id
    owner = getattr(event, "owner", "")
    return owner if isinstance(owner, str) else ""


def _render(value: Any) -> str:
    if type(value) is str:
        return _text(value)
    if isinstance(value, Resources):
        text = f"{value.cpu}cpu/{value.ram_mib}MiB-ram/{value.ssd_mib}MiB-ssd"
        return text + (f"/{value.hdd_mib}MiB-hdd" if value.hdd_mib else "")
    if isinstance(value, tuple):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, msgspec.Struct):
        return "/".join(_render(getattr(value, f)) for f in value.__struct_fields__)
    if isinstance(value, datetime):
        return value.isoformat()
    return _text(str(value))


def _text(text: str) -> str:
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 1] + "…"
    return repr(text) if _NEEDS_QUOTES.search(text) else text
