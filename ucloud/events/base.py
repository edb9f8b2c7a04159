"""The event envelope, subjects, and the envelope of a reaction.

Every event is a frozen msgspec Struct tagged ``"<aggregate>.<event>"`` (an explicit
string, never the class name) and carries the envelope: ``id`` (UUIDv7), ``at`` (UTC),
``actor`` (user name or ``system:<service>``), ``causation`` (the id of the event or
request that caused it) and ``correlation`` (the id of the user request that started the
chain). Its subject is ``ucloud.evt.<aggregate>.<id>.<event>``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

import msgspec

from ucloud.errors import InputError
from ucloud.ids import derive_id

SUBJECT_ROOT = "ucloud.evt"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    at: datetime
    actor: str
    causation: str = ""
    correlation: str = ""

    aggregate: ClassVar[str] = ""

    @property
    def aggregate_id(self) -> str:
        value: str = getattr(self, self.aggregate)
        return value

    @property
    def event_name(self) -> str:
        """The event name: the tag after the aggregate, e.g. ``requested``."""
        return self.tag().split(".", 1)[1]

    @classmethod
    def tag(cls) -> str:
        tag: str = cls.__struct_config__.tag  # type: ignore[assignment]
        return tag

    @property
    def subject(self) -> str:
        return subject(self.aggregate, self.aggregate_id, self.event_name)


def subject(aggregate: str, aggregate_id: str = "*", event: str = "*") -> str:
    """``ucloud.evt.<aggregate>.<id>.<event>``; ``*`` and ``>`` are allowed as wildcards."""
    for part in (aggregate, aggregate_id, event):
        if part not in ("*", ">") and not _TOKEN.match(part):
            raise InputError("id", f"{part!r} is not a valid subject token")
    if event == ">":
        return f"{SUBJECT_ROOT}.{aggregate}.{aggregate_id}.>"
    return f"{SUBJECT_ROOT}.{aggregate}.{aggregate_id}.{event}"


def parse_subject(value: str) -> tuple[str, str, str]:
    """(aggregate, id, event) of a stream subject."""
    parts = value.split(".")
    if len(parts) != 5 or ".".join(parts[:2]) != SUBJECT_ROOT:
        raise ValueError(f"not an event subject: {value}")
    return parts[2], parts[3], parts[4]


def valid_token(value: str) -> bool:
    return bool(_TOKEN.match(value))


class Cause(msgspec.Struct, frozen=True, kw_only=True):
    """Who acts, at what time, and because of what: the envelope of what a step appends."""

    actor: str
    at: datetime
    causation: str
    correlation: str

    @classmethod
    def of(cls, event: Event, actor: str, at: datetime) -> Cause:
        """The envelope of a reaction to ``event`` (correlation carried along)."""
        return cls(
            actor=actor,
            at=at,
            causation=event.id,
            correlation=event.correlation or event.id,
        )

    def envelope(self, purpose: str) -> dict[str, Any]:
        """Keyword arguments for an event whose id is derived from the cause and purpose."""
        return {
            "id": derive_id(self.causation, purpose),
            "at": self.at,
            "actor": self.actor,
            "causation": self.causation,
            "correlation": self.correlation,
        }
