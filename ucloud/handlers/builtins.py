"""builtins: the built-in images (``tiny``, ``debian-12``) as public images of admin.

Theory of operation. For each name in ``images.builtin``, in order: the image is the
aggregate ``builtin_image_id(name)``; when it holds a request not deleted since, or admin
has another image of that name, there is nothing to do. Otherwise the image is built
(``ucloud image build <recipe> --cache-dir <data_dir>/images/builtin`` as a child process
in its own process group: cached builds return at once, a fresh ``debian`` takes minutes;
its progress lines are logged, and it is terminated when the service stops). The qcow2 is
put into admin's files as ``<name>.qcow2`` (a hard link, else a copy; renamed into place),
that upload is recorded, and ``image.requested`` (public, owner admin) is appended
expecting the aggregate's last sequence. From there imagescan validates and converts it
like any other upload. A failed build is logged and tried again only when the service
restarts. Then the service idles: it runs in the background of ``ucloud up``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from ucloud.errors import ConflictError, ImageBuildError, InputError
from ucloud.events import Event, ImageDeleted, ImageRequested
from ucloud.files import Version, envelope, file_id, file_path, record_upload
from ucloud.ids import derive_id, new_id
from ucloud.imagebuild.child import build_in_child
from ucloud.images.validate import sha256_of
from ucloud.projections.views import name_key
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:builtins"
ADMIN = "admin"
RECIPES = {"tiny": "tiny", "debian-12": "debian"}  # image name -> recipe of the builder

Build = Callable[[str, Path], Awaitable[Path]]


def builtin_image_id(name: str) -> str:
    return derive_id("builtin-image", name)


def needs_request(history: Sequence[Event]) -> bool:
    """Whether the built-in image's aggregate has no request standing (none, or deleted)."""
    for event in reversed(history):
        if isinstance(event, ImageDeleted):
            return True
        if isinstance(event, ImageRequested):
            return False
    return True


def place(built: Path, target: Path) -> Version:
    """Put the built image at ``target`` (atomically); its recorded version."""
    target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    tmp = target.parent / f".builtin-{new_id()}"
    try:
        try:
            os.link(built, tmp)
        except OSError:
            shutil.copyfile(built, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    st = os.stat(target, follow_symlinks=False)
    return Version(st.st_size, sha256_of(target), st.st_mtime_ns)


async def register_builtin(ctx: ServiceContext, name: str, build: Build = build_in_child) -> bool:
    """Build and request the built-in image ``name`` unless it is there; whether it asked."""
    image = builtin_image_id(name)
    stored, last = await ctx.log.load("image", image)
    if not needs_request([s.event for s in stored]):
        log.info("built-in image %s: registered already", name)
        return False
    holder = await ctx.store.get(ctx.config.etcd.prefix + name_key(ADMIN, "image", name))
    if holder is not None and holder.decode() != image:
        log.warning("built-in image %s: admin has another image of that name; left alone", name)
        return False
    log.info("built-in image %s: building (cached builds are quick)", name)
    built = await build(RECIPES[name], ctx.config.paths.builtin_images)
    target = file_path(ctx.config.paths.files, ADMIN, f"{name}.qcow2")
    version = await asyncio.to_thread(place, built, target)
    await record_upload(ctx.log, ADMIN, target.name, version, ACTOR)
    request = ImageRequested(
        **envelope(ACTOR), image=image, owner=ADMIN, name=name,
        file=file_id(ADMIN, target.name), file_name=target.name, file_sha256=version.sha256,
        store="fs", public=True,
    )
    try:
        await ctx.log.append(request, expected=last)
    except ConflictError:
        log.info("built-in image %s: registered meanwhile", name)
        return False
    log.info("built-in image %s: requested as image %s", name, image)
    return True


async def run(ctx: ServiceContext) -> None:
    """The ``builtins`` service: registers the configured built-in images, then idles."""
    for name in ctx.config.images.builtin:
        try:
            await register_builtin(ctx, name)
        except (ImageBuildError, InputError, OSError) as exc:
            log.error("built-in image %s not registered: %s", name, exc)
    await asyncio.Event().wait()
