"""The file aggregate: where users' files live, and what is recorded of them.

The file of ``(owner, name)`` lives at ``<files>/<owner>/<name>`` and is the aggregate
``file.<file_id(owner, name)>``. What is recorded is decided from the aggregate alone
(``upload_events``, ``deletion_events``): a version is its size and sha256, and an upload
is appended only when it differs from the last one recorded (or the file was deleted
since). ``record`` appends expecting the aggregate's last sequence, so the gateway (which
records its own uploads at once) and any number of scanners (``handlers/filescan.py``)
record each version once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ucloud.errors import ConflictError, InputError, LogError
from ucloud.eventlog import EventLog
from ucloud.events import Event, FileDeleted, FileUploaded
from ucloud.events.base import valid_token
from ucloud.ids import derive_id, new_id
from ucloud.images.validate import check_file_name

_RETRIES = 8


def file_id(owner: str, name: str) -> str:
    """The id of the file aggregate of ``(owner, name)``: the same for every version."""
    return derive_id("file", f"{owner}/{name}")


def owner_dir(root: Path, owner: str) -> Path:
    if not valid_token(owner):
        raise InputError("owner", f"{owner!r} is not a user name")
    return root / owner


def file_path(root: Path, owner: str, name: str, field: str = "name") -> Path:
    """``<root>/<owner>/<name>``, checked to stay inside the owner's directory."""
    check_file_name(name, field)
    directory = owner_dir(root, owner)
    if directory.is_symlink():
        raise InputError("owner", f"the files directory of {owner} is a symlink; refused")
    path = directory / name
    if path.parent != directory or path.name != name or root not in path.parents:
        raise InputError(field, "the name leaves the owner's directory")
    return path


@dataclass(frozen=True, slots=True)
class Version:
    size: int
    sha256: str
    mtime_ns: int


def last_upload(history: Sequence[Event]) -> FileUploaded | None:
    """The upload in effect: the last one, unless a deletion came after it."""
    for event in reversed(history):
        if isinstance(event, FileUploaded):
            return event
        if isinstance(event, FileDeleted):
            return None
    return None


def upload_events(
    history: Sequence[Event], owner: str, name: str, version: Version, envelope: dict[str, Any]
) -> list[Event]:
    current = last_upload(history)
    if current is not None and (current.size, current.sha256) == (version.size, version.sha256):
        return []
    return [
        FileUploaded(
            **envelope, file=file_id(owner, name), owner=owner, name=name, size=version.size,
            sha256=version.sha256, mtime_ns=version.mtime_ns,
        )
    ]


def deletion_events(
    history: Sequence[Event], owner: str, name: str, envelope: dict[str, Any]
) -> list[Event]:
    if last_upload(history) is None:
        return []
    return [FileDeleted(**envelope, file=file_id(owner, name))]


def envelope(actor: str, at: datetime | None = None) -> dict[str, Any]:
    """The envelope of a fact observed on disk: its own cause."""
    ident = new_id()
    when = at or datetime.now(UTC)
    return {"id": ident, "at": when, "actor": actor, "causation": ident, "correlation": ident}


Decide = Callable[[Sequence[Event]], list[Event]]


async def record(log_: EventLog, file: str, decide: Decide) -> int:
    """Append what ``decide`` says of the aggregate, expecting its last sequence; returns the
    sequence appended, or the aggregate's last one when there was nothing to append."""
    for _ in range(_RETRIES):
        stored, last = await log_.load("file", file)
        events = decide([s.event for s in stored])
        if not events:
            return last
        try:
            seq = last
            for event in events:
                seq = await log_.append(event, expected=seq)
            return seq
        except ConflictError:
            continue
    raise LogError(f"file {file}: kept changing while being recorded")


async def record_upload(log_: EventLog, owner: str, name: str, version: Version, actor: str) -> int:
    return await record(
        log_, file_id(owner, name),
        lambda history: upload_events(history, owner, name, version, envelope(actor)),
    )


async def record_deletion(log_: EventLog, owner: str, name: str, actor: str) -> int:
    return await record(
        log_, file_id(owner, name),
        lambda history: deletion_events(history, owner, name, envelope(actor)),
    )
