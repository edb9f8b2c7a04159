"""DNS names of VMs end to end on loopback: the gateway, the projector, the ``dns`` service
and a real knotd, asked with dig. Namespaces would add nothing here: the server answers
on ``::1`` whatever the VMs' addresses are."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from tests.capabilities import missing
from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway, system
from tests.namespace_cloud import cancelled
from ucloud import events as ev
from ucloud.cli.up_cmd import embedded_knot
from ucloud.config import Config
from ucloud.dns import service as dns_service
from ucloud.dns.records import Rr, records
from ucloud.ids import new_id
from ucloud.servers import EmbeddedKnot, free_port
from ucloud.services import ServiceContext

pytestmark = [pytest.mark.servers]

POOL = "fd75:636c:6f75::/48"


@pytest.fixture
def dns_config(config: Config, tmp_path: Path) -> Config:
    base = gateway_config(config, tmp_path)
    dns = msgspec.structs.replace(
        base.dns, enabled=True, zones=["vm.test"], max_names_per_user=2,
        server=f"[::1]:{free_port('::1')}",
    )
    network = msgspec.structs.replace(base.network, prefix_pool=POOL)
    return msgspec.structs.replace(base, data_dir=str(tmp_path / "data"), dns=dns,
                                   network=network)


@pytest.fixture
def knot(dns_config: Config) -> Iterator[EmbeddedKnot]:
    for tool in ("knotd", "dig"):
        if shutil.which(tool) is None:  # a failure under UCLOUD_REQUIRE_CAPABILITIES=1
            missing(f"{tool} is not installed (scripts/setup --test installs knot and "
                    "bind9-dnsutils)")
    server = embedded_knot(dns_config).start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def dns_running(gw: Running) -> AsyncIterator[asyncio.Task[None]]:
    ctx = ServiceContext(config=gw.config, log=gw.log, store=gw.store, name="dns")
    task = asyncio.create_task(dns_service.run(ctx))
    try:
        yield task
    finally:
        await cancelled(task)


def dig(config: Config, *query: str) -> str:
    host, _, port = config.dns.server.rpartition(":")
    done = subprocess.run(
        ["dig", f"@{host.strip('[]')}", "-p", port, "+short", "+tries=1", "+time=2", *query],
        capture_output=True, text=True, timeout=10, check=True,
    )
    return done.stdout.strip()


async def answers(config: Config, want: str, *query: str) -> str:
    """What dig says once it says ``want`` (the service applies changes as it reads them)."""
    deadline = time.monotonic() + 15
    while True:
        said = await asyncio.to_thread(dig, config, *query)
        if said == want or time.monotonic() > deadline:
            return said
        await asyncio.sleep(0.1)


async def vm_with_address(gw: Running, user: User, name: str) -> tuple[str, str]:
    net = new_id()
    prefix = f"fd75:636c:6f75:{int(net[-4:], 16):x}::/64"
    await gw.append(
        ev.NetRequested(**system(), net=net, owner=user.name, name=f"lan-{name}", ipam="auto"),
        ev.NetCreated(**system(), net=net, vni=4096 + int(net[-4:], 16), prefix=prefix,
                      ipam="auto"),
    )
    client = gw.client(user)
    body = {"name": name, "cpu": 1, "ram": "1G", "ssd": 1, "image": "debian",
            "networks": [f"lan-{name}"]}
    answer = await client.post("/v1/vms", json=body)
    assert answer.status_code == 202, answer.text
    vm = answer.json()
    return vm["id"], vm["nics"][0]["address"]


async def test_names_answer_at_the_server_and_follow_the_rules(
    dns_config: Config, knot: EmbeddedKnot
) -> None:
    async with running_gateway(dns_config) as gw, dns_running(gw):
        alice, bob = await gw.new_user("alice"), await gw.new_user("bob")
        await gw.image("alice", "debian", public=True)
        vm, address = await vm_with_address(gw, alice, "web")
        client = gw.client(alice)

        added = await client.post(f"/v1/vms/{vm}/dns", json={"name": "web.alice.vm.test"})
        assert added.status_code == 200, added.text
        assert added.json()["dns"] == ["web.alice.vm.test"]
        assert await answers(dns_config, address, "AAAA", "web.alice.vm.test") == address
        reverse = "web.alice.vm.test."
        assert await answers(dns_config, reverse, "-x", address) == reverse

        ptr = await client.put(f"/v1/vms/{vm}/ptr",
                               json={"address": address, "name": "www.example.net"})
        assert ptr.status_code == 200, ptr.text
        assert ptr.json()["nics"][0]["ptr"] == "www.example.net"
        assert await answers(dns_config, "www.example.net.", "-x", address) == "www.example.net."
        foreign = await client.put(f"/v1/vms/{vm}/ptr",
                                   json={"address": "2001:db8::1", "name": "x.example.net"})
        assert foreign.status_code == 400 and foreign.json()["field"] == "address"

        # taken by another user: refused, naming the field
        assert (await client.post(f"/v1/vms/{vm}/dns", json={"name": "www.vm.test"})).is_success
        bobs, _ = await vm_with_address(gw, bob, "db")
        taken = await gw.client(bob).post(f"/v1/vms/{bobs}/dns", json={"name": "WWW.vm.test."})
        assert taken.status_code == 409 and taken.json()["field"] == "name", taken.text
        theirs = await gw.client(bob).post(f"/v1/vms/{bobs}/dns",
                                           json={"name": "db.alice.vm.test"})
        assert theirs.status_code == 400, theirs.text
        elsewhere = await gw.client(bob).post(f"/v1/vms/{bobs}/dns", json={"name": "db.example"})
        assert elsewhere.status_code == 400 and "vm.test" in elsewhere.json()["error"]
        # the limit (2 per user)
        over = await client.post(f"/v1/vms/{vm}/dns", json={"name": "three.vm.test"})
        assert over.status_code == 409 and "max_names_per_user" in over.json()["error"]

        gone = await client.delete(f"/v1/vms/{vm}/dns/www.vm.test")
        assert gone.status_code == 200 and gone.json()["dns"] == ["web.alice.vm.test"]
        assert await answers(dns_config, "", "AAAA", "www.vm.test") == ""
        mine = await gw.client(bob).post(f"/v1/vms/{bobs}/dns", json={"name": "www.vm.test"})
        assert mine.status_code == 200, mine.text

        events = (await client.get(f"/v1/vms/{vm}/events")).json()
        kinds = [line["type"] for line in events]
        assert {"vm.dns_name_added", "vm.dns_name_removed", "vm.ptr_set"} <= set(kinds)
        assert all(line["actor"] == "alice" for line in events if line["type"].startswith(
            ("vm.dns", "vm.ptr")))


async def test_a_zone_is_rebuilt_from_the_log(dns_config: Config, knot: EmbeddedKnot) -> None:
    async with running_gateway(dns_config) as gw:
        alice = await gw.new_user("alice")
        await gw.image("alice", "debian", public=True)
        vm, address = await vm_with_address(gw, alice, "web")
        client = gw.client(alice)
        assert (await client.post(f"/v1/vms/{vm}/dns", json={"name": "web.alice.vm.test"}))
        async with dns_running(gw):
            assert await answers(dns_config, address, "AAAA", "web.alice.vm.test") == address
        # the zone drifts while the service is down: a record lost, a stray one added
        server = dns_service.zone_server(dns_config)
        stray = Rr("stray.vm.test.", "AAAA", "2001:db8::dead")
        await server.change("vm.test", [stray], [Rr("web.alice.vm.test.", "AAAA", address)], 60)
        assert await answers(dns_config, "", "AAAA", "web.alice.vm.test") == ""
        async with dns_running(gw):
            assert await answers(dns_config, address, "AAAA", "web.alice.vm.test") == address
            assert await answers(dns_config, "", "AAAA", "stray.vm.test") == ""
        # what the server holds is exactly the fold of the log
        sync = dns_service.ZoneSync(server, dns_service.zones_of(dns_config), 60)
        async for batch in gw.log.read(1):
            for record in batch:
                sync.apply(record.seq, record.event())
        want = records(sync.fold, sync.zones)
        for zone, rrs in want.items():
            assert await server.records(zone) == rrs, zone
        assert want["vm.test"] == {Rr("web.alice.vm.test.", "AAAA", address)}
