"""A fast, read-only scan of the event log, for replays over millions of events.

``EventLog.read`` goes through nats-py, which spends tens of microseconds per message
(message objects, header parsing, ordered-consumer bookkeeping): about 50,000 records/s.
``scan`` opens a connection of its own and speaks the NATS protocol directly:

- an ephemeral pull consumer on the whole stream: no acks, memory storage, removed when
  the scan ends and by the server after 30 s of inactivity if the reader dies. Subjects
  are filtered here, before anything is decoded: the server's wildcard filters cost it
  a search per message over every subject of the stream (one per aggregate), which
  made a filtered replay of a large log slower than an unfiltered one by far;
- pull requests kept in flight ahead of the reader, frames parsed out of one buffer;
  sequence, time and order come from the reply subject of each message, so a record
  costs a split and a slice;
- a snapshot: it reads the messages the consumer counted when it was created (and none
  after ``stop``); events appended meanwhile are left for the next replay. A gap in
  the consumer's delivery sequence is a ``LogError``, never a silent hole.

``scan`` yields records; ``scan_events`` yields ``(sequence, event)`` decoded straight
from the wire, what replays fold (a record object costs more than its decoding).

It never appends to the stream: it only asks the JetStream API for a consumer and removes
it. A URL it cannot serve (``tls://``, a server that requires TLS) falls back to
``EventLog.read`` with the same results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ucloud.errors import DecodeError, LogError
from ucloud.eventlog import EventLog, Record
from ucloud.events import Event, decode
from ucloud.events.base import SUBJECT_ROOT

EVERYTHING = (f"{SUBJECT_ROOT}.>",)
_INACTIVE_NS = 30_000_000_000
_PULL_EXPIRES_NS = 30_000_000_000
_TIMEOUT_S = 30.0


_Stored = tuple[int, Event]
T = TypeVar("T")
# Makes what a scan yields from (sequence, physical subject, time in ns, headers, body).
_Make = Callable[[int, str, int, bytes, bytes], T | None]


class _Unsupported(Exception):
    """The fast path cannot serve this server; use the client library instead."""


async def scan(
    log: EventLog,
    *,
    subjects: Sequence[str] = EVERYTHING,
    start: int = 1,
    start_time: datetime | None = None,
    stop: int | None = None,
    batch: int = 1000,
    fast: bool = True,
) -> AsyncIterator[list[Record]]:
    """Batches of records in stream order matching any of ``subjects`` (logical names).

    From sequence ``start`` (or the first record at or after ``start_time``) to the end
    of the stream as it was when the scan began, or to ``stop``.
    """
    root = log.root

    def record(seq: int, subject: str, ns: int, headers: bytes, data: bytes) -> Record:
        if root != SUBJECT_ROOT:
            subject = SUBJECT_ROOT + subject[len(root) :]
        return Record(seq, subject, datetime.fromtimestamp(ns / 1e9, UTC), _headers(headers), data)

    where = _Where(subjects, start, start_time, stop)
    async for records in _scan(log, where, batch, fast, record, lambda r: r):
        yield records


async def scan_events(
    log: EventLog,
    *,
    subjects: Sequence[str] = EVERYTHING,
    start: int = 1,
    start_time: datetime | None = None,
    stop: int | None = None,
    skipped: list[int] | None = None,
    batch: int = 1000,
    fast: bool = True,
) -> AsyncIterator[list[tuple[int, Event]]]:
    """Like ``scan``, batches of ``(sequence, event)``: what a replay folds.

    Records that are no known event are left out; their sequences are added to
    ``skipped``. No record objects are made, which is most of the cost of a record.
    """

    def event(seq: int, subject: str, ns: int, headers: bytes, data: bytes) -> _Stored | None:
        try:
            return seq, decode(data)
        except DecodeError:
            if skipped is not None:
                skipped.append(seq)
            return None

    where = _Where(subjects, start, start_time, stop)
    async for events in _scan(
        log, where, batch, fast, event, lambda r: event(r.seq, r.subject, 0, b"", r.data)
    ):
        yield events


@dataclass(frozen=True, slots=True)
class _Where:
    subjects: Sequence[str]
    start: int
    start_time: datetime | None
    stop: int | None


async def _scan(
    log: EventLog,
    where: _Where,
    batch: int,
    fast: bool,
    make: _Make[T],
    from_record: Callable[[Record], T | None],
) -> AsyncIterator[list[T]]:
    if fast:
        connection = _Connection(log.config.url)
        try:
            await connection.open()
            async for items in _pull(connection, log, where, batch, make):
                yield items
            return
        except _Unsupported:
            pass
        finally:
            await connection.close()
    keep = None if list(where.subjects) == list(EVERYTHING) else _matcher(where.subjects)
    async for records in log.read(where.start, start_time=where.start_time, stop=where.stop):
        items = [
            item
            for record in records
            if keep is None or keep(record.subject)
            if (item := from_record(record)) is not None
        ]
        if items:
            yield items


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a subject matches any NATS pattern (``*`` one token, ``>`` the rest)."""

    def regex(pattern: str) -> str:
        tokens = pattern.split(".")
        return r"\.".join(
            "[^.]+" if t == "*" else ".+" if t == ">" and n == len(tokens) - 1 else re.escape(t)
            for n, t in enumerate(tokens)
        )

    compiled = re.compile("|".join(f"(?:{regex(p)})" for p in patterns))
    return lambda subject: compiled.fullmatch(subject) is not None


async def _pull(
    connection: _Connection, log: EventLog, where: _Where, batch: int, make: _Make[T]
) -> AsyncIterator[list[T]]:
    stream = log.stream
    config: dict[str, Any] = {
        "ack_policy": "none",
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": _INACTIVE_NS,
    }
    if where.start_time is not None:
        config["deliver_policy"] = "by_start_time"
        stamp = where.start_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        config["opt_start_time"] = stamp
    else:
        config["deliver_policy"] = "by_start_sequence"
        config["opt_start_seq"] = max(where.start, 1)
    patterns = [log.physical(s) for s in where.subjects]
    keep = None if patterns == [log.physical(EVERYTHING[0])] else _matcher(patterns)
    created = await connection.request(
        f"$JS.API.CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
    )
    name = str(created["name"])
    try:
        wanted = int(created.get("num_pending", 0))
        if wanted == 0:
            return
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
        async for items in connection.pull(next_subject, wanted, batch, where.stop, keep, make):
            if items:
                yield items
    finally:
        with contextlib.suppress(LogError, OSError):  # else the server removes it when idle
            await connection.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", {})


class _Connection:
    """One plain NATS protocol connection: requests and pulls on one inbox subscription."""

    def __init__(self, url: str) -> None:
        self.url = url.split(",")[0].strip()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.inbox = f"_INBOX.replay{os.urandom(8).hex()}"
        self.buffer = b""

    async def open(self) -> None:
        parts = urlsplit(self.url if "://" in self.url else f"nats://{self.url}")
        if parts.scheme != "nats":
            raise _Unsupported(parts.scheme)
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222),
                _TIMEOUT_S,
            )
            info = json.loads((await self._line()).removeprefix(b"INFO"))
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            raise LogError(f"cannot connect to NATS at {self.url}: {exc}") from exc
        if info.get("tls_required"):
            raise _Unsupported("tls")
        options: dict[str, Any] = {
            "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
            "protocol": 1, "lang": "python", "version": "ucloud", "name": "ucloud-replay",
        }
        if parts.username and parts.password is not None:
            options["user"], options["pass"] = unquote(parts.username), unquote(parts.password)
        elif parts.username:
            options["auth_token"] = unquote(parts.username)
        self._write(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        self._write(f"SUB {self.inbox}.* 1\r\n".encode())
        while True:
            line = await self._line()
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"-ERR"):
                raise LogError(f"NATS at {self.url} refused the connection: {line.decode()}")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()
            self.writer = None

    def send(self, subject: str, payload: bytes, reply: str = "") -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else (
            f"PUB {subject} {len(payload)}\r\n"
        )
        self._write(head.encode() + payload + b"\r\n")

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    async def request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JetStream API request; its JSON answer, or LogError with the server's reason."""
        reply = f"{self.inbox}.api"
        self.send(subject, json.dumps(body).encode(), reply)
        await self.flush()
        while True:
            frames = await self._frames()
            for to, _, headers, payload in frames:
                if to != reply:
                    continue  # a message of a pull that was still under way
                if b" 503" in headers[:16]:
                    raise LogError(f"{subject}: no JetStream responder")
                answer: dict[str, Any] = json.loads(payload)
                error = answer.get("error")
                if error:
                    raise LogError(f"{subject}: {error.get('description', error)}")
                return answer

    async def pull(
        self,
        next_subject: str,
        wanted: int,
        batch: int,
        stop: int | None,
        keep: Callable[[str], bool] | None,
        make: _Make[T],
    ) -> AsyncIterator[list[T]]:
        """``wanted`` messages of a consumer, with three pull requests kept in flight;
        what ``make`` makes of those whose subject ``keep`` accepts (all when None)."""
        reply = f"{self.inbox}.pull"
        ahead = 3 * batch
        requested = received = 0
        delivered = 1
        while received < wanted:
            while requested < wanted and requested - received < ahead:
                size = min(batch, wanted - requested)
                body = b'{"batch":%d,"expires":%d}' % (size, _PULL_EXPIRES_NS)
                self.send(next_subject, body, reply)
                requested += size
            await self.flush()
            items: list[T] = []
            for subject, ack, headers, payload in await self._frames():
                if not ack:
                    if headers[9:12] == b"100":  # a heartbeat
                        continue
                    raise LogError(f"pull from {next_subject} ended: {headers.decode().strip()}")
                seq, dseq, stamp = _ack_fields(ack)
                if dseq != delivered:
                    raise LogError(f"gap in the scan at sequence {seq}: message {dseq} of the "
                                   f"consumer, expected {delivered}")
                delivered += 1
                received += 1
                if stop is not None and seq > stop:
                    received = wanted
                    break
                if keep is None or keep(subject):
                    item = make(seq, subject, stamp, headers, payload)
                    if item is not None:
                        items.append(item)
                if received == wanted:
                    break
            yield items

    async def _frames(self) -> list[tuple[str, bytes, bytes, bytes]]:
        """The whole frames in the buffer after one read: (subject, reply, headers, body)."""
        out: list[tuple[str, bytes, bytes, bytes]] = []
        while not out:
            data = await self._read()
            buf, pos, end = self.buffer + data, 0, 0
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                op = buf[pos : pos + 4]
                if op == b"HMSG" or op[:3] == b"MSG":
                    parts = buf[pos:nl].split(b" ")
                    has_headers = op == b"HMSG"
                    total = int(parts[-1])
                    head = int(parts[-2]) if has_headers else 0
                    end = nl + 2 + total + 2
                    if end > len(buf):
                        break
                    reply_index = 4 if has_headers else 3
                    reply = parts[3] if len(parts) > reply_index else b""
                    body = nl + 2
                    out.append((parts[1].decode(), reply, buf[body : body + head],
                                buf[body + head : body + total]))
                    pos = end
                    continue
                if op == b"PING":
                    self._write(b"PONG\r\n")
                elif op == b"-ERR":
                    raise LogError(f"NATS: {buf[pos:nl].decode()}")
                pos = nl + 2
            self.buffer = buf[pos:]
        return out

    async def _read(self) -> bytes:
        assert self.reader is not None
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 20), _TIMEOUT_S)
        except TimeoutError as exc:
            raise LogError(f"NATS at {self.url}: no answer for {_TIMEOUT_S:.0f} s") from exc
        if not data:
            raise LogError(f"NATS at {self.url} closed the connection")
        return data

    async def _line(self) -> bytes:
        assert self.reader is not None
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n"), _TIMEOUT_S)

    def _write(self, data: bytes) -> None:
        if self.writer is None:
            raise LogError(f"NATS at {self.url}: not connected")
        self.writer.write(data)


def _ack_fields(reply: bytes) -> tuple[int, int, int]:
    """(stream sequence, delivery sequence, time in ns) from a JetStream reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>``, or the
    newer form with domain and account hash after ``ACK`` and a token at the end.
    """
    tokens = reply.split(b".")
    at = 5 if len(tokens) == 9 else 7
    return int(tokens[at]), int(tokens[at + 1]), int(tokens[at + 2])


def _headers(raw: bytes) -> dict[str, str]:
    """A header block (the ``NATS/1.0`` line, then ``Name: value`` lines) as a dict."""
    if not raw:
        return {}
    lines = raw.decode().split("\r\n")[1:]
    return {name.strip(): value.strip() for name, sep, value in map(_colon, lines) if sep}


def _colon(line: str) -> tuple[str, str, str]:
    return line.partition(":")
