"""The event log: one JetStream stream, appends with per-aggregate OCC, loads and reads.

- ``append(event, expected=n)`` publishes with ``Nats-Msg-Id`` = event id and, when
  ``expected`` is given, ``Nats-Expected-Last-Subject-Sequence: n`` over the aggregate's
  wildcard subject ``ucloud.evt.<agg>.<id>.*``. Error 10071 is a ``ConflictError`` unless
  the event is already in the aggregate (a retried append is a success, not a conflict).
  Every append waits for its publish acknowledgement. The acknowledgements of all appends
  come back on one wildcard inbox and are decoded with msgspec (``_Acks``): nats-py's
  ``js.publish`` pays a request timer, ``json.loads`` and a dataclass per append, which
  made it the bottleneck; ``publish_async`` never resolves a rejected publish.
- ``load(aggregate, id)`` returns the aggregate's events and last sequence in one batched
  direct get.
- ``read(start)`` streams the log in order, optionally following, and ``read_as(make)``
  yields what ``make`` makes of each message (a replay decodes straight from the wire):
  one pull consumer per read on a connection of its own (``ucloud.logreader``), fast,
  without gaps, recovering from lost consumers and connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from ucloud.config import NatsConfig
from ucloud.errors import ConflictError, DecodeError, InputError, LogError
from ucloud.events import Event, Stored, decode, encode, subject
from ucloud.events.base import SUBJECT_ROOT
from ucloud.logreader import HEARTBEAT_S, LogReader, Make
from ucloud.natswire import NatsAuth, headers_dict, redacted

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
TYPE_HEADER = "Ucloud-Type"
ACK_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 30.0  # all first tries together
BEHIND_WAIT_S = 10.0  # how long a load waits for a replica behind to catch up
BEHIND_RETRY_S = 0.1
SAY_EVERY_S = 60.0  # the connection's errors while servers stay away: a line a minute
EVERYTHING = f"{SUBJECT_ROOT}.>"
_EPOCH = datetime.fromtimestamp(0, UTC)
T = TypeVar("T")


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class _Acks:
    """Publish acknowledgements of every append, on one wildcard inbox of the connection.

    Each append registers a future under a fresh token and publishes with the reply
    subject ``<inbox>.<token>``. Tokens are issued in time order and share one timeout, so
    the oldest waiting appends are first in the dict and one timer sweeps them.
    """

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._started: asyncio.Lock | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(self, subject_: str, data: bytes, headers: dict[str, str]) -> Msg:
        """Publish and wait for the stream's answer (TimeoutError after ACK_TIMEOUT_S)."""
        if not self._prefix:
            await self._start()
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = (future, loop.time() + ACK_TIMEOUT_S)
        if self._sweeper is None:
            self._sweeper = loop.call_later(ACK_TIMEOUT_S / 4, self._sweep)
        try:
            await self._nc.publish(subject_, data, reply=self._prefix + token, headers=headers)
            return await future
        finally:
            self._waiting.pop(token, None)

    async def _start(self) -> None:
        if self._started is None:
            self._started = asyncio.Lock()
        async with self._started:
            if self._prefix:
                return
            prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(prefix + "*", cb=self._answer)
            self._prefix = prefix

    async def _answer(self, msg: Msg) -> None:
        entry = self._waiting.get(msg.subject[len(self._prefix) :])
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        for future, deadline in list(self._waiting.values()):
            if deadline > now:
                break
            if not future.done():
                future.set_exception(TimeoutError())
        self._sweeper = None
        if self._waiting:
            self._sweeper = asyncio.get_running_loop().call_later(ACK_TIMEOUT_S / 4, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(LogError("the event log was closed"))


@dataclass(frozen=True, slots=True)
class Record:
    """One message of the stream as stored: sequence, subject, time, headers, body."""

    seq: int
    subject: str
    time: datetime
    headers: dict[str, str]
    data: bytes

    def event(self) -> Event:
        return decode(self.data)


class EventLog:
    """A connection to the event log."""

    def __init__(self, nc: NatsClient, config: NatsConfig) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self.config = config
        self.stream = config.stream
        self.root = config.subject_root
        self._acks = _Acks(nc)
        self.heartbeat_s = HEARTBEAT_S  # of every read's pull requests (silence: recover)

    @classmethod
    async def connect(cls, config: NatsConfig, *, name: str = "ucloud") -> EventLog:
        """Connect with every identity and trust setting of ``config``; LogError naming
        the server's or the TLS layer's reason when that fails."""
        where = redacted(config.url)
        reasons: list[str] = []
        refused = asyncio.Event()  # a certificate problem: no later try can succeed
        said, held = float("-inf"), 0

        async def report(exc: Exception) -> None:  # servers away: one line a minute
            nonlocal said, held
            reason = str(exc) or type(exc).__name__
            if reason not in reasons:
                reasons.append(reason)
            if isinstance(exc, ssl.SSLError):
                refused.set()
            now = time.monotonic()
            if now - said < SAY_EVERY_S:
                held += 1
                return
            more = f" ({held} more since {SAY_EVERY_S:g}s ago)" if held else ""
            said, held = now, 0
            log.warning("NATS %s: %s%s", where, reason, more)

        auth = nats_auth(config)
        auth.check()
        # A few tries at first, so that a wrong URL is an error, not a hang; once
        # connected, reconnect for ever (nats-py reads the option on each attempt).
        # Several servers: nats-py takes them as a list (a comma-separated string is one
        # bad URL to it), tried in the configured order as the event log's reader tries
        # them, so that each process can be pointed at the servers near it.
        connecting = asyncio.ensure_future(nats.connect(
            [u.strip() for u in config.url.split(",") if u.strip()], name=name,
            max_reconnect_attempts=3, reconnect_time_wait=0.5, connect_timeout=5,
            error_cb=report, dont_randomize=True, **auth.nats_py_options(),
        ))
        # nats-py never returns from a failed TLS handshake (it waits for the plain
        # transport to close), so a certificate error ends the attempt here.
        refusal = asyncio.ensure_future(refused.wait())
        await asyncio.wait([connecting, refusal], timeout=CONNECT_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        refusal.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, NatsError, OSError):
                await connecting
            raise LogError(f"cannot connect to NATS at {where}: "
                           f"{'; '.join(reasons) or 'no answer'}")
        try:
            nc = connecting.result()
        except (NatsError, OSError, TimeoutError) as exc:
            reason = "; ".join(reasons) or str(exc) or type(exc).__name__
            raise LogError(f"cannot connect to NATS at {where}: {reason}") from exc
        nc.options["max_reconnect_attempts"] = -1
        return cls(nc, config)

    async def close(self) -> None:
        with contextlib.suppress(NatsError):
            await self.nc.drain()
        self._acks.close()

    async def ensure_stream(self) -> js_api.StreamInfo:
        """Create the stream, or update it to the configured settings."""
        wanted = js_api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.root}.>"],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.LIMITS,
            discard=js_api.DiscardPolicy.OLD,
            max_age=0,
            num_replicas=self.config.replicas,
            duplicate_window=self.config.duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
        )
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            return await self.js.add_stream(wanted)
        return await self.js.update_stream(wanted)

    async def append(
        self, event: Event, expected: int | None = None, *, guard: str = ""
    ) -> int:
        """Append one event; returns its stream sequence. ``expected=0``: must be first.

        ``expected`` is the last sequence of the event's aggregate, or with ``guard`` (a
        subject filter, such as every VM's ``dns_name_added``) the last of that filter."""
        aggregate_subjects = subject(event.aggregate, event.aggregate_id)
        wire = self.physical(aggregate_subjects)
        headers = {"Nats-Msg-Id": event.id, TYPE_HEADER: event.tag()}
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = (
                self.physical(guard) if guard else wire
            )
        event_subject = wire[:-1] + event.event_name
        ack = await self._publish(event_subject, encode(event), headers)
        error = ack.error
        if error is None:
            return ack.seq
        if error.err_code == WRONG_LAST_SEQUENCE and expected is not None:
            seq = await self._find_after(event, expected)
            if seq:
                return seq
            raise ConflictError(aggregate_subjects, expected, error.description)
        raise LogError(f"append {event.subject}: {_describe(error)}")

    async def append_raw(self, subject_: str, data: bytes, headers: dict[str, str]) -> int:
        """Publish bytes as they are (operators' tools and tests of bad input)."""
        ack = await self._publish(self.physical(subject_), data, headers)
        if ack.error is not None:
            raise LogError(f"append {subject_}: {_describe(ack.error)}")
        return ack.seq

    async def _publish(self, wire: str, data: bytes, headers: dict[str, str]) -> _PubAck:
        try:
            msg = await self._acks.request(wire, data, headers)
        except TimeoutError as exc:
            raise LogError(f"append {wire}: no acknowledgement in {ACK_TIMEOUT_S}s") from exc
        except (NatsError, OSError) as exc:
            raise LogError(f"append {wire}: {exc}") from exc
        status = msg.headers.get("Status") if msg.headers else None
        if status:
            reason = "no stream takes this subject" if status == "503" else f"status {status}"
            raise LogError(f"append {wire}: {reason}")
        try:
            return _ack_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise LogError(f"append {wire}: unreadable acknowledgement {msg.data!r}") from exc

    async def find(self, event: Event) -> int:
        """The sequence of ``event`` if it is stored in its aggregate, else 0."""
        return await self._find(event.aggregate, event.aggregate_id, event.id)

    async def _find(self, aggregate: str, aggregate_id: str, event_id: str) -> int:
        events, _ = await self.load(aggregate, aggregate_id)
        return next((s.seq for s in events if s.event.id == event_id), 0)

    async def _find_after(self, event: Event, expected: int) -> int:
        """Like ``find``, but only among what came after ``expected`` (a retried append)."""
        after = await self.records(subject(event.aggregate, event.aggregate_id), expected + 1)
        return next((r.seq for r in after if r.headers.get("Nats-Msg-Id") == event.id), 0)

    async def load(
        self, aggregate: str, aggregate_id: str, *, including: str = ""
    ) -> tuple[list[Stored], int]:
        """The aggregate's events in order and its last sequence (0 when it has none).

        ``including``: the id of an event the caller knows the aggregate holds (one it was
        delivered, or the cause of a command it was delivered). Direct gets are answered
        by any replica, and one that is behind (just restarted, or cut off) answers
        without it: it is asked again, for up to ``BEHIND_WAIT_S``, then LogError.
        """
        waited = 0.0
        while True:
            stored, last = await self._load(aggregate, aggregate_id)
            if not including or any(s.event.id == including for s in stored):
                return stored, last
            if waited >= BEHIND_WAIT_S:
                raise LogError(f"{aggregate} {aggregate_id}: the replicas answer without "
                               f"event {including} for {BEHIND_WAIT_S:g}s")  # fmt: skip
            if waited == 0:
                log.info("%s %s: a replica behind answered without %s; asking again",
                         aggregate, aggregate_id, including)  # fmt: skip
            await asyncio.sleep(BEHIND_RETRY_S)
            waited += BEHIND_RETRY_S

    async def _load(self, aggregate: str, aggregate_id: str) -> tuple[list[Stored], int]:
        records = await self.records(subject(aggregate, aggregate_id))
        stored = []
        for record in records:
            try:
                stored.append(Stored(record.seq, record.event()))
            except DecodeError:
                log.warning("skipping undecodable event at sequence %d", record.seq)
        return stored, (records[-1].seq if records else 0)

    async def records(self, filter_subject: str, start: int = 1) -> list[Record]:
        """Every record matching ``filter_subject`` from ``start`` on (batched direct gets)."""
        out: list[Record] = []
        while True:
            batch = await self._direct_batch(filter_subject, start, 1000)
            out.extend(batch)
            if len(batch) < 1000:
                return out
            start = batch[-1].seq + 1

    async def _direct_batch(self, filter_subject: str, start: int, size: int) -> list[Record]:
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await self.nc.subscribe(inbox, cb=collect)
        try:
            request = msgspec.json.encode(
                {"seq": start, "next_by_subj": self.physical(filter_subject), "batch": size}
            )
            await self.nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", request, reply=inbox)
            out: list[Record] = []
            while True:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                async with asyncio.timeout(10):
                    msg = await queue.get()
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404" or status == "204" or (not msg.data and status):
                    return out
                if status:
                    raise LogError(f"direct get {filter_subject}: {status} {headers}")
                out.append(self._logical(_record(headers, msg.data)))
                if headers.get("Nats-Num-Pending") == "0" and size == 1:
                    return out
        except TimeoutError as exc:
            raise LogError(f"direct get {filter_subject}: no answer") from exc
        finally:
            await sub.unsubscribe()

    async def last_sequence(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def read(
        self,
        start: int = 1,
        *,
        filter_subject: str = EVERYTHING,
        follow: bool = False,
        stop: int | None = None,
        start_time: datetime | None = None,
        max_batch: int = 512,
    ) -> AsyncGenerator[list[Record], None]:
        """Batches of records in order from ``start`` (or from ``start_time``).

        Without ``follow`` it ends at the last sequence the stream had when it began (or at
        ``stop``, or earlier when nothing more is stored); with ``follow`` it waits for new
        events until cancelled (or until ``stop``).
        """
        reads = self.read_as(
            record_of, subjects=(filter_subject,), start=start, follow=follow, stop=stop,
            start_time=start_time, max_batch=max_batch,
        )
        async with contextlib.aclosing(reads) as batches:  # closed with this read, not later
            async for batch in batches:
                yield batch

    async def read_as(
        self,
        make: Make[T],
        *,
        subjects: Sequence[str] = (EVERYTHING,),
        start: int = 1,
        follow: bool = False,
        stop: int | None = None,
        start_time: datetime | None = None,
        max_batch: int = 512,
    ) -> AsyncGenerator[list[T], None]:
        """Like ``read``, batches of what ``make`` makes of each message that matches any
        of ``subjects``: ``make(seq, logical subject, time in ns, raw headers, body)``,
        None to leave it out. A replay decodes events here without making records."""
        root = self.root
        if root != SUBJECT_ROOT:
            inner = make

            def make(seq: int, wire: str, ns: int, headers: bytes, data: bytes) -> T | None:
                return inner(seq, SUBJECT_ROOT + wire[len(root) :], ns, headers, data)

        reader = LogReader(
            self.config.url, self.stream, make, patterns=[self.physical(s) for s in subjects],
            everything=f"{root}.>", start=start, start_time=start_time, end=stop,
            follow=follow, max_batch=max_batch, heartbeat_s=self.heartbeat_s,
            auth=nats_auth(self.config),
        )
        async with contextlib.aclosing(reader.batches()) as batches:
            async for batch in batches:
                yield batch

    def physical(self, logical: str) -> str:
        """The subject on the wire: the configured root instead of ``ucloud.evt``."""
        if self.root == SUBJECT_ROOT:
            return logical
        if logical != SUBJECT_ROOT and not logical.startswith(SUBJECT_ROOT + "."):
            raise InputError("subject", f"{logical!r} is not under {SUBJECT_ROOT}")
        return self.root + logical[len(SUBJECT_ROOT) :]

    def logical(self, wire: str) -> str:
        """The logical subject (``ucloud.evt...``) of a subject on the wire."""
        if self.root == SUBJECT_ROOT or not wire.startswith(self.root):
            return wire
        return SUBJECT_ROOT + wire[len(self.root) :]

    def _logical(self, record: Record) -> Record:
        if self.root == SUBJECT_ROOT:
            return record
        return dataclasses.replace(record, subject=SUBJECT_ROOT + record.subject[len(self.root) :])


def nats_auth(config: NatsConfig) -> NatsAuth:
    """The identity and trust settings of ``config``, for every connection to NATS."""
    return NatsAuth(
        credentials=config.credentials, nkey_seed=config.nkey_seed, ca_file=config.ca_file,
        cert_file=config.cert_file, key_file=config.key_file,
    )


def _describe(error: _ApiError) -> str:
    return f"{error.description} (code {error.code}, error {error.err_code})"


def record_of(seq: int, subject: str, ns: int, headers: bytes, data: bytes) -> Record:
    """The record of a message as a read delivers it (``read_as``'s ``make``)."""
    return Record(seq, subject, _EPOCH + timedelta(microseconds=ns // 1000),
                  headers_dict(headers), data)


def _record(headers: dict[str, str], data: bytes) -> Record:
    stamp = headers.get("Nats-Time-Stamp", "")
    return Record(
        seq=int(headers["Nats-Sequence"]),
        subject=headers["Nats-Subject"],
        time=_parse_time(stamp) if stamp else datetime.fromtimestamp(0, UTC),
        headers={k: v for k, v in headers.items() if not k.startswith("Nats-Num")},
        data=data,
    )


def _parse_time(value: str) -> datetime:
    # nats sends RFC 3339 with nanoseconds; Python keeps microseconds.
    if "." in value:
        head, frac = value.split(".", 1)
        digits = frac[: len(frac) - len(frac.lstrip("0123456789"))]
        zone = frac[len(digits) :]
        value = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def subjects_of(aggregates: Sequence[str]) -> list[str]:
    return [subject(a, "*", "*") for a in aggregates]
