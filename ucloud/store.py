"""The projection store: every etcd access of ucloud goes through this module.

It speaks etcd v3 through etcd3aio's services (grpc.aio) on a channel of its own making
(``channel``): etcd3aio's own names every endpoint ``ipv4:``, which neither an IPv6
address nor a DNS name survives. One endpoint keeps its form (``dns:///`` for a name, so
every address of the name is balanced); several are balanced as addresses, names among
them resolved once at connect. TLS verifies every member against one name (the first
endpoint's host unless ``server_name`` says otherwise). With a user, the password is read
from its file, a token is obtained at connect and renewed in the background. Swapping the
client means changing this file only. Keys are ``str``, values ``bytes``.
The operations it carries out (``Put``/``Delete``/``DeletePrefix``) are plain data in
``projections/ops.py``, so that pure projection code can return them without importing
this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from etcd3aio import EtcdError, prefix_range_end
from etcd3aio.auth import AuthService, TokenRefresher
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService
from etcd3aio.watch import WatchService

from ucloud.config import EtcdConfig
from ucloud.errors import StoreError
from ucloud.projections.ops import Delete, DeletePrefix, Op, Put

_PAGE = 2000
DEFAULT_PORT = 2379
TOKEN_REFRESH_S = 60.0  # etcd's simple tokens live 300 s unused, JWTs as configured
# etcd3aio's channel options: balanced members, keepalives that notice a dead one
_OPTIONS: list[tuple[str, str | int | bool]] = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", True),
    ("grpc.enable_retries", 1),
]




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


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach etcd beyond its endpoints: file paths and a user name, "" for unset.

    TLS is on when a CA file or a client certificate is given or an endpoint says
    ``https://`` (without a CA file, the system's roots verify the members).
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    user: str = ""
    password_file: str = ""

    @classmethod
    def of(cls, config: EtcdConfig) -> Access:
        return cls(config.ca_file, config.cert_file, config.key_file, config.server_name,
                   config.user, config.password_file)


class _Client:
    """etcd3aio's services on one channel, sharing the token."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.auth = AuthService(channel)
        self.kv: KVService | None = KVService(channel)
        self.lease: LeaseService | None = LeaseService(channel)
        self.watch: WatchService | None = WatchService(channel)
        self.refresher = contextlib.AsyncExitStack()

    def set_token(self, token: str | None) -> None:
        for service in (self.auth, self.kv, self.lease, self.watch):
            if service is not None:
                service.set_token(token)

    async def close(self) -> None:
        await self.refresher.aclose()
        await self.channel.close()
        self.kv = self.lease = self.watch = None


class Store:
    """A connected etcd client."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    @classmethod
    async def open(cls, config: EtcdConfig) -> Store:
        """Connect with every setting of the ``[etcd]`` section."""
        return await cls.connect(config.endpoints, Access.of(config))

    @classmethod
    async def connect(cls, endpoints: Sequence[str], access: Access | None = None) -> Store:
        access = access or Access()
        where = ", ".join(endpoints)
        secure = bool(access.ca_file or access.cert_file) or any(
            e.startswith("https://") for e in endpoints
        )
        named = [_endpoint(e) for e in endpoints]
        target = grpc_target(named)
        options = list(_OPTIONS)
        if secure:
            options.append(("grpc.ssl_target_name_override",
                            access.server_name or _split(named[0])[0]))
            channel = grpc.aio.secure_channel(target, _credentials(access), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        client = _Client(channel)
        if access.user:
            password = _read(access.password_file, "password file").rstrip("\r\n")
            refresher = TokenRefresher(client.auth, client.set_token, access.user, password,
                                       interval=TOKEN_REFRESH_S)
            try:
                await client.refresher.enter_async_context(refresher)
            except (EtcdError, grpc.aio.AioRpcError) as exc:
                await client.close()
                reason = f"user {access.user} cannot sign in: {_why(exc)}"
                raise StoreError(f"etcd at {where}: {reason}") from exc
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
            raise StoreError(f"etcd get {key}: {_why(exc)}") from exc
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
            raise StoreError(f"etcd range {prefix}: {_why(exc)}") from exc

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
            raise StoreError(f"etcd transaction of {len(ops)} operations: {_why(exc)}") from exc
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


def _why(exc: Exception) -> str:
    """One line of a gRPC failure: its code and the server's or the channel's words."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _request(op: Op) -> Any:
    if isinstance(op, Put):
        return KVService.txn_op_put(op.key, op.value, lease=op.lease)
    if isinstance(op, Delete):
        return KVService.txn_op_delete(op.key)
    start = op.prefix.encode()
    return KVService.txn_op_delete(start, range_end=prefix_range_end(start))


def grpc_target(
    endpoints: Sequence[str], resolve: Callable[[str, int], list[str]] | None = None
) -> str:
    """The gRPC target of ``host:port`` endpoints (names, ``[IPv6]`` or IPv4 addresses).

    One name is gRPC's DNS resolver's (``dns:///``); addresses, and the addresses that
    ``resolve`` (getaddrinfo) gives names among several endpoints, are listed: ``ipv4:``
    when all are IPv4, else ``ipv6:`` with IPv4 ones mapped (``[::ffff:192.0.2.1]``).
    """
    if not endpoints:
        raise StoreError("no etcd endpoint configured")
    hosts = [_split(e) for e in endpoints]
    if len(hosts) == 1 and not _is_address(hosts[0][0]):
        return f"dns:///{hosts[0][0]}:{hosts[0][1]}"
    addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for host, port in hosts:
        found = [host] if _is_address(host) else (resolve or _resolve)(host, port)
        addresses += [(ipaddress.ip_address(a), port) for a in found]
    if all(a.version == 4 for a, _ in addresses):
        return "ipv4:" + ",".join(f"{a}:{p}" for a, p in addresses)
    return "ipv6:" + ",".join(
        f"[{a if a.version == 6 else '::ffff:' + str(a)}]:{p}" for a, p in addresses
    )


def _split(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[IPv6]:port``; the port defaults to etcd's) as (host, port)."""
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = endpoint.partition(":")
    if not host or ":" in port or (":" in host and not _is_address(host)):
        raise StoreError(f"etcd endpoint {endpoint!r} is not host:port (IPv6 in brackets)")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise StoreError(f"etcd endpoint {endpoint!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise StoreError(f"etcd endpoint {endpoint!r}: port {number} is out of range")
    return host, number


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int) -> list[str]:
    """The addresses of a name, IPv6 first."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StoreError(f"etcd endpoint {host}:{port}: {_why(exc)}") from exc
    ordered = sorted(found, key=lambda info: info[0] != socket.AF_INET6)
    return list(dict.fromkeys(str(info[4][0]) for info in ordered))


def _credentials(access: Access) -> grpc.ChannelCredentials:
    if access.key_file and not access.cert_file:
        raise StoreError("etcd key_file needs cert_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_bytes(access.ca_file, "CA file") if access.ca_file else None,
        private_key=_read_bytes(access.key_file, "key file") if access.key_file else None,
        certificate_chain=(
            _read_bytes(access.cert_file, "certificate file") if access.cert_file else None
        ),
    )


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"etcd {what} {path}: {exc.strerror or exc}") from exc


def _read(path: str, what: str) -> str:
    if not path:
        raise StoreError(f"etcd {what}: not configured (a user needs password_file)")
    try:
        return _read_bytes(path, what).decode()
    except UnicodeDecodeError as exc:
        raise StoreError(f"etcd {what} {path}: not text") from exc


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
