"""Retries that cannot duplicate: the ``Idempotency-Key`` header of non-idempotent requests.

A client whose connection broke after the gateway appended does not know whether its VM
exists. It retries with the key it sent the first time, and the gateway answers the first
answer again and appends nothing.

Theory of operation. The record of a key lives in etcd (under the secrets prefix, not in the
event log: an answer may hold a TOTP secret) on a lease of a day, so it expires by itself
and every gateway sees it. A key is scoped by the authenticated user and by method and path:
user A's key never answers user B. The record holds the fingerprint of the body, the
request's *seed* (a fresh id the first arrival draws) and, once answered, the answer.

- No record: claim it (an etcd transaction guarded by its absence) and run the request
  with the seed; the ids of what it appends derive from the seed (``Call.new_id``).
- Answered, same body: the stored answer, with ``Idempotent-Replayed: true``.
- Different body: 422 naming the header; nothing is run.
- In flight (claimed, not answered): wait for the answer as long as the first request may
  wait for the projection (``gateway.read_your_writes_s``) and ``WAIT_MARGIN_S`` more, then
  409 with ``Retry-After`` ("in progress, retry").
- Open: the request failed without an answer worth keeping (a refusal, an unavailable
  backend, a projection that did not catch up) or its gateway died (a claim older than
  ``STALE_MS``). The next retry takes the claim over (guarded by the value it read) and
  runs again *with the same seed*: whatever the first run appended has the same ids, and
  the log keeps one copy (JetStream's duplicate window, and the append's search for its
  own event past it).

A claimed request runs to its end even when its client goes away, so a cut connection
still leaves the answer for the retry. ``judge`` is the pure decision; ``idempotent`` is
the one wrapper every non-idempotent endpoint is declared through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any, Literal

import msgspec

from ucloud.errors import InputError, Refused
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, encode
from ucloud.gateway.state import Gateway
from ucloud.ids import new_id
from ucloud.projections.ops import Put
from ucloud.store import Guard, Store

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
TTL_S = 24 * 3600
STALE_MS = 60_000  # a claim this old belongs to a gateway that died: take it over
WAIT_MARGIN_S = 5.0  # a retry waits for the first answer as long as the first may take
POLL_S = 0.1
MAX_KEY = 255

Verdict = Literal["run", "replay", "mismatch", "wait"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    seed: str  # the ids of what the request appends derive from it
    started_ms: int  # 0: open, any retry may run it again
    status: int = 0  # 0: not answered yet
    body: bytes = b""
    headers: dict[str, str] = {}


class KeyReused(InputError):
    status = 422


class KeyInProgress(Refused):
    retry_after_s = 1


def check_key(value: str) -> None:
    """A key is 1-255 visible ASCII characters (a UUID is the usual one)."""
    if not 0 < len(value) <= MAX_KEY or not all("!" <= c <= "~" for c in value):
        raise InputError(HEADER, f"use 1-{MAX_KEY} visible ASCII characters, e.g. a UUID")


def record_key(prefix: str, user: str, method: str, path: str, key: str) -> str:
    """The etcd key of the record: scoped by user, method and path (hashed: any characters)."""
    digest = hashlib.sha256(f"{method} {path} {key}".encode()).hexdigest()
    return f"{prefix}idempotency/{user}/{digest}"


def fingerprint(body: Any) -> str:
    """The body as decoded (defaults filled in), so equal requests match however spelled."""
    return hashlib.sha256(encode(body) if body is not None else b"").hexdigest()


def judge(record: Record | None, print_: str, now_ms: int) -> Verdict:
    """What a request with a key does, given the key's record."""
    if record is None:
        return "run"
    if record.fingerprint != print_:
        return "mismatch"
    if record.status:
        return "replay"
    if now_ms - record.started_ms > STALE_MS:
        return "run"
    return "wait"


def replayed(record: Record) -> Answer:
    body = RawJson(record.body) if record.body else None
    return Answer(record.status, body, {**record.headers, REPLAYED: "true"})


class Records:
    """The records of keys in etcd."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def read(self, key: str) -> tuple[Record | None, bytes | None]:
        raw = await self.store.get(key)
        return (None if raw is None else _decoder.decode(raw)), raw

    async def claim(self, key: str, record: Record, seen: bytes | None) -> int:
        """The lease of the claim, or 0 when another request changed the record first."""
        lease = await self.store.grant(TTL_S)
        if await self.store.commit([Put(key, _encoder.encode(record), lease)], [Guard(key, seen)]):
            return lease
        await self.store.revoke(lease)
        return 0

    async def put(self, key: str, record: Record, lease: int) -> None:
        await self.store.put(key, _encoder.encode(record), lease=lease)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


def idempotent(gw: Gateway, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` accepting an ``Idempotency-Key`` header (and saying so in its document)."""
    records = Records(gw.store)
    prefix = gw.config.etcd.secrets_prefix
    handler = endpoint.handler
    wait_s = gw.config.gateway.read_your_writes_s + WAIT_MARGIN_S
    running: set[asyncio.Task[Answer]] = set()  # claimed requests, kept until they end

    async def run(call: Call) -> Answer:
        value = call.request.headers.get(HEADER)
        if value is None:
            return await handler(call)
        check_key(value)
        request = call.request
        key = record_key(prefix, call.principal.name, request.method, request.url.path, value)
        print_ = fingerprint(call.body)
        deadline = time.monotonic() + wait_s
        while True:
            record, seen = await records.read(key)
            verdict = judge(record, print_, _now_ms())
            if verdict == "replay":
                assert record is not None
                return replayed(record)
            if verdict == "mismatch":
                raise KeyReused(HEADER, "this key was used with a different request body")
            if verdict == "run":
                mine = Record(
                    fingerprint=print_, seed=record.seed if record else new_id(),
                    started_ms=_now_ms(),
                )
                lease = await records.claim(key, mine, seen)
                if lease:
                    break
                continue
            if time.monotonic() > deadline:
                raise KeyInProgress(HEADER, "a request with this key is still in progress; retry")
            await asyncio.sleep(POLL_S)

        async def execute() -> Answer:
            try:
                answer = await handler(dataclasses.replace(call, seed=mine.seed))
            except BaseException:
                await records.put(key, msgspec.structs.replace(mine, started_ms=0), lease)
                raise
            done = msgspec.structs.replace(
                mine, status=answer.status, headers=answer.headers,
                body=b"" if answer.body is None else encode(answer.body),
            )
            await records.put(key, done, lease)
            return answer

        task = asyncio.ensure_future(execute())
        running.add(task)
        task.add_done_callback(running.discard)
        return await asyncio.shield(task)  # a client that goes away does not stop it

    return dataclasses.replace(
        endpoint, handler=run, idempotent=True,
        errors=tuple(sorted({*endpoint.errors, 400, 409, 422})),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
