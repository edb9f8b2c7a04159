"""The projector: folds the event log into the views in etcd, exactly once per event.

Theory of operation. The projector keeps the whole projection in memory (``Projection``):
it loads the prefix once, then reads the log from the checkpoint + 1 and folds each batch
of records with the pure rules of ``apply``. A batch becomes one or more transactions
(``Txn``), each holding the coalesced operations of whole events, never more than
``max_txn_ops`` (the checkpoint put included) nor ``MAX_TXN_BYTES``. The writer commits a
transaction together with the checkpoint ``_checkpoint/<projection>``, guarded on the
checkpoint it last wrote: when the guard fails another projector (or a rebuild) moved the
checkpoint, so this one reloads the prefix and resumes from the new checkpoint. Several
projectors may run at once; the guard makes them take turns and none applies an event
twice.

A record that does not decode (bad JSON, unknown tag, wrong types), or that a rule fails
on, is poison: it is recorded at ``_poison/<seq>`` in the same transaction, counted, logged
with its sequence, and skipped. Poison never stops the projector.

The read itself never stalls silently: ``EventLog.read`` re-creates its consumer from the
last delivered sequence on a gap, a lost consumer or connection, or a consumer that stops
delivering while it holds more (``ucloud.logreader``), so the projector keeps no watchdog.

Only an event so large that its own operations exceed ``max_txn_ops`` is committed in
several transactions (the checkpoint moves with the last one); folding it again onto what
is already stored yields the same keys, so an interruption in between is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ucloud.errors import CheckpointMoved, ConfigError, DecodeError, StoreError
from ucloud.eventlog import EventLog
from ucloud.events import decode
from ucloud.projections.apply import changes
from ucloud.projections.metrics import ProjectorMetrics
from ucloud.projections.ops import Delete, Op, Put
from ucloud.projections.views import (
    POISON,
    PoisonView,
    Value,
    checkpoint_key,
    decode_value,
    encode_value,
    is_projected,
    poison_key,
)
from ucloud.store import Guard, Store, wait_for

if TYPE_CHECKING:
    from ucloud.metrics import Gatherer
    from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

MAX_TXN_BYTES = 1 << 20  # below a stock etcd's 1.5 MiB request limit
PROJECTION = "main"
KeyOp = Put | Delete


class Message(Protocol):
    """What the fold needs of a stream record (``eventlog.Record`` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...


@dataclass
class Txn:
    """Operations (full keys) of whole events, to commit with the checkpoint."""

    ops: list[KeyOp]
    checkpoint: int
    applied: int = 0
    poisoned: list[tuple[int, str]] = field(default_factory=list)


class Projection:
    """The projection in memory: views by key, the checkpoint, and the fold (no I/O).

    ``prefix`` is prepended to the keys of the operations the fold returns.
    """

    def __init__(
        self,
        views: dict[str, Value] | None = None,
        checkpoint: int = 0,
        *,
        prefix: str = "",
        seen_by: str = "projector",
    ) -> None:
        self.views: dict[str, Value] = {} if views is None else views
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.seen_by = seen_by

    @classmethod
    def from_items(
        cls, items: Iterable[tuple[str, bytes]], prefix: str, projection: str = PROJECTION
    ) -> tuple[Projection, bytes | None]:
        """The projection stored as ``items`` (full keys), and its checkpoint's bytes."""
        views: dict[str, Value] = {}
        stored: bytes | None = None
        own = prefix + checkpoint_key(projection)
        for key, data in items:
            relative = key[len(prefix) :]
            if key == own:
                stored = data
            elif is_projected(relative) and not relative.startswith(POISON):
                try:
                    views[relative] = decode_value(relative, data)
                except ValueError as exc:  # msgspec errors are ValueErrors
                    log.error("ignoring undecodable %s (%s): run `ucloud replay rebuild`", key, exc)
        return cls(views, _parse_checkpoint(own, stored), prefix=prefix), stored

    def fold(
        self, records: Iterable[Message], max_ops: int, max_bytes: int = MAX_TXN_BYTES
    ) -> list[Txn]:
        """Apply ``records`` to the views; the transactions that store the result.

        Records at or below the checkpoint are skipped. Each transaction holds at most
        ``max_ops - 1`` operations (room for the checkpoint) unless one event needs more.
        """
        if max_ops < 2:
            raise ValueError(f"max_ops must leave room for the checkpoint, got {max_ops}")
        limit = max_ops - 1
        txns: list[Txn] = []
        batch = Txn(ops=[], checkpoint=self.checkpoint)
        pending: dict[str, KeyOp] = {}
        size = 0
        for record in records:
            if record.seq <= self.checkpoint:
                continue
            ops, error = self._ops(record)
            fresh = grown = 0
            for op in ops:
                grown += len(op.key) + len(op.value) if type(op) is Put else len(op.key)
                if op.key not in pending:
                    fresh += 1
            if pending and (len(pending) + fresh > limit or size + grown > max_bytes):
                batch.ops = list(pending.values())
                txns.append(batch)
                batch, pending, size = Txn(ops=[], checkpoint=self.checkpoint), {}, 0
            if len(ops) > limit:  # one event larger than a transaction: all but its tail
                ops = list({op.key: op for op in ops}.values())
                head, ops = ops[: -limit], ops[-limit:]
                for start in range(0, len(head), limit):
                    txns.append(Txn(ops=head[start : start + limit], checkpoint=self.checkpoint))
            for op in ops:
                old = pending.get(op.key)
                size += _size(op) - (_size(old) if old is not None else 0)
                pending[op.key] = op
            if error is None:
                batch.applied += 1
            else:
                batch.poisoned.append((record.seq, error))
            self.checkpoint = batch.checkpoint = record.seq
        if pending or batch.applied or batch.poisoned:
            batch.ops = list(pending.values())
            txns.append(batch)
        return txns

    def _ops(self, record: Message) -> tuple[list[KeyOp], str | None]:
        try:
            event = decode(record.data)
            found = changes(self.views, event)
        except DecodeError as exc:
            return self._poison(record, str(exc)), str(exc)
        except Exception as exc:  # a rule failing on one event must not stop the projection
            log.exception("projection rule failed at sequence %d", record.seq)
            return self._poison(record, f"apply: {exc!r}"), f"apply: {exc!r}"
        ops: list[KeyOp] = []
        views = self.views
        for key, value in found:
            if value is None:
                views.pop(key, None)
                ops.append(Delete(self.prefix + key))
            else:
                views[key] = value
                ops.append(Put(self.prefix + key, encode_value(value)))
        return ops, None

    def _poison(self, record: Message, error: str) -> list[KeyOp]:
        view = PoisonView(seq=record.seq, subject=record.subject, error=error, seen_by=self.seen_by)
        return [Put(self.prefix + poison_key(record.seq), encode_value(view))]


def _size(op: KeyOp) -> int:
    return len(op.key) + len(op.value) if isinstance(op, Put) else len(op.key)


class Writer:
    """Loads a projection from the store and commits its transactions, guarded."""

    def __init__(self, store: Store, prefix: str, projection: str = PROJECTION) -> None:
        self.store = store
        self.prefix = prefix
        self.projection = projection
        self.checkpoint_key = prefix + checkpoint_key(projection)
        self.stored: bytes | None = None  # the checkpoint as this writer last saw it

    async def load(self) -> Projection:
        """The projection as stored: every view under the prefix and the checkpoint."""
        items = await self.store.get_prefix(self.prefix)
        projection, self.stored = Projection.from_items(items, self.prefix, self.projection)
        return projection

    async def commit(self, txn: Txn) -> None:
        """Store ``txn`` and move the checkpoint; CheckpointMoved when it moved elsewhere."""
        value = str(txn.checkpoint).encode()
        ops: list[Op] = [*txn.ops, Put(self.checkpoint_key, value)]
        if not await self.store.commit(ops, [Guard(self.checkpoint_key, self.stored)]):
            expected = _parse_checkpoint(self.checkpoint_key, self.stored)
            raise CheckpointMoved(self.projection, expected)
        self.stored = value


def _parse_checkpoint(key: str, value: bytes | None) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError as exc:
        raise StoreError(f"{key} holds {value!r}, not a stream sequence") from exc


class Projector:
    """Follows the log (``run``) or catches up to a sequence (``catch_up``)."""

    def __init__(
        self,
        store: Store,
        event_log: EventLog,
        prefix: str,
        *,
        max_txn_ops: int,
        projection: str = PROJECTION,
        metrics: ProjectorMetrics | None = None,
    ) -> None:
        if max_txn_ops < 2:
            reason = f"must be at least 2 (room for the checkpoint), not {max_txn_ops}"
            raise ConfigError("etcd.max_txn_ops", reason)
        self.log = event_log
        self.writer = Writer(store, prefix, projection)
        self.max_txn_ops = max_txn_ops
        self.metrics = metrics or ProjectorMetrics()

    async def run(self) -> None:
        """Apply the log as it grows, until cancelled."""
        await self._project(stop=None)

    async def catch_up(self, stop: int) -> None:
        """Apply the log up to sequence ``stop`` and return."""
        await self._project(stop=stop)

    async def _project(self, stop: int | None) -> None:
        while True:
            projection = await self.writer.load()
            self.metrics.checkpoint = projection.checkpoint
            log.info("projection %s loaded at sequence %d (%d keys)",
                     self.writer.projection, projection.checkpoint, len(projection.views))
            try:
                await self._follow(projection, stop)
                if stop is not None:
                    return
            except CheckpointMoved as exc:
                self.metrics.reloads += 1
                log.info("%s: reloading", exc)

    async def _follow(self, projection: Projection, stop: int | None) -> None:
        # While catching up (full batches), folding the next batch overlaps the commit of
        # the previous one: etcd works in its own process while this one reads and folds.
        # A short batch means the log is drained: commit it before waiting for more.
        committing: asyncio.Task[None] | None = None
        max_batch = max(512, min(self.max_txn_ops, 4096))
        try:
            reads = self.log.read(
                projection.checkpoint + 1, follow=stop is None, stop=stop, max_batch=max_batch
            )
            async with contextlib.aclosing(reads) as batches:
                async for batch in batches:
                    txns = projection.fold(batch, self.max_txn_ops)
                    if committing is not None:
                        await committing
                        committing = None
                    if len(batch) < max_batch:
                        await self._commit(txns)
                    elif txns:
                        committing = asyncio.create_task(self._commit(txns))
            if committing is not None:
                await committing
        finally:
            if committing is not None and not committing.done():
                committing.cancel()
                with contextlib.suppress(asyncio.CancelledError, CheckpointMoved, StoreError):
                    await committing

    async def _commit(self, txns: list[Txn]) -> None:
        for txn in txns:
            await self.writer.commit(txn)
            self._committed(txn)

    def _committed(self, txn: Txn) -> None:
        metrics = self.metrics
        metrics.checkpoint = txn.checkpoint
        metrics.applied += txn.applied
        metrics.poison += len(txn.poisoned)
        metrics.transactions += 1
        for seq, error in txn.poisoned:
            log.warning("poison at sequence %d recorded at %s: %s",
                        seq, self.writer.prefix + poison_key(seq), error)


async def run(ctx: ServiceContext) -> None:
    """The ``projector`` service; its metrics are ``ctx.shared.projector``."""
    etcd = ctx.config.etcd
    projector = Projector(ctx.store, ctx.log, etcd.prefix, max_txn_ops=etcd.max_txn_ops)
    ctx.shared.projector = projector.metrics
    with ctx.metrics.gathering(gatherer(projector.metrics, ctx.log)):
        await projector.run()


async def wait_for_checkpoint(
    store: Store, prefix: str, seq: int, timeout: float, projection: str = PROJECTION
) -> None:
    """Return once the checkpoint under ``prefix`` is at ``seq`` or past it (read your writes).

    Raises TimeoutError after ``timeout`` seconds.
    """
    key = prefix + checkpoint_key(projection)

    def passed(value: bytes | None) -> bool:
        return value is not None and value.isdigit() and int(value) >= seq

    try:
        await wait_for(store, key, passed, timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{key} did not reach {seq} within {timeout}s") from exc


def gatherer(
    metrics: ProjectorMetrics, event_log: EventLog, projection: str = PROJECTION
) -> Gatherer:
    """These numbers as metric families, with the lag against the stream, at scrape time."""

    async def gather() -> list[Metric]:
        lag = metrics.lag(await event_log.last_sequence())
        gauges = {
            "checkpoint": ("Last stream sequence applied and committed.", metrics.checkpoint),
            "lag_events": ("Stream events not yet applied.", lag),
        }
        counts = {
            "applied": ("Events folded into the projection.", metrics.applied),
            "poison": ("Records that did not decode, recorded under _poison/.", metrics.poison),
            "transactions": ("etcd transactions committed.", metrics.transactions),
            "reloads": ("Times the checkpoint moved under this projector.", metrics.reloads),
        }
        families: list[Metric] = []
        for kind, numbers in ((GaugeMetricFamily, gauges), (CounterMetricFamily, counts)):
            for name, (help_text, value) in numbers.items():
                family = kind(f"ucloud_projector_{name}", help_text, labels=["projection"])
                family.add_metric([projection], value)
                families.append(family)
        return families

    return gather
