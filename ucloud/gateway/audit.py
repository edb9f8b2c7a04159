"""One audit line per event: who did what, when, and in which chain of causes."""

from __future__ import annotations

from typing import Any

import msgspec

from ucloud.events import Event
from ucloud.gateway.schemas import AuditLine

_EMPTY: tuple[object, ...] = ("", (), [], {}, None)
_ENVELOPE = frozenset({"id", "at", "actor", "causation", "correlation", "type"})


def line(seq: int, event: Event) -> AuditLine:
    return AuditLine(
        seq=seq,
        at=event.at,
        actor=event.actor,
        type=event.tag(),
        correlation=event.correlation,
        causation=event.causation,
        summary=summary(event),
    )


def summary(event: Event) -> str:
    """The event's own fields (not the envelope, not its aggregate id), as ``k=v``."""
    fields: dict[str, Any] = msgspec.to_builtins(event)
    skip = _ENVELOPE | {event.aggregate}
    parts = [
        f"{k}={_text(v)}" for k, v in fields.items() if k not in skip and v not in _EMPTY
    ]
    return " ".join(parts) if parts else event.event_name.replace("_", " ")


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)
