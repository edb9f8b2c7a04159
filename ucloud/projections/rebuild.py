"""Rebuild the projection from the log, or verify that the live one equals a replay.

``rebuild`` deletes the projector's key families and its checkpoint in one transaction
(guarded on the checkpoint it read) and replays the log from sequence 1 with the same fold
and writer as the live projector. It is safe while a projector runs: that projector's next
commit fails its guard, it reloads, and the two take turns until the rebuild returns (it
is faster with the projector stopped). Keys outside the families (``alive/``, secrets) are
never touched.

``verify`` reads the live projection and its checkpoint C at one revision, replays 1..C
into a scratch prefix next to (not under) the live one, compares key by key (the
checkpoint and ``_poison/`` aside) and always deletes the scratch prefix.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.projections.metrics import ProjectorMetrics
from ucloud.projections.ops import Delete, DeletePrefix, Op
from ucloud.projections.projector import PROJECTION, Projector
from ucloud.projections.views import POISON, PROJECTED, checkpoint_key, is_projected
from ucloud.store import Guard, Store


@dataclass(frozen=True)
class Rebuilt:
    """What a replay did: the events it folded, up to which sequence, in how long."""

    events: int
    poison: int
    checkpoint: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.events + self.poison) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Difference:
    """``missing``: only in the replay; ``extra``: only live; ``different``: both, unequal."""

    kind: Literal["missing", "extra", "different"]
    key: str
    live: bytes | None
    replayed: bytes | None


async def clear(store: Store, prefix: str, projection: str = PROJECTION) -> None:
    """Delete the projection's keys and checkpoint under ``prefix``, atomically."""
    key = prefix + checkpoint_key(projection)
    ops: list[Op] = [DeletePrefix(prefix + family) for family in PROJECTED]
    ops.append(Delete(key))
    while not await store.commit(ops, [Guard(key, await store.get(key))]):
        pass  # a projector committed between the read and the delete: read again


async def rebuild(
    store: Store,
    event_log: EventLog,
    prefix: str,
    *,
    max_txn_ops: int,
    stop: int | None = None,
    projection: str = PROJECTION,
) -> Rebuilt:
    """Delete the projection under ``prefix`` and replay 1..``stop`` (default: the last now)."""
    last = await event_log.last_sequence() if stop is None else stop
    began = time.perf_counter()
    await clear(store, prefix, projection)
    metrics = ProjectorMetrics()
    projector = Projector(
        store, event_log, prefix, max_txn_ops=max_txn_ops, projection=projection,
        metrics=metrics,
    )
    await projector.catch_up(last)
    return Rebuilt(
        events=metrics.applied, poison=metrics.poison, checkpoint=metrics.checkpoint,
        seconds=time.perf_counter() - began,
    )


def scratch_prefix(prefix: str) -> str:
    """A fresh prefix beside ``prefix`` (``/ucloud/v1/`` -> ``/ucloud/v1.verify-<id>/``)."""
    return f"{prefix.rstrip('/')}.verify-{new_id()}/"


async def verify(
    store: Store,
    event_log: EventLog,
    prefix: str,
    *,
    max_txn_ops: int,
    projection: str = PROJECTION,
) -> tuple[int, list[Difference]]:
    """The live checkpoint C and how the live projection differs from a replay of 1..C."""
    live_items = await store.get_prefix(prefix)
    key = prefix + checkpoint_key(projection)
    stored = next((value for k, value in live_items if k == key), None)
    checkpoint = int(stored) if stored is not None else 0
    scratch = scratch_prefix(prefix)
    try:
        await rebuild(
            store, event_log, scratch, max_txn_ops=max_txn_ops, stop=checkpoint,
            projection=projection,
        )
        replayed_items = await store.get_prefix(scratch)
    finally:
        await store.delete_prefix(scratch)
    live = comparable(live_items, prefix)
    replayed = comparable(replayed_items, scratch)
    return checkpoint, compare(live, replayed)


def comparable(items: Iterable[tuple[str, bytes]], prefix: str) -> dict[str, bytes]:
    """The projected keys (relative) and values, without checkpoints and poison."""
    out = {}
    for key, value in items:
        relative = key[len(prefix) :]
        if is_projected(relative) and not relative.startswith(POISON):
            out[relative] = value
    return out


def compare(live: dict[str, bytes], replayed: dict[str, bytes]) -> list[Difference]:
    """Key-by-key differences, in key order."""
    out = []
    for key in sorted(live.keys() | replayed.keys()):
        a, b = live.get(key), replayed.get(key)
        if a == b:
            continue
        kind: Literal["missing", "extra", "different"] = (
            "missing" if a is None else "extra" if b is None else "different"
        )
        out.append(Difference(kind, key, a, b))
    return out
