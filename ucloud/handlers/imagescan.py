"""imagescan: makes requested images, or says why not; deletes them from their store.

Theory of operation. A durable consumer (``imagescan``) of ``image.*.requested`` and
``image.*.delete_requested``. For a request whose aggregate has no outcome yet:

1. the owner's file (``<files>/<owner>/<file_name>``, opened without following symlinks,
   a regular file only) is copied to a private work file under ``<images>/.work``, hashed
   on the way; when the request names the content it was made for (``file_sha256``), a
   file changed since is refused. The user's file is never read again.
2. ``validate.inspect`` decides the format from the magic bytes and refuses backing files,
   external data files, encryption, corruption and virtual sizes over the limit.
3. qcow2 is converted to raw in the work directory; the sha256 of the raw content is the
   image's checksum. The store imports the raw file (atomically).
4. ``image.created {size, checksum}``, or ``image.failed {reason}`` for any refusal; work
   files are removed whatever happened, so a refused image leaves nothing behind.

For a delete request the store drops the image (refused while clones of it exist: the
image is then ``failed`` with that reason) and ``image.deleted`` follows. Outcomes are
appended expecting the image's last sequence, with ids derived from the cause, so a
redelivered request appends nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ucloud.config import Config
from ucloud.consumer import run_consumer
from ucloud.errors import ConflictError, InputError, LogError, Refused, UcloudError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    ImageCreated,
    ImageDeleted,
    ImageDeleteRequested,
    ImageFailed,
    ImageRequested,
    subject,
)
from ucloud.files import file_id, file_path, last_upload
from ucloud.images.base import ImageStore
from ucloud.images.open import open_store
from ucloud.images.validate import GIB, convert_to_raw, copy_into, inspect, sha256_of
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:imagescan"
DURABLE = "imagescan"
SUBJECTS = (subject("image", "*", "requested"), subject("image", "*", "delete_requested"))
WORK = ".work"
_RETRIES = 8
_DONE = (ImageCreated, ImageFailed, ImageDeleted, ImageDeleteRequested)


def work_dir(config: Config) -> Path:
    return config.paths.images / WORK


def produce(
    config: Config, request: ImageRequested, name: str, store: ImageStore
) -> tuple[int, str]:
    """Validate the owner's file ``name`` and import it as raw; (size, sha256 of the raw)."""
    source = file_path(config.paths.files, request.owner, name, "file")
    work = work_dir(config)
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy, raw = work / f"{request.image}.src", work / f"{request.image}.raw"
    for leftover in (copy, raw):
        leftover.unlink(missing_ok=True)
    try:
        digest = hashlib.sha256()
        _copy_regular(source, copy, digest)
        if request.file_sha256 and digest.hexdigest() != request.file_sha256:
            raise InputError("file", "changed after the image was requested; request it again")
        found = inspect(copy, name, config.images.max_virtual_size_gib * GIB)
        if found.format == "qcow2":
            convert_to_raw(copy, "qcow2", raw)
            copy.unlink()
            checksum, final = sha256_of(raw), raw
        else:
            checksum, final = digest.hexdigest(), copy
        return store.import_raw(request.image, final), checksum
    finally:
        for path in (copy, raw):
            path.unlink(missing_ok=True)


def _copy_regular(source: Path, target: Path, digest: hashlib._Hash) -> None:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise InputError("file", "is gone from your files") from exc
    except OSError as exc:
        raise InputError("file", f"cannot be read ({exc.strerror}); symlinks are refused") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError("file", "is not a regular file")
        copy_into(fd, target, digest)
    finally:
        os.close(fd)


def decided(history: Sequence[Event]) -> bool:
    return any(isinstance(e, _DONE) for e in history)


class ImageScan:
    """The handler: ``handle`` is given to the consumer runner."""

    def __init__(
        self, log_: EventLog, config: Config,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log_
        self.config = config
        self.clock = clock

    async def handle(self, event: Event, seq: int, delivered: int) -> None:
        if isinstance(event, ImageRequested):
            await self.create(event)
        elif isinstance(event, ImageDeleteRequested):
            await self.delete(event)

    async def create(self, request: ImageRequested) -> None:
        stored, _ = await self.log.load("image", request.image)
        if decided([s.event for s in stored]):
            return
        outcome: Event
        try:
            name = request.file_name or await self._file_name(request)
            store = open_store(self.config, request.store)
            size, checksum = await asyncio.to_thread(produce, self.config, request, name, store)
            outcome = ImageCreated(
                **self._cause(request).envelope("created"), image=request.image, size=size,
                checksum=checksum,
            )
            log.info("image %s (%s): created, %d bytes", request.image, request.name, size)
        except InputError as exc:
            outcome = self._failed(request, f"{request.file_name or 'file'}: {exc.reason}")
        except (UcloudError, OSError) as exc:
            outcome = self._failed(request, str(exc))
        await self._append(request.image, outcome, lambda history: not decided(history))

    def _cause(self, event: Event) -> Cause:
        return Cause.of(event, ACTOR, self.clock())  # at: when the outcome is known

    def _failed(self, request: ImageRequested, reason: str) -> ImageFailed:
        log.info("image %s (%s): refused: %s", request.image, request.name, reason)
        return ImageFailed(
            **self._cause(request).envelope("failed"), image=request.image, reason=reason
        )

    async def _file_name(self, request: ImageRequested) -> str:
        """The file's name from its aggregate, for requests that name only its id."""
        stored, _ = await self.log.load("file", request.file)
        current = last_upload([s.event for s in stored])
        if current is None or current.owner != request.owner:
            raise InputError("file", f"no file {request.file} of {request.owner}")
        if current.file != file_id(current.owner, current.name):
            raise InputError("file", f"file {request.file} is not in the files directory")
        return current.name

    async def delete(self, event: ImageDeleteRequested) -> None:
        stored, _ = await self.log.load("image", event.image)
        history = [s.event for s in stored]
        request = next((e for e in history if isinstance(e, ImageRequested)), None)
        if request is None or any(isinstance(e, ImageDeleted) for e in history):
            return
        outcome: Event
        try:
            store = open_store(self.config, request.store)
            await asyncio.to_thread(store.delete_image, event.image)
            outcome = ImageDeleted(**self._cause(event).envelope("deleted"), image=event.image)
        except Refused as exc:
            outcome = ImageFailed(
                **self._cause(event).envelope("delete_failed"), image=event.image,
                reason=f"not deleted: {exc.reason}",
            )
        await self._append(
            event.image, outcome, lambda history: all(e.id != outcome.id for e in history)
        )

    async def _append(
        self, image: str, outcome: Event, still: Callable[[list[Event]], bool]
    ) -> None:
        """Append ``outcome`` expecting the image's last sequence, while ``still`` holds."""
        for _ in range(_RETRIES):
            stored, last = await self.log.load("image", image)
            if not still([s.event for s in stored]):
                return
            try:
                await self.log.append(outcome, expected=last)
                return
            except ConflictError:
                continue
        raise LogError(f"image {image}: kept changing while its outcome was appended")


async def run(ctx: ServiceContext) -> None:
    """The ``imagescan`` service: a consumer of image requests and delete requests."""
    scan = ImageScan(ctx.log, ctx.config)
    await run_consumer(
        ctx.log, ctx.store, durable=DURABLE, subjects=SUBJECTS, handle=scan.handle,
        settings=ctx.config.consumer, poison_prefix=f"{ctx.config.etcd.prefix}_poison/",
        name=ctx.name,
    )
