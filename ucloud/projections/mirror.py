"""In-memory copies of etcd prefixes, kept current by a watch.

``Watched`` loads the keys under a prefix once, then follows a watch from the revision it
loaded at; if the watch breaks (etcd restarted, compacted), it loads again. ``Mirror`` is
the projection: the gateway and the metadata service answer reads from it, so a GET is a
dictionary lookup and the stored JSON bytes go out as they are; reads cost the store
nothing.

Read-your-writes: the projector writes its checkpoint in the same transaction as the views,
and etcd delivers the changes of one revision together, so once the mirror's checkpoint has
reached a sequence every view as of that sequence is in the mirror. ``caught_up(seq)``
waits for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from ucloud.errors import StoreError
from ucloud.projections.views import (
    FileView,
    HostView,
    ImageView,
    NetView,
    OrderView,
    UserView,
    VmView,
)
from ucloud.store import Store

log = logging.getLogger(__name__)

V = TypeVar("V")
_RETRY_S = 1.0
_MAC_INDEX = "idx/mac/"


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    view: V
    raw: bytes


class Kind(Generic[V]):
    """The views of one kind (``vm/<id>`` ...), by id and by owner."""

    def __init__(
        self, view_type: type[V], owner_and_name: Callable[[V], tuple[str, str]] | None = None
    ) -> None:
        self._decoder = msgspec.json.Decoder(view_type)
        self._owner_and_name = owner_and_name
        self.by_id: dict[str, Entry[V]] = {}
        self.by_owner: dict[str, dict[str, Entry[V]]] = {}
        self.by_name: dict[tuple[str, str], str] = {}  # (owner, name) -> id
        self.version = 0  # moves on every change: a key for caches of derived answers

    def put(self, ident: str, raw: bytes) -> None:
        view = self._decoder.decode(raw)
        self.delete(ident)
        self.version += 1
        entry = Entry(view, raw)
        self.by_id[ident] = entry
        if self._owner_and_name is not None:
            owner, name = self._owner_and_name(view)
            self.by_owner.setdefault(owner, {})[ident] = entry
            self.by_name[(owner, name)] = ident

    def delete(self, ident: str) -> None:
        old = self.by_id.pop(ident, None)
        self.version += 1
        if old is None or self._owner_and_name is None:
            return
        owner, name = self._owner_and_name(old.view)
        mine = self.by_owner.get(owner)
        if mine is not None:
            mine.pop(ident, None)
            if not mine:
                del self.by_owner[owner]
        if self.by_name.get((owner, name)) == ident:
            del self.by_name[(owner, name)]

    def clear(self) -> None:
        self.version += 1
        self.by_id.clear()
        self.by_owner.clear()
        self.by_name.clear()

    def named(self, owner: str, name: str) -> Entry[V] | None:
        ident = self.by_name.get((owner, name))
        return None if ident is None else self.by_id.get(ident)

    def get(self, ident: str) -> Entry[V] | None:
        return self.by_id.get(ident)

    def of_owner(self, owner: str) -> Iterable[Entry[V]]:
        return self.by_owner.get(owner, {}).values()

    def all(self) -> Iterable[Entry[V]]:
        return self.by_id.values()


class Watched:
    """The keys under ``prefix``, in memory: subclasses say what a key does in ``apply``."""

    def __init__(self, store: Store, prefix: str, name: str) -> None:
        self.store = store
        self.prefix = prefix
        self.name = name
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Forget everything: a (re)load follows."""

    def apply(self, key: str, value: bytes | None) -> None:
        """One key (relative to the prefix) changed; ``None``: it was deleted."""

    async def start(self) -> None:
        """Load the prefix and follow it; returns once the first load is done."""
        revision = await self._load()
        self._task = asyncio.create_task(self._follow(revision), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def changed(self) -> None:
        """Return after the next batch of changes (or reload) has been applied."""
        await self._moved.wait()

    async def _load(self) -> int:
        revision = await self.store.revision()
        items = await self.store.get_prefix(self.prefix)
        self.reset()
        for key, value in items:
            self.apply(key[len(self.prefix) :], value)
        self._notify()
        return revision

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for change in self.store.watch_prefix(self.prefix, revision + 1):
                    revision = change.revision
                    value = change.value if change.kind == "put" else None
                    self.apply(change.key[len(self.prefix) :], value)
                    self._notify()
                raise StoreError("watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: load again and go on
                log.warning("%s: watch of %s failed (%s); loading again", self.name,
                            self.prefix, exc)
                await asyncio.sleep(_RETRY_S)
                with contextlib.suppress(Exception):
                    revision = await self._load()

    def _notify(self) -> None:
        # Waiters run after this batch of changes has been applied (no await in between).
        self._moved.set()
        self._moved = asyncio.Event()


class Mirror(Watched):
    """The projection under ``prefix``, in memory: views by kind, and ``idx/mac``."""

    def __init__(
        self, store: Store, prefix: str, projection: str = "main", name: str = "mirror"
    ) -> None:
        super().__init__(store, prefix, name)
        self.vms: Kind[VmView] = Kind(VmView, lambda v: (v.owner, v.name))
        self.hosts: Kind[HostView] = Kind(HostView)
        self.nets: Kind[NetView] = Kind(NetView, lambda v: (v.owner, v.name))
        self.images: Kind[ImageView] = Kind(ImageView, lambda v: (v.owner, v.name))
        self.files: Kind[FileView] = Kind(FileView, lambda v: (v.owner, v.name))
        self.users: Kind[UserView] = Kind(UserView)
        self.orders: Kind[OrderView] = Kind(OrderView, lambda v: (v.owner, v.id))
        self.macs: dict[str, str] = {}  # idx/mac: MAC -> vm id
        self._kinds: dict[str, Kind[object]] = {
            "vm": self.vms,  # type: ignore[dict-item]
            "host": self.hosts,  # type: ignore[dict-item]
            "net": self.nets,  # type: ignore[dict-item]
            "image": self.images,  # type: ignore[dict-item]
            "file": self.files,  # type: ignore[dict-item]
            "user": self.users,  # type: ignore[dict-item]
            "order": self.orders,  # type: ignore[dict-item]
        }
        self._checkpoint_key = f"_checkpoint/{projection}"
        self.checkpoint = 0

    async def caught_up(self, seq: int, timeout: float) -> bool:
        """Wait until the checkpoint reaches ``seq``; False when ``timeout`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.checkpoint < seq:
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed(), left)
        return True

    def reset(self) -> None:
        for kind in self._kinds.values():
            kind.clear()
        self.macs.clear()
        self.checkpoint = 0

    def apply(self, key: str, value: bytes | None) -> None:
        if key == self._checkpoint_key:
            self.checkpoint = int(value) if value else 0
            return
        if key.startswith(_MAC_INDEX):
            mac = key[len(_MAC_INDEX) :]
            if value is None:
                self.macs.pop(mac, None)
            else:
                self.macs[mac] = value.decode()
            return
        kind_name, _, ident = key.partition("/")
        kind = self._kinds.get(kind_name)
        if kind is None or not ident or "/" in ident:
            return
        if value is None:
            kind.delete(ident)
            return
        try:
            kind.put(ident, value)
        except msgspec.DecodeError as exc:
            log.warning("ignoring undecodable view at %s%s: %s", self.prefix, key, exc)
