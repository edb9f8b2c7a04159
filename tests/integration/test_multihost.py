"""Three hosts in network namespaces on an IPv6 underlay, each with its own hostd process.

Host 1 is the router (drained: no VMs); hosts 2 and 3 run VMs. nats-server and etcd listen
on the underlay address of the test's own namespace; the gateway, projector, netalloc,
scheduler and dispatcher run in this process. Networks reach across hosts as VXLANs on
IPv6 multicast. Guests are ``tiny`` VMs under QEMU where booting one proves something, and
namespace guests (a veth with a VM's MAC, plugged by the plumbing like a tap) where a
guest must send something on command: the tiny guest has no input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.gateway_harness import User
from tests.multihost import (
    Cluster,
    Host,
    Namespace,
    guest,
    ping,
    running_cluster,
    send_router_advert,
)
from tests.namespace_cloud import shared_tiny
from ucloud.hostd.network import bridge_name, router_address, vxlan_name
from ucloud.hostd.plumbing import NicPlan
from ucloud.ids import new_id
from ucloud.net_addr import eui64, link_local

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(600)]


async def until(check: Callable[[], Any], timeout: float, what: str, cluster: Cluster) -> Any:
    """Poll ``check`` (blocking; run in a thread) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        cluster.check()
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path_factory.mktemp("multihost")) as running:
        admin = running.gw.client(running.gw.admin)
        wanted = {host.id for host in running.hosts}

        async def all_up() -> bool:
            hosts = (await admin.get("/v1/hosts")).json()
            return {h["id"] for h in hosts if h["state"] == "up"} >= wanted

        deadline = time.monotonic() + 90
        while not await all_up():
            running.check()
            assert time.monotonic() < deadline, "the hosts did not come up"
            await asyncio.sleep(0.3)
        router = running.hosts[0]
        assert (await admin.post(f"/v1/hosts/{router.id}/drain")).status_code == 202
        yield running


@pytest.fixture(scope="module")
async def alice(cluster: Cluster) -> User:
    return await cluster.gw.new_user("alice")


@pytest.fixture(scope="module")
async def tiny(cluster: Cluster) -> str:
    """The tiny guest image, public, in the store every host reads."""
    return await shared_tiny(cluster)


async def network(cluster: Cluster, user: User, name: str, ipam: str = "auto") -> dict[str, Any]:
    client = cluster.gw.client(user)
    answer = await client.post("/v1/networks", json={"name": name, "ipam": ipam})
    assert answer.status_code == 202, answer.text

    async def created() -> dict[str, Any] | None:
        view: dict[str, Any] = (await client.get(f"/v1/networks/{name}")).json()
        return view if view["status"] == "created" else None

    deadline = time.monotonic() + 20
    while (view := await created()) is None:
        assert time.monotonic() < deadline, f"network {name} was not created"
        await asyncio.sleep(0.1)
    return view


async def plug(cluster: Cluster, host: Host, net: dict[str, Any], role: str
               ) -> tuple[Namespace, NicPlan]:
    """A namespace guest on ``net`` at ``host``, its port plugged by the plumbing."""
    mac = ":".join(f"{b:02x}" for b in (0x02, *secrets.token_bytes(5)))
    nic = NicPlan(vm=new_id(), index=0, network=net["id"], vni=net["vni"], prefix=net["prefix"],
                  ipam=net["ipam"], mac=mac)
    space = await asyncio.to_thread(guest, cluster.made, host.space, role, mac, nic.tap)
    await asyncio.to_thread(host.attach, nic)
    return space, nic


async def slaac(cluster: Cluster, space: Namespace, nic: NicPlan) -> str:
    """Wait until the guest has exactly its EUI-64 address (from the router's adverts)."""
    address = eui64(nic.prefix, nic.mac)
    await until(lambda: space.addresses("eth0") == [address], 60,
                f"SLAAC of {address} in {space.name}", cluster)
    return address


def links_of(host: Host, vni: int) -> list[str]:
    return [n for n in host.space.links() if n in (bridge_name(vni), vxlan_name(vni))]


async def delete_network(cluster: Cluster, user: User, net: dict[str, Any]) -> None:
    client = cluster.gw.client(user)
    answer = await client.delete(f"/v1/networks/{net['id']}")
    assert answer.status_code == 202, answer.text

    async def gone() -> bool:
        return (await client.get(f"/v1/networks/{net['id']}")).status_code == 404

    deadline = time.monotonic() + 20
    while not await gone():
        assert time.monotonic() < deadline, "the network was not deleted"
        await asyncio.sleep(0.1)
    # the router lets go of it, and no host keeps a link of it
    for host in cluster.hosts:
        await until(lambda h=host: links_of(h, net["vni"]) == [], 30,  # type: ignore[misc]
                    f"no link of vni {net['vni']} on {host.id}", cluster)


async def test_two_networks_stay_isolated(cluster: Cluster, alice: User) -> None:
    a = await network(cluster, alice, "iso-a")
    b = await network(cluster, alice, "iso-b")
    _, h2, h3 = cluster.hosts
    ga2, na2 = await plug(cluster, h2, a, "ia2")
    ga3, na3 = await plug(cluster, h3, a, "ia3")
    gb3, nb3 = await plug(cluster, h3, b, "ib3")
    # each gets exactly its EUI-64 address, from the router's adverts across the underlay
    a3 = await slaac(cluster, ga3, na3)
    await slaac(cluster, ga2, na2)
    b3 = await slaac(cluster, gb3, nb3)
    assert await asyncio.to_thread(ping, ga2, a3, tries=3)  # one network, two hosts
    assert await asyncio.to_thread(ping, ga2, f"{link_local(na3.mac)}%eth0", tries=3)
    # the other network is another layer 2: not on this host, not on another one
    assert not await asyncio.to_thread(ping, gb3, f"{link_local(na3.mac)}%eth0", tries=2)
    assert not await asyncio.to_thread(ping, ga2, f"{link_local(nb3.mac)}%eth0", tries=2)
    assert not await asyncio.to_thread(ping, ga2, b3, tries=2)  # the router does not forward
    assert ipaddress.IPv6Address(b3) in ipaddress.IPv6Network(b["prefix"])
    for host, nic in ((h2, na2), (h3, na3), (h3, nb3)):
        await asyncio.to_thread(host.detach, nic)
    for net in (a, b):
        await delete_network(cluster, alice, net)


async def test_a_spoofing_guest_is_dropped(cluster: Cluster, alice: User) -> None:
    net = await network(cluster, alice, "spoof")
    _, h2, h3 = cluster.hosts
    g2, n2 = await plug(cluster, h2, net, "sp2")
    g3, n3 = await plug(cluster, h3, net, "sp3")
    a2, a3 = await slaac(cluster, g2, n2), await slaac(cluster, g3, n3)
    assert await asyncio.to_thread(ping, g2, a3, tries=3)

    spoofed = str(ipaddress.IPv6Network(net["prefix"]).network_address + 0xBAD)
    await asyncio.to_thread(g2.sh, "ip", "-6", "addr", "add", f"{spoofed}/64", "dev", "eth0",
                            "nodad")
    assert not await asyncio.to_thread(ping, g2, a3, source=spoofed, tries=2)
    assert await asyncio.to_thread(ping, g2, a3, source=a2, tries=3)

    await asyncio.to_thread(g2.sh, "ip", "link", "set", "eth0", "address", "02:00:00:00:66:66")
    for space in (g2, g3):
        await asyncio.to_thread(space.sh, "ip", "-6", "neigh", "flush", "dev", "eth0")
    assert not await asyncio.to_thread(ping, g2, a3, source=a2, tries=2)
    await asyncio.to_thread(g2.sh, "ip", "link", "set", "eth0", "address", n2.mac)
    assert await asyncio.to_thread(ping, g2, a3, source=a2, tries=3)

    await asyncio.to_thread(g2.call, send_router_advert, "fd66:6:6:6::/64")
    await asyncio.sleep(3)
    assert await asyncio.to_thread(g3.addresses, "eth0") == [a3]  # nothing from the rogue
    for host, nic in ((h2, n2), (h3, n3)):
        await asyncio.to_thread(host.detach, nic)
    await delete_network(cluster, alice, net)


async def create_vm(cluster: Cluster, user: User, name: str, net: str) -> dict[str, Any]:
    answer = await cluster.gw.client(user).post("/v1/vms", json={
        "name": name, "image": "tiny", "cpu": 1, "ram": "128M", "ssd": 1, "networks": [net]})
    assert answer.status_code == 202, answer.text
    vm: dict[str, Any] = answer.json()
    return vm


async def running(cluster: Cluster, user: User, vm: dict[str, Any]) -> dict[str, Any]:
    client = cluster.gw.client(user)
    deadline = time.monotonic() + 120
    while True:
        view: dict[str, Any] = (await client.get(f"/v1/vms/{vm['id']}")).json()
        if view["status"] == "running":
            return view
        assert view["status"] not in ("failed", "crashed"), view
        cluster.check()
        assert time.monotonic() < deadline, f"vm {vm['name']} is {view['status']}"
        await asyncio.sleep(0.3)


@pytest.mark.qemu
async def test_vms_on_two_hosts_reach_each_other_at_their_eui64_addresses(
    cluster: Cluster, alice: User, tiny: str
) -> None:
    lan = await network(cluster, alice, "lan")
    vms = [await running(cluster, alice, await create_vm(cluster, alice, n, "lan"))
           for n in ("one", "two")]
    on = [cluster.host(vm["host"]) for vm in vms]
    assert on[0] is not on[1] and cluster.hosts[0] not in on  # spread; the router is drained
    addresses = [vm["nics"][0]["address"] for vm in vms]
    assert addresses == [eui64(lan["prefix"], vm["nics"][0]["mac"]) for vm in vms]
    router = cluster.hosts[0].space
    for address in addresses:  # the guests configured exactly these from the router's adverts
        await until(lambda a=address: ping(router, a), 120, f"{address} answering", cluster)
    assert router_address(lan["prefix"]) in router.addresses(bridge_name(lan["vni"]))
    # each VM from a port on the other VM's host, across the underlay
    near_two, near_one = await plug(cluster, on[1], lan, "vx1"), await plug(cluster, on[0], lan,
                                                                            "vx2")
    for (space, nic), target in ((near_two, addresses[0]), (near_one, addresses[1])):
        await slaac(cluster, space, nic)
        assert await asyncio.to_thread(ping, space, target, tries=5)
    for host, (_, nic) in ((on[1], near_two), (on[0], near_one)):
        await asyncio.to_thread(host.detach, nic)


@pytest.mark.qemu
async def test_network_delete_is_refused_while_attached_then_leaves_no_link(
    cluster: Cluster, alice: User, tiny: str
) -> None:
    net = await network(cluster, alice, "doomed")
    vm = await running(cluster, alice, await create_vm(cluster, alice, "attached", "doomed"))
    host = cluster.host(vm["host"])
    assert links_of(host, net["vni"]) == [bridge_name(net["vni"]), vxlan_name(net["vni"])]
    client = cluster.gw.client(alice)
    refused = await client.delete("/v1/networks/doomed")
    assert refused.status_code == 409
    assert refused.json()["error"] == "1 VM(s) are attached to network doomed: attached"
    assert (await client.delete(f"/v1/vms/{vm['id']}")).status_code == 202

    async def vm_gone() -> bool:
        return (await client.get(f"/v1/vms/{vm['id']}")).status_code == 404

    deadline = time.monotonic() + 60
    while not await vm_gone():
        cluster.check()
        assert time.monotonic() < deadline, "the VM was not deleted"
        await asyncio.sleep(0.3)
    await delete_network(cluster, alice, net)
