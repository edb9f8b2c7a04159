"""Files: upload (streamed to disk), list, show, delete; a user sees only their own.

``PUT /v1/files/{name}`` streams the body into a dot-named temporary file in the owner's
directory (``<files>/<owner>/``), hashing it on the way, and never holds it in memory. A
body over ``images.max_upload_bytes``, one shorter than its Content-Length, or a client
that goes away removes the temporary file: nothing is left behind. A whole upload is
renamed into place and recorded at once (``filescan.record_upload``), so the answer shows
the file; filescan, which records files copied in by other means, sees the same version
and appends nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from starlette.requests import ClientDisconnect

from ucloud.errors import InputError, NotFound, Refused
from ucloud.files import Version, file_path, record_deletion, record_upload
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, TooLarge, raw_list
from ucloud.gateway.schemas import FilePath
from ucloud.gateway.state import Gateway
from ucloud.ids import new_id
from ucloud.projections.mirror import Entry
from ucloud.projections.views import FileView

FLUSH_BYTES = 1 << 20


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror
    root = gw.config.paths.files
    limit = gw.config.images.max_upload_bytes
    locks: dict[tuple[str, str], asyncio.Lock] = {}

    def find(principal: Principal, ident: str) -> Entry[FileView]:
        entry = mirror.files.named(principal.name, ident)
        if entry is None:
            entry = mirror.files.get(ident)
            if entry is not None and not principal.sees(entry.view.owner):
                entry = None
        if entry is None:
            raise NotFound("name", f"no file {ident}")
        return entry

    async def upload(call: Call) -> Answer:
        owner, name = call.principal.name, call.params["name"]
        path = file_path(root, owner, name)
        declared = call.request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise InputError("Content-Length", "is not a number")
        if declared is not None and int(declared) > limit:
            raise TooLarge("body", f"the file is larger than the limit of {limit} bytes")
        await asyncio.to_thread(path.parent.mkdir, mode=0o750, parents=True, exist_ok=True)
        tmp = path.parent / f".upload-{new_id()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            size, sha256 = await _receive(call, fd, limit)
            if declared is not None and size != int(declared):
                raise InputError("body", f"ended after {size} of {declared} bytes")
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        lock = locks.setdefault((owner, name), asyncio.Lock())
        async with lock:
            try:
                await asyncio.to_thread(os.replace, tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise Refused("name", f"cannot store the file as {name}: {exc.strerror}") from exc
            mtime_ns = os.stat(path, follow_symlinks=False).st_mtime_ns
            seq = await record_upload(
                gw.log, owner, name, Version(size, sha256, mtime_ns), call.principal.name
            )
        if not lock.locked():
            locks.pop((owner, name), None)
        await gw.settled(seq)
        entry = mirror.files.named(owner, name)
        if entry is None:
            raise NotFound("name", f"file {name} was deleted meanwhile")
        return Answer(201, RawJson(entry.raw))

    async def list_files(call: Call) -> Answer:
        principal = call.principal
        entries = mirror.files.all() if principal.admin else mirror.files.of_owner(principal.name)
        return Answer(200, raw_list([e.raw for e in _sorted(entries)]))

    async def show(call: Call) -> Answer:
        return Answer(200, RawJson(find(call.principal, call.params["name"]).raw))

    async def delete(call: Call) -> Answer:
        principal, ident = call.principal, call.params["name"]
        try:
            view = find(principal, ident).view
            owner, name = view.owner, view.name
        except NotFound:
            owner, name = principal.name, ident
        path = file_path(root, owner, name)
        if not path.is_file() and mirror.files.named(owner, name) is None:
            raise NotFound("name", f"no file {ident}")
        file = _file_of(owner, name)
        making = [
            e.view.name for e in mirror.images.of_owner(owner)
            if e.view.status == "requested" and e.view.file == file
        ]
        if making:
            raise Refused("name", f"image {making[0]} is being made from it; try again later")
        await asyncio.to_thread(path.unlink, missing_ok=True)
        seq = await record_deletion(gw.log, owner, name, principal.name)
        await gw.settled(seq)
        return Answer(204)

    def _file_of(owner: str, name: str) -> str:
        entry = mirror.files.named(owner, name)
        return entry.view.id if entry is not None else ""

    return [
        Endpoint(
            "PUT", "/v1/files/{name}", upload,
            "Upload a file (the body is its bytes, streamed); replaces one of the same name",
            status=201, answer=FileView, errors=(400, 401, 409, 413), params=FilePath,
            raw_body="application/octet-stream",
        ),
        Endpoint("GET", "/v1/files", list_files, "Your files (admin: all)",
                 answer=list[FileView], errors=(401,)),
        Endpoint("GET", "/v1/files/{name}", show, "One file, by name or id", answer=FileView,
                 errors=(401, 404), params=FilePath),
        Endpoint("DELETE", "/v1/files/{name}", delete, "Delete a file", status=204,
                 errors=(400, 401, 404, 409), params=FilePath),
    ]


async def _receive(call: Call, fd: int, limit: int) -> tuple[int, str]:
    """Stream the body into ``fd``; (bytes, sha256). InputError when too large or cut."""
    digest = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    buffered = 0
    try:
        async for chunk in call.request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge("body", f"the file is larger than the limit of {limit} bytes")
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= FLUSH_BYTES:
                await asyncio.to_thread(_write, fd, pending, digest)
                pending, buffered = [], 0
    except ClientDisconnect as exc:
        raise InputError("body", "the upload was cut off") from exc
    await asyncio.to_thread(_write, fd, pending, digest)
    await asyncio.to_thread(os.fsync, fd)
    return size, digest.hexdigest()


def _write(fd: int, chunks: Iterable[bytes], digest: Any) -> None:
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _sorted(entries: Iterable[Entry[FileView]]) -> list[Entry[FileView]]:
    return sorted(entries, key=lambda e: (e.view.owner, e.view.name))
