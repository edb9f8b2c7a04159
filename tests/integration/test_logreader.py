"""The log reader against a real nats-server: bursts, follow latency, and recovery from a
deleted, paused or unreachable consumer without a gap or a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from ucloud.config import Config
from ucloud.eventlog import EventLog, Record
from ucloud.ids import new_id
from ucloud.logreader import LogReader

pytestmark = pytest.mark.servers


async def append_many(log: EventLog, count: int, size: int = 64, width: int = 500) -> list[int]:
    """``count`` records of ``size`` bytes on distinct subjects, ``width`` at a time."""
    seqs: list[int] = []
    for at in range(0, count, width):
        seqs += await asyncio.gather(*(
            log.append_raw(f"ucloud.evt.vm.{new_id()}.noted", b"x" * size,
                           {"Nats-Msg-Id": new_id()})
            for _ in range(min(width, count - at))
        ))
    return sorted(seqs)


async def only_consumer(log: EventLog) -> str:
    """The name of the one consumer on the test's stream (the reader's)."""
    for _ in range(200):
        consumers = await log.js.consumers_info(log.stream)
        if len(consumers) == 1:
            return str(consumers[0].name)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(consumers)} consumers on {log.stream}, not one")


class Follower:
    """A follow read in a task: every record with its arrival time."""

    def __init__(self, batches: AsyncIterator[list[Record]], slow_s: float = 0.0) -> None:
        self.seen: list[tuple[Record, float]] = []
        self.grew = asyncio.Event()
        self.slow_s = slow_s
        self.task = asyncio.create_task(self._run(batches))

    async def _run(self, batches: AsyncIterator[list[Record]]) -> None:
        async for batch in batches:
            now = time.perf_counter()
            self.seen += [(r, now) for r in batch]
            self.grew.set()
            if self.slow_s:
                await asyncio.sleep(self.slow_s)  # a consumer slower than the log

    @property
    def seqs(self) -> list[int]:
        return [r.seq for r, _ in self.seen]

    async def until(self, seq: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not self.seen or self.seen[-1][0].seq < seq:
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"the read ended at {self.seqs[-1:]}, before {seq}")
                self.grew.clear()
                await self.grew.wait()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_a_burst_larger_than_any_buffer_arrives_once_in_order(event_log: EventLog) -> None:
    first = await event_log.last_sequence() + 1
    follower = Follower(event_log.read(first, follow=True, max_batch=64), slow_s=0.001)
    try:
        seqs = await append_many(event_log, 6000, size=2048)  # 12 MB, faster than it reads
        await follower.until(seqs[-1])
    finally:
        await follower.stop()
    assert follower.seqs == seqs == list(range(first, first + 6000))
    stored = await event_log.records("ucloud.evt.>", first)
    assert [r.data for r, _ in follower.seen] == [r.data for r in stored]
    assert [r.headers["Nats-Msg-Id"] for r, _ in follower.seen] == [
        r.headers["Nats-Msg-Id"] for r in stored]


async def test_follow_delivers_new_events_at_once(event_log: EventLog) -> None:
    start = await event_log.last_sequence() + 1
    follower = Follower(event_log.read(start, follow=True))
    try:
        warm = await append_many(event_log, 1)
        await follower.until(warm[-1])
        acked: dict[int, float] = {}
        for _ in range(20):
            seq = (await append_many(event_log, 1))[0]
            acked[seq] = time.perf_counter()
            await asyncio.sleep(0.02)
        await follower.until(max(acked))
    finally:
        await follower.stop()
    lags = [at - acked[r.seq] for r, at in follower.seen if r.seq in acked]
    assert len(lags) == 20
    assert statistics.median(lags) < 0.1 and max(lags) < 1.0, lags


async def test_a_consumer_deleted_under_a_follow_read_is_created_again(
    event_log: EventLog,
) -> None:
    before = await append_many(event_log, 50)
    follower = Follower(event_log.read(before[0], follow=True))
    try:
        await follower.until(before[-1])
        name = await only_consumer(event_log)
        assert await event_log.js.delete_consumer(event_log.stream, name)
        after = await append_many(event_log, 50)
        await follower.until(after[-1])
        assert await only_consumer(event_log) != name
    finally:
        await follower.stop()
    assert follower.seqs == before + after


async def test_a_consumer_deleted_under_a_snapshot_is_created_again(event_log: EventLog) -> None:
    seqs = await append_many(event_log, 3000)
    got: list[int] = []
    deleted = ""
    async for batch in event_log.read(seqs[0], max_batch=100):
        got += [r.seq for r in batch]
        if not deleted:  # three pulls of 256 are under way: the rest needs a new consumer
            deleted = await only_consumer(event_log)
            assert await event_log.js.delete_consumer(event_log.stream, deleted)
        await asyncio.sleep(0.001)
    assert got == seqs
    assert (await event_log.js.stream_info(event_log.stream)).state.consumer_count == 0


async def test_a_consumer_that_stops_delivering_is_replaced(event_log: EventLog) -> None:
    """A paused consumer keeps its pull requests but delivers nothing: to the reader it is
    a consumer that stopped although the log has more, what a stalled read looked like."""
    seqs = await append_many(event_log, 3000)
    event_log.heartbeat_s = 0.2
    got: list[int] = []
    paused = ""
    started = time.perf_counter()
    async for batch in event_log.read(seqs[0], max_batch=100):
        got += [r.seq for r in batch]
        if not paused:
            paused = await only_consumer(event_log)
            until = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
            answer = await event_log.nc.request(
                f"$JS.API.CONSUMER.PAUSE.{event_log.stream}.{paused}",
                f'{{"pause_until":"{until}"}}'.encode(), timeout=5,
            )
            assert b'"paused":true' in answer.data, answer.data
    assert got == seqs
    assert time.perf_counter() - started < 20


class Relay:
    """A TCP relay to nats-server that can freeze: its connections then stay open but
    carry nothing, as a network path that silently drops everything would."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        self.target = (host, int(port))
        self.frozen: list[asyncio.Event] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    def freeze(self) -> None:
        for flag in self.frozen:
            flag.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        frozen = asyncio.Event()
        self.frozen.append(frozen)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(1 << 16):
                    if frozen.is_set():
                        await asyncio.Event().wait()  # hold the connection, pass nothing
                    dst.write(data)
                    await dst.drain()

        pipes = [asyncio.create_task(pipe(reader, up_writer)),
                 asyncio.create_task(pipe(up_reader, writer))]
        self.tasks.update(pipes)
        try:
            await asyncio.gather(*pipes)
        finally:
            writer.close()
            up_writer.close()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()


async def test_a_connection_gone_silent_is_replaced(event_log: EventLog, config: Config) -> None:
    relay = Relay(config.nats.url)
    url = await relay.start()
    before = await append_many(event_log, 20)
    everything = f"{config.nats.subject_root}.>"
    reader = LogReader(
        url, event_log.stream, lambda seq, *_: seq, patterns=[everything],
        everything=everything, start=before[0], follow=True, heartbeat_s=0.2,
    )
    got: list[int] = []
    batches = reader.batches()
    try:
        while len(got) < len(before):
            got += await anext(batches)
        relay.freeze()
        after = await append_many(event_log, 20)
        async with asyncio.timeout(20):
            while len(got) < len(before) + len(after):
                got += await anext(batches)
    finally:
        await batches.aclose()
        await relay.stop()
    assert got == before + after
    assert reader.recoveries >= 1
