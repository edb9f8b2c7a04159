"""``open_store``: the image store a ``StoreKind`` names, as the configuration sets it up.

The one place that knows both stores; neither store module imports the other.
"""

from __future__ import annotations

from ucloud.config import Config
from ucloud.errors import InputError
from ucloud.images.base import ImageStore
from ucloud.images.rbd_store import RbdStore
from ucloud.images.store import FsStore


def open_store(config: Config, kind: str) -> ImageStore:
    """The store named ``kind`` ("fs" or "rbd") as ``config`` sets it up."""
    if kind == "fs":
        return FsStore(config.paths.images, config.paths.disks)
    if kind == "rbd":
        return RbdStore.from_config(config)
    raise InputError("store", f"no image store {kind!r}; use fs or rbd")
