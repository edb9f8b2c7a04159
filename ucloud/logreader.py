"""Reading the event log: one ephemeral pull consumer per read, in order, without gaps.

Theory of operation. A read opens a NATS connection of its own (``natswire.Wire``) and an
ephemeral consumer on the stream from the first sequence it wants: no acks, memory
storage, one replica, removed when the read ends (and by the server after ``INACTIVE_S``
without pull requests when the reader dies). It keeps pull requests for three batches of
messages outstanding, each with an expiry and an idle heartbeat:

- a request is always waiting, so a message is delivered the moment it is stored: follow
  mode costs no polling latency;
- messages come only when asked for, so no buffer on either side overflows and drops;
  every message carries the consumer's delivery sequence in its reply subject, so a lost
  one is a gap seen at the next; the server's heartbeats prove the consumer and the
  connection alive while nothing is stored; an expired request (408) is only "nothing
  yet": its unfilled messages are asked for again;
- frames are parsed out of one buffer; sequence, time, consumer and pending count come
  from the reply subject, so a message costs a split and a slice before ``make`` sees it.

Recovery. A gap, a consumer the server reports gone or unusable (409 such as Consumer
Deleted, 503 no responders), a connection that fails, silence for ``3 x heartbeat``, or
only heartbeats for as long from a consumer whose last message said it holds more (one
that stopped delivering) all end in the same step: drop the consumer (and the connection
when it failed) and create a new one from the last delivered sequence + 1. Nothing is
yielded twice, nothing is skipped. The first connection and consumer must succeed (a
wrong URL or stream is an error, not a hang); later failures are retried with backoff,
for ever in follow mode and up to ``RETRIES`` times without progress in a snapshot.

Snapshot or follow. A snapshot ends at ``end`` (the stream's last sequence when it began,
or ``stop``), or as soon as the consumer has nothing more pending; events appended
meanwhile are left for the next read. Follow mode runs until cancelled (or ``stop``).

Filters. One pattern is the consumer's filter: the server finds the matching messages
(with nats-server 2.15 on a 300,000-event log: ``<root>.vm.*.requested`` in 0.6 s,
``<root>.vm.<id>.*`` in 0.01 s, where matching here takes 1.0-1.4 s). Several patterns
are matched here on an unfiltered consumer: a consumer with several filters made the
server search its subjects for every message (two ``vm.*`` patterns: 64 s).

It never appends, acknowledges, or touches durable consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from ucloud.errors import LogError
from ucloud.natswire import Frame, NatsAuth, Wire, header, status

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a read yields of one message: (stream sequence, subject on the wire, time in ns,
# raw header block, body) -> an item, or None to leave the message out.
Make = Callable[[int, str, int, bytes, bytes], T | None]

HEARTBEAT_S = 5.0  # idle heartbeat of every pull request; silence for 3 of them: recover
INACTIVE_S = 30.0  # the server removes a consumer nobody pulls from for this long
RETRIES = 8  # recoveries in a row without progress before a snapshot read gives up
# Heartbeats in a row, with no message, from a consumer that said it holds more: it
# stopped delivering (about three heartbeat intervals of the three waiting pulls).
STALL_HEARTBEATS = 9
HOLD_S = 0.02  # how long records are held for a fuller batch while more is pending
_NS = 1_000_000_000


class _Lost(Exception):
    """The consumer or the connection failed; ``broken``: the connection did."""

    def __init__(self, reason: str, *, broken: bool = False) -> None:
        super().__init__(reason)
        self.broken = broken


def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a subject matches any NATS pattern (``*`` one token, ``>`` the rest)."""

    def regex(pattern: str) -> str:
        tokens = pattern.split(".")
        return r"\.".join(
            "[^.]+" if t == "*" else ".+" if t == ">" and n == len(tokens) - 1 else re.escape(t)
            for n, t in enumerate(tokens)
        )

    compiled = re.compile("|".join(f"(?:{regex(p)})" for p in patterns))
    return lambda subject: compiled.fullmatch(subject) is not None


def server_filters(patterns: Sequence[str], everything: str) -> list[str] | None:
    """The consumer's filter: [] for everything, the pattern when there is one, None when
    several must be matched here (see Filters above)."""
    if everything in patterns:
        return []
    return list(patterns) if len(patterns) == 1 else None


class LogReader(Generic[T]):
    """One read of the stream: ``batches()`` yields lists of what ``make`` makes, in order.

    ``patterns`` are subjects on the wire; ``everything`` is the stream's whole subject
    space (``<root>.>``). ``end`` ends a snapshot (None: the stream's last sequence when
    the read begins); with ``follow`` the read only ends at ``end`` when one is given.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        make: Make[T],
        *,
        patterns: Sequence[str],
        everything: str,
        start: int = 1,
        start_time: datetime | None = None,
        end: int | None = None,
        follow: bool = False,
        max_batch: int = 512,
        heartbeat_s: float = HEARTBEAT_S,
        name: str = "ucloud-read",
        auth: NatsAuth | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.wire = Wire(url, name=name, auth=auth)
        self.stream = stream
        self.make = make
        filters = server_filters(patterns, everything)
        self.filters = filters if filters is not None else []
        self.keep = matcher(patterns) if filters is None else None
        self.start_time = start_time
        self.next_seq = max(start, 1)  # the first sequence not yet delivered
        self.floor = self.next_seq  # with start_time, sequences below start are left out
        self.end = end
        self.follow = follow
        self.max_batch = max_batch
        self.pull_size = max(max_batch, 256)
        self.heartbeat_s = heartbeat_s
        self.recoveries = 0  # consumers re-created (for tests and logs)
        self._consumer = b""
        self._inbox = ""
        self._generation = 0
        self._delivered = 0  # the consumer's delivery sequence of the last message
        self._requested = 0  # messages asked for by pull requests still open
        self._pending = 1  # what the last message said the consumer still holds
        self._idle = 0  # heartbeats in a row while the consumer held more
        self._done = False
        self._items: list[T] = []

    async def batches(self) -> AsyncGenerator[list[T], None]:
        """The batches of the read (each at most ``max_batch``, none empty)."""
        try:
            await self.wire.open()
            if self.end is None and not self.follow:
                info = await self.wire.request(f"$JS.API.STREAM.INFO.{self.stream}", {})
                self.end = int(info["state"]["last_seq"])
            if self._finished() or not await self._create():
                return
            async for batch in self._pull():
                yield batch
        finally:
            await self._drop_consumer()
            await self.wire.close()

    def _finished(self) -> bool:
        return self._done or (self.end is not None and self.next_seq > self.end)

    async def _create(self) -> bool:
        """A fresh consumer from ``next_seq``; False when it holds nothing (a snapshot)."""
        config: dict[str, Any] = {
            "ack_policy": "none",
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(INACTIVE_S * _NS),
        }
        if self.start_time is not None and self.next_seq == self.floor:
            config["deliver_policy"] = "by_start_time"
            config["opt_start_time"] = _rfc3339(self.start_time)
        else:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = self.next_seq
        if len(self.filters) == 1:
            config["filter_subject"] = self.filters[0]
        elif self.filters:
            config["filter_subjects"] = self.filters
        created = await self.wire.request(
            f"$JS.API.CONSUMER.CREATE.{self.stream}", {"stream_name": self.stream, "config": config}
        )
        self._generation += 1
        self._consumer = str(created["name"]).encode()
        self._inbox = f"{self.wire.inbox}.pull.{self._generation}"
        self._delivered = self._requested = self._idle = 0
        self._pending = int(created.get("num_pending", 0))
        return self.follow or self._pending > 0

    async def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, b""
        if not consumer or not self.wire.connected:
            return
        with contextlib.suppress(LogError, TimeoutError):
            async with asyncio.timeout(2):  # else the server removes it when idle
                await self.wire.request(
                    f"$JS.API.CONSUMER.DELETE.{self.stream}.{consumer.decode()}", {}
                )

    async def _pull(self) -> AsyncIterator[list[T]]:
        failures = 0
        lost: _Lost | None = None
        while True:
            progress = self.next_seq
            try:
                if lost is not None:
                    await self._recover(lost, failures)
                if not self._finished():
                    async for batch in self._deliveries():
                        yield batch
                return
            except _Lost as exc:
                lost = exc
            failures = 1 if self.next_seq > progress else failures + 1
            if not self.follow and failures > RETRIES:
                raise LogError(f"reading {self.stream} at sequence {self.next_seq}: {lost} "
                               f"({failures - 1} recoveries in a row failed)") from lost
            if self._items:
                batch, self._items = self._items, []
                yield batch
            if self._finished():
                return

    async def _recover(self, lost: _Lost, failures: int) -> None:
        self.recoveries += 1
        log.warning("reading %s at sequence %d: %s; reading again from there",
                    self.stream, self.next_seq, lost)
        if failures > 1:
            await asyncio.sleep(min(2.0, 0.05 * 2 ** (failures - 2)))
        try:
            if lost.broken or not self.wire.connected:
                await self.wire.close()
                await self.wire.open()
            await self._drop_consumer()
            if not await self._create():
                self._done = True
        except (LogError, TimeoutError) as exc:
            await self.wire.close()
            raise _Lost(f"{lost}; then {exc}", broken=True) from exc

    async def _deliveries(self) -> AsyncIterator[list[T]]:
        wire = self.wire
        silence = 3 * self.heartbeat_s
        while True:
            self._ask()
            try:
                await wire.flush()
                frames = await wire.frames(HOLD_S if self._items else silence)
            except TimeoutError:
                if not self._items:  # the consumer or the connection: start both afresh
                    raise _Lost(f"no message or heartbeat for {silence:g}s", broken=True) from None
                frames = []
            except LogError as exc:
                raise _Lost(str(exc), broken=True) from exc
            self._take(frames)
            items, size = self._items, self.max_batch
            more = self._pending and frames and not self._done  # and on its way
            if not items or (more and len(items) < size):
                if self._done:
                    return
                continue
            cut = len(items) - len(items) % size if more else len(items)
            self._items = items[cut:]
            if cut == len(items) <= size:
                yield items  # the common case: no copy
            else:
                for at in range(0, cut, size):
                    yield items[at : at + size]
            if self._done:
                return

    def _ask(self) -> None:
        """Keep three pulls' worth of messages asked for (no more than a snapshot needs)."""
        size = self.pull_size
        wanted = 3 * size
        if self.end is not None:
            wanted = min(wanted, self.end - self.next_seq + 1)
        while self._requested < wanted and self._requested <= 2 * size:
            batch = min(size, wanted - self._requested)
            body = b'{"batch":%d,"expires":%d,"idle_heartbeat":%d}' % (
                batch, int(6 * self.heartbeat_s * _NS), int(self.heartbeat_s * _NS)
            )
            self.wire.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._consumer.decode()}",
                              body, self._inbox)
            self._requested += batch

    def _take(self, frames: list[Frame]) -> None:
        """Fold frames into ``_items``; _Lost on a gap or a consumer that went away.

        The hot loop of every read: the counters live in locals and are written back when
        it ends, however it ends, and before a status message is looked at.
        """
        consumer, keep, make, items = self._consumer, self.keep, self.make, self._items
        end, follow, inbox = self.end, self.follow, self._inbox
        delivered, next_seq, pending, taken = self._delivered, self.next_seq, self._pending, 0
        try:
            for subject, reply, headers, payload in frames:
                if not reply:
                    if subject == inbox:
                        self._delivered, self.next_seq, self._pending = delivered, next_seq, pending
                        if taken:
                            self._requested -= taken
                            self._idle = taken = 0
                        self._status(headers)
                    continue
                tokens = reply.split(b".")
                at = 3 if len(tokens) == 9 else 5
                if tokens[at] != consumer:
                    continue  # from a consumer this read has dropped
                dseq = int(tokens[at + 3])
                if dseq != delivered + 1:
                    raise _Lost(f"gap: message {dseq} of the consumer, expected {delivered + 1}")
                delivered = dseq
                taken += 1
                seq = int(tokens[at + 2])
                if end is not None and seq > end:
                    self._done = True
                    return
                pending = int(tokens[at + 5])
                if seq >= next_seq:  # below: before ``start`` (a read from a time)
                    next_seq = seq + 1
                    if keep is None or keep(subject):
                        item = make(seq, subject, int(tokens[at + 4]), headers, payload)
                        if item is not None:
                            items.append(item)
                if end is not None and (seq >= end or (pending == 0 and not follow)):
                    self._done = True
                    return
        finally:
            self._delivered, self.next_seq, self._pending = delivered, next_seq, pending
            if taken:
                self._requested -= taken
                self._idle = 0

    def _status(self, headers: bytes) -> None:
        code = status(headers)
        if code == b"100":  # idle heartbeat: alive, nothing yet
            if self._pending:  # ... although the consumer holds more than it delivered
                self._idle += 1
                if self._idle >= STALL_HEARTBEATS:
                    raise _Lost(f"the consumer holds {self._pending} more messages but sent "
                                f"only {self._idle} heartbeats")
            return
        if code in (b"408", b"404"):  # a pull request expired: ask again for what it lacked
            unfilled = header(headers, b"Nats-Pending-Messages")
            self._requested -= int(unfilled) if unfilled.isdigit() else self._requested
            self._requested = max(self._requested, 0)
            return
        if code == b"503":
            raise _Lost("no consumer answers the pull (503): it is gone")
        reason = headers.split(b"\r\n", 1)[0][9:].decode(errors="replace").strip()
        raise _Lost(f"the consumer answered {reason or headers[:40]!r}")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
