"""The metadata server of this host (``ucloud serve metadata`` runs it on every host).

It keeps two in-memory views current by etcd watches, the projection (``Mirror``: VMs,
networks, users with their keys, ``idx/mac``) and the user data under the secrets prefix,
and answers every request from them: no etcd read per request. It listens on
``fe80::a9fe:a9fe`` of each VM bridge of this host (``links``) and, when
``metadata.address`` is set, on that global address too. Each request is identified by
its source address and arrival bridge (``identify``); refusals are answered 403 and
logged (at most one line per source and reason every ``LOG_EVERY_S``).

The service around it (``service.run``) also removes the user data of deleted VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ucloud.config import Config
from ucloud.metadata import METADATA_ADDRESS, userdata
from ucloud.metadata.documents import Facts, Reply, answer, forbidden, keys_of
from ucloud.metadata.http import Arrival, MetadataProtocol, fixed, tcp_listener
from ucloud.metadata.identify import Refusal, identify
from ucloud.metadata.links import Bridge, HostLinks, arrival_index, plan
from ucloud.projections.mirror import Mirror
from ucloud.projections.views import NetView, VmView
from ucloud.store import Store

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
_THROTTLE_KEYS = 4096


class MirrorDirectory:
    """``identify``'s view of the projection: the mirror's dictionaries."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def vm_of_mac(self, mac: str) -> VmView | None:
        vm = self.mirror.macs.get(mac)
        entry = self.mirror.vms.get(vm) if vm is not None else None
        return entry.view if entry is not None else None

    def net(self, net: str) -> NetView | None:
        entry = self.mirror.nets.get(net)
        return entry.view if entry is not None else None


class Throttle:
    """At most one event per key every ``every_s`` seconds; counts what it held back."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, key: tuple[str, str], now: float) -> int | None:
        """None: hold back; else how many were held back since the last one let through."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= _THROTTLE_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0


class MetadataService:
    """The answers (``handle``) and the listeners of one host's metadata service."""

    def __init__(
        self,
        config: Config,
        mirror: Mirror,
        user_data: userdata.UserData,
        links: HostLinks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.mirror = mirror
        self.user_data = user_data
        self.links = links or HostLinks()
        self.clock = clock
        self.directory = MirrorDirectory(mirror)
        self.listening: dict[str, Bridge] = {}  # bridge name -> bridge
        self.by_index: dict[int, Bridge] = {}  # ifindex -> bridge (arrival of global requests)
        self._servers: dict[str, asyncio.Server] = {}
        self._throttle = Throttle(LOG_EVERY_S)
        self._complained: set[tuple[str, int]] = set()
        self.ready = asyncio.Event()  # set after the first look at the bridges
        self.served = 0
        self.refused = 0

    @classmethod
    async def open(cls, config: Config, store: Store) -> MetadataService:
        mirror = Mirror(store, config.etcd.prefix, name="metadata-mirror")
        user_data = userdata.UserData(store, config.etcd.secrets_prefix)
        await mirror.start()
        try:
            await user_data.start()
        except BaseException:
            await mirror.stop()
            raise
        return cls(config, mirror, user_data)

    async def close(self) -> None:
        for name in list(self._servers):
            self._stop_listening(name)
        await self.user_data.stop()
        await self.mirror.stop()

    # --- answers ---

    def handle(self, method: str, path: str, source: str, arrival: int | None) -> Reply:
        """The reply to one request (synchronous: everything is in memory)."""
        caller = identify(source, arrival, self.directory)
        if isinstance(caller, Refusal):
            self.refused += 1
            self._log_refusal(method, path, source, arrival, caller)
            return forbidden()
        vm = caller.vm
        owner = self.mirror.users.get(vm.owner)
        nets: dict[str, NetView] = {}
        for nic in vm.nics:
            net = self.directory.net(nic.network)
            if net is not None:
                nets[nic.network] = net
        facts = Facts(
            vm=vm, keys=keys_of(vm, owner.view if owner is not None else None), nets=nets,
            user_data=self.user_data.by_vm.get(vm.id),
        )
        self.served += 1
        return answer(method, path, facts)

    async def gather(self) -> list[Metric]:
        """The requests answered and refused so far, for /metrics."""
        requests = CounterMetricFamily(
            "ucloud_metadata_requests", "Metadata requests, by outcome (answered: from a VM; "
            "refused: not from the VM port its address claims, answered 403).",
            labels=["outcome"],
        )
        requests.add_metric(["answered"], self.served)
        requests.add_metric(["refused"], self.refused)
        bridges = GaugeMetricFamily(
            "ucloud_metadata_bridges", "VM bridges the metadata service listens on.",
            value=len(self.listening),
        )
        return [requests, bridges]

    def _log_refusal(
        self, method: str, path: str, source: str, arrival: int | None, refusal: Refusal
    ) -> None:
        held = self._throttle.allow((source, refusal.reason), self.clock())
        if held is None:
            return
        where = f"br{arrival}" if arrival is not None else "a link that is not a VM bridge"
        more = f" ({held} more like it held back)" if held else ""
        log.warning(
            "metadata: refused %s %s from %s on %s: %s%s",
            method, path[:200], source, where, refusal.reason, more,
        )

    # --- listeners ---

    async def follow_bridges(self) -> None:
        """Listen on the VM bridges of this host as they come and go; runs until cancelled."""
        poll = self.config.metadata.bridge_poll_s
        while True:
            nets_version = self.mirror.nets.version
            try:
                await self.reconcile()
            except Exception as exc:  # noqa: BLE001 - netlink hiccups: keep what listens
                log.warning("metadata: looking at the bridges failed: %s", exc)
            self.ready.set()
            deadline = self.clock() + poll
            while self.mirror.nets.version == nets_version:
                left = deadline - self.clock()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.mirror.changed(), left)

    async def reconcile(self) -> None:
        """Look at the bridges once: start and stop listeners as ``links.plan`` says."""
        vnis = {e.view.vni for e in self.mirror.nets.all() if e.view.vni}
        links = await asyncio.to_thread(self.links.links) if vnis or self.listening else []
        decided = plan(links, vnis, self.listening)
        for name in decided.close:
            self._stop_listening(name)
        wanted = list(self.listening.values()) + list(decided.open)
        if wanted:
            failures = await asyncio.to_thread(
                self.links.ensure_address, [b.index for b in wanted]
            )
            names = {b.index: b.name for b in wanted}
            for index, exc in failures:
                self._complain(names[index], index, f"cannot add {METADATA_ADDRESS}: {exc}")
        for bridge in decided.open:
            await self._listen(bridge)

    async def _listen(self, bridge: Bridge) -> None:
        port = self.config.metadata.port
        try:
            sock = tcp_listener(METADATA_ADDRESS, port, bridge.index, freebind=True)
        except OSError as exc:
            self._complain(bridge.name, bridge.index, f"cannot listen on port {port}: {exc}")
            return
        server = await self._serve(sock, fixed(bridge.vni))
        self._servers[bridge.name] = server
        self.listening[bridge.name] = bridge
        self.by_index[bridge.index] = bridge
        log.info("metadata: listening on [%s%%%s]:%d", METADATA_ADDRESS, bridge.name, port)

    def _stop_listening(self, name: str) -> None:
        server = self._servers.pop(name, None)
        bridge = self.listening.pop(name, None)
        if bridge is not None and self.by_index.get(bridge.index) == bridge:
            del self.by_index[bridge.index]
        if server is not None:
            server.close()
            log.info("metadata: no longer listening on %s", name)

    async def serve_global(self) -> None:
        """Listen on ``metadata.address`` for all bridges; runs until cancelled."""
        address, port = self.config.metadata.address, self.config.metadata.port
        sock = tcp_listener(address, port, freebind=True)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        server = await self._serve(sock, self._arrival_of)
        log.info("metadata: listening on [%s]:%d", address, port)
        try:
            await asyncio.Future()
        finally:
            server.close()

    def _arrival_of(self, sock: socket.socket) -> int | None:
        index = arrival_index(sock)
        bridge = self.by_index.get(index) if index is not None else None
        return bridge.vni if bridge is not None else None

    async def _serve(self, sock: socket.socket, arrival: Arrival) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: MetadataProtocol(self.handle, arrival), sock=sock, backlog=1024
        )

    def _complain(self, name: str, index: int, reason: str) -> None:
        if (name, index) not in self._complained:
            self._complained.add((name, index))
            log.warning("metadata: %s: %s", name, reason)

