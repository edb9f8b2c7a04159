"""The projection store: every etcd access of ucloud goes through this module.

It speaks etcd v3 through etcd3aio (grpc.aio). Swapping the client means changing this
file only. Keys are ``str``, values ``bytes``. The operations it carries out
(``Put``/``Delete``/``DeletePrefix``) are plain data in ``projections/ops.py``, so that
pure projection code can return them without importing this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from etcd3aio import Etcd3Client, EtcdError, prefix_range_end
from etcd3aio.kv import KVService

from ucloud.errors import StoreError
from ucloud.projections.ops import Delete, DeletePrefix, Op, Put

_PAGE = 2000




@dataclass(frozen=True, slots=True)
class Change:
    """One change seen by a watch."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Guard:
    """A transaction precondition: ``key`` holds ``value`` (``None``: does not exist)."""

    key: str
    value: bytes | None


class Store:
    """A connected etcd client."""

    def __init__(self, client: Etcd3Client) -> None:
        self._client = client

    @classmethod
    async def connect(cls, endpoints: Sequence[str]) -> Store:
        named = [_endpoint(e) for e in endpoints]
        client = Etcd3Client(named)
        target = grpc_target(named)
        if target:  # etcd3aio names every endpoint ipv4:..., which gRPC refuses for IPv6
            client._manager.target = target
        try:
            await client.connect()
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"cannot connect to etcd at {', '.join(endpoints)}: {exc}") from exc
        return cls(client)

    async def close(self) -> None:
        await self._client.close()

    @property
    def _kv(self) -> Any:
        if self._client.kv is None:
            raise StoreError("etcd client is closed")
        return self._client.kv

    async def get(self, key: str) -> bytes | None:
        try:
            resp = await self._kv.get(key)
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"etcd get {key}: {exc}") from exc
        return bytes(resp.kvs[0].value) if resp.kvs else None

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> list[tuple[str, bytes]]:
        """Every key under ``prefix`` in key order (paged, one consistent revision)."""
        out: list[tuple[str, bytes]] = []
        start = prefix.encode()
        end = prefix_range_end(start)
        revision = 0
        try:
            while True:
                resp = await self._kv.get(
                    start, end, revision=revision, limit=_PAGE, keys_only=keys_only
                )
                revision = revision or resp.header.revision
                out.extend((bytes(kv.key).decode(), bytes(kv.value)) for kv in resp.kvs)
                if not resp.more or not resp.kvs:
                    return out
                start = bytes(resp.kvs[-1].key) + b"\0"
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"etcd range {prefix}: {exc}") from exc

    async def count_prefix(self, prefix: str) -> int:
        start = prefix.encode()
        resp = await self._kv.get(start, prefix_range_end(start), count_only=True)
        return int(resp.count)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> None:
        await self.commit([Put(key, value, lease)])

    async def delete(self, key: str) -> None:
        await self.commit([Delete(key)])

    async def delete_prefix(self, prefix: str) -> None:
        await self.commit([DeletePrefix(prefix)])

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> bool:
        """Apply ``ops`` in one transaction if every guard holds; False if one did not."""
        compare = [
            KVService.txn_compare_version(g.key, 0)
            if g.value is None
            else KVService.txn_compare_value(g.key, g.value)
            for g in guards
        ]
        success = [_request(op) for op in ops]
        try:
            resp = await self._kv.txn(compare, success)
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"etcd transaction of {len(ops)} operations: {exc}") from exc
        return bool(resp.succeeded)

    async def grant(self, ttl: int) -> int:
        assert self._client.lease is not None
        resp = await self._client.lease.grant(ttl)
        return int(resp.ID)

    async def refresh(self, lease: int) -> bool:
        """Renew a lease once; False when it has already expired."""
        assert self._client.lease is not None
        resp = await self._client.lease.time_to_live(lease)
        if resp.TTL <= 0:
            return False
        call = self._client.lease.keep_alive(lease)
        try:
            async for answer in call:
                return bool(answer.TTL > 0)
        finally:
            call.cancel()
        return False

    async def revoke(self, lease: int) -> None:
        assert self._client.lease is not None
        with contextlib.suppress(EtcdError, grpc.aio.AioRpcError):
            await self._client.lease.revoke(lease)

    async def revision(self) -> int:
        resp = await self._kv.get(b"\0", count_only=True)
        return int(resp.header.revision)

    async def watch_prefix(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Change]:
        """Changes under ``prefix`` from ``start_revision`` on (0: from now), until cancelled."""
        assert self._client.watch is not None
        start = prefix.encode()
        stream = self._client.watch.watch(start, prefix_range_end(start), start_revision)
        try:
            async for response in stream:
                for event in response.events:
                    yield Change(
                        kind="delete" if event.type == 1 else "put",
                        key=bytes(event.kv.key).decode(),
                        value=bytes(event.kv.value),
                        revision=int(event.kv.mod_revision),
                    )
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]


def _request(op: Op) -> Any:
    if isinstance(op, Put):
        return KVService.txn_op_put(op.key, op.value, lease=op.lease)
    if isinstance(op, Delete):
        return KVService.txn_op_delete(op.key)
    start = op.prefix.encode()
    return KVService.txn_op_delete(start, range_end=prefix_range_end(start))


def grpc_target(endpoints: Sequence[str]) -> str:
    """The gRPC target of IPv6 endpoints (``[2001:db8::20]:2379``); "" for IPv4 ones."""
    literal = [e.startswith("[") for e in endpoints]
    if not any(literal):
        return ""
    if not all(literal):
        raise StoreError(f"etcd endpoints mix IPv6 and other addresses: {', '.join(endpoints)}")
    return "ipv6:" + ",".join(endpoints)


def _endpoint(value: str) -> str:
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            return value[len(scheme) :]
    return value


async def wait_for(store: Store, key: str, predicate: Any, timeout: float) -> bytes | None:
    """Wait until ``predicate(value)`` holds for ``key`` (value None when absent)."""
    revision = await store.revision()
    value = await store.get(key)
    if predicate(value):
        return value

    async def watch() -> bytes | None:
        async for change in store.watch_prefix(key, revision + 1):
            if change.key != key:
                continue
            current = change.value if change.kind == "put" else None
            if predicate(current):
                return current
        return None

    return await asyncio.wait_for(watch(), timeout)
