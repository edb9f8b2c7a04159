"""filescan: the files directory as facts, ``file.<id>.uploaded`` once per file version.

Theory of operation. Users' files live in ``<files>/<owner>/<name>``; they arrive by
``PUT /v1/files/{name}`` or by any other means (copied in by an operator). The file of
``(owner, name)`` is the aggregate ``file.<file_id(owner, name)>``.

What is recorded is decided from the aggregate alone (``upload_events``,
``deletion_events``): a version is its size and sha256, and an upload is appended only
when it differs from the last one recorded (or the file was deleted since). Appends
expect the aggregate's last sequence, so the gateway (which records its own uploads at
once, for read-your-writes) and any number of scanners record each version once.

The scanner looks every ``scan_interval_s``. A file counts as complete once two looks in
a row saw the same size, mtime and inode and it has not changed for ``settle_s``; a file
still being copied in is left for later. A file whose size and mtime match the last
recorded upload is not read again; otherwise it is hashed, and recorded unless it changed
while being hashed. Files that disappear while the scanner watches are recorded as
deleted (a file removed while no scanner ran stays listed until it is deleted through
the API or uploaded again). Names that are not valid file names, dot files (uploads in
progress), symlinks and anything but regular files are never recorded. Temporary files of
uploads whose writer died (untouched for an hour) are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import FileDeleted, FileUploaded, subject
from ucloud.events.base import valid_token
from ucloud.files import Version, file_id, last_upload, record_deletion, record_upload
from ucloud.images.validate import CHUNK, check_file_name
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:filescan"
TEMPORARY = (".upload-", ".builtin-")  # files being written into place, never recorded
STALE_NS = 3600 * 10**9
SWEEP_NS = 60 * 10**9

Key = tuple[str, str]  # (owner, name)


# --- looking at the directory -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    size: int
    mtime_ns: int
    inode: int


def complete(before: Seen | None, now: Seen, now_ns: int, settle_ns: int) -> bool:
    """Whether a file seen as ``now`` (and ``before`` at the previous look) is whole."""
    return before == now and now_ns - now.mtime_ns >= settle_ns


def observe(root: Path) -> dict[Key, Seen]:
    """The regular files under ``root/<owner>/`` with valid names."""
    found: dict[Key, Seen] = {}
    if not root.is_dir():
        return found
    with os.scandir(root) as owners:
        for owner in owners:
            if not owner.is_dir(follow_symlinks=False) or not valid_token(owner.name):
                continue
            with os.scandir(owner.path) as files:
                for entry in files:
                    if not _recordable(entry):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    found[(owner.name, entry.name)] = Seen(st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def stale_temporaries(root: Path, now_ns: int, max_age_ns: int = STALE_NS) -> list[Path]:
    """Dot files of uploads that were cut without cleaning up (the writer died), untouched
    for ``max_age_ns``: an upload in progress keeps writing, so its mtime stays fresh."""
    stale: list[Path] = []
    if not root.is_dir():
        return stale
    for owner in root.iterdir():
        if owner.is_symlink() or not owner.is_dir() or not valid_token(owner.name):
            continue
        for path in owner.iterdir():
            if not path.name.startswith(TEMPORARY) or path.is_symlink() or not path.is_file():
                continue
            if now_ns - path.stat().st_mtime_ns > max_age_ns:
                stale.append(path)
    return stale


def _recordable(entry: os.DirEntry[str]) -> bool:
    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
        return False
    try:
        check_file_name(entry.name)
    except InputError:
        return False
    return True


def hash_file(path: Path, seen: Seen) -> Version | None:
    """The version of the file, or None if it is not the one ``seen`` (it changed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if _seen(os.fstat(fd)) != seen:
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
        if _seen(os.fstat(fd)) != seen:
            return None
    finally:
        os.close(fd)
    return Version(seen.size, digest.hexdigest(), seen.mtime_ns)


def _seen(st: os.stat_result) -> Seen:
    return Seen(st.st_size, st.st_mtime_ns, st.st_ino)


class FileScanner:
    """Records what it finds in the files directory; ``scan`` is one look."""

    def __init__(
        self, log_: EventLog, root: Path, settle_s: float,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.log = log_
        self.root = root
        self.settle_ns = int(settle_s * 1e9)
        self.clock = clock
        self.recorded: dict[Key, tuple[int, int]] = {}  # (size, mtime_ns) in the log
        self.pending: dict[Key, Seen] = {}
        self.watched: set[Key] = set()  # seen on disk since this scanner started
        self.swept_ns = 0

    async def load(self) -> None:
        """What the log records as present now, from its file events."""
        records = await self.log.records(subject("file", "*", "*"))
        by_file: dict[str, Key] = {}
        for record in records:
            try:
                event = record.event()
            except Exception:  # noqa: BLE001 - an undecodable event records nothing here
                continue
            if isinstance(event, FileUploaded):
                by_file[event.file] = (event.owner, event.name)
                self.recorded[(event.owner, event.name)] = (event.size, event.mtime_ns)
            elif isinstance(event, FileDeleted) and event.file in by_file:
                self.recorded.pop(by_file.pop(event.file), None)

    async def scan(self) -> None:
        now_ns = self.clock()
        found = await asyncio.to_thread(observe, self.root)
        for key, seen in sorted(found.items()):
            if self.recorded.get(key) == (seen.size, seen.mtime_ns):
                self.pending.pop(key, None)
                continue
            before, self.pending[key] = self.pending.get(key), seen
            if complete(before, seen, now_ns, self.settle_ns):
                await self._record(key, seen)
        for key in sorted(self.watched - set(found)):
            self.pending.pop(key, None)
            if self.recorded.pop(key, None) is not None:
                await record_deletion(self.log, *key, ACTOR)
                log.info("file %s/%s: deleted", *key)
        self.watched = set(found)
        if now_ns - self.swept_ns >= SWEEP_NS:
            self.swept_ns = now_ns
            for path in await asyncio.to_thread(stale_temporaries, self.root, now_ns):
                path.unlink(missing_ok=True)
                log.warning("removed %s: an upload left unfinished", path)

    async def _record(self, key: Key, seen: Seen) -> None:
        owner, name = key
        stored, _ = await self.log.load("file", file_id(owner, name))
        current = last_upload([s.event for s in stored])
        if current is not None and (current.size, current.mtime_ns) == (seen.size, seen.mtime_ns):
            self.recorded[key] = (seen.size, seen.mtime_ns)  # recorded by whoever wrote it
            self.pending.pop(key, None)
            return
        version = await asyncio.to_thread(hash_file, self.root / owner / name, seen)
        if version is None:
            return  # it changed meanwhile: look again
        await record_upload(self.log, owner, name, version, ACTOR)
        self.recorded[key] = (seen.size, seen.mtime_ns)
        self.pending.pop(key, None)
        log.info("file %s/%s: %d bytes, sha256 %s", owner, name, version.size, version.sha256)


async def run(ctx: ServiceContext) -> None:
    """The ``filescan`` service: looks at the files directory until cancelled."""
    settings = ctx.config.images
    root = ctx.config.paths.files
    root.mkdir(parents=True, exist_ok=True)
    scanner = FileScanner(ctx.log, root, settings.settle_s)
    await scanner.load()
    log.info("filescan: watching %s", root)
    while True:
        await scanner.scan()
        await asyncio.sleep(settings.scan_interval_s)
