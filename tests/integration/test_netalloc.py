"""netalloc and the network routes against the real log, etcd and gateway.

Concurrency: several allocators settle different networks at the same time on one pool;
the log's per-aggregate concurrency must make every VNI and /64 unique.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway, system
from ucloud import events as ev
from ucloud.cli.main import main
from ucloud.config import Config, ConsumerConfig, NetworkConfig
from ucloud.consumer import run_consumer
from ucloud.eventlog import EventLog
from ucloud.gateway import routes_vms
from ucloud.handlers import netalloc
from ucloud.handlers.ipam import Pools, fold_pools
from ucloud.handlers.netalloc import NetAlloc, limits_of
from ucloud.ids import new_id
from ucloud.net_addr import eui64
from ucloud.services import ServiceContext
from ucloud.store import Store

pytestmark = pytest.mark.servers

NETWORK = NetworkConfig(vni_min=100, vni_max=163, prefix_pool="fd00:aa:bb::/58")


def with_network(config: Config, **changes: Any) -> Config:
    return msgspec.structs.replace(config, network=msgspec.structs.replace(NETWORK, **changes))


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def requested(net: str, ipam: Any = "auto") -> ev.NetRequested:
    return ev.NetRequested(**system(), net=net, owner="alice", name=f"n{net[-6:]}", ipam=ipam)


async def outcome(log: EventLog, net: str) -> ev.NetCreated | ev.NetFailed:
    stored, _ = await log.load("net", net)
    done = [s.event for s in stored if isinstance(s.event, ev.NetCreated | ev.NetFailed)]
    assert len(done) == 1, done
    assert isinstance(done[0], ev.NetCreated | ev.NetFailed)
    return done[0]


async def pools(log: EventLog) -> Pools:
    records = await log.records(netalloc.POOL_EVENTS)
    return fold_pools(Pools(), [r.event() for r in records])


async def test_concurrent_allocators_hand_out_unique_vnis_and_prefixes(
    config: Config, event_log: EventLog
) -> None:
    limits = limits_of(NETWORK)
    allocators = [NetAlloc(event_log, limits) for _ in range(3)]
    asks = [requested(new_id(), ("auto", "manual", "none")[i % 3]) for i in range(24)]
    for ask in asks:
        await event_log.append(ask, expected=0)
    await asyncio.gather(*(allocators[i % 3].settle(ask) for i, ask in enumerate(asks)))
    created = [await outcome(event_log, ask.net) for ask in asks]
    assert all(isinstance(c, ev.NetCreated) for c in created), created
    vnis = [c.vni for c in created if isinstance(c, ev.NetCreated)]
    prefixes = [c.prefix for c in created if isinstance(c, ev.NetCreated) and c.prefix]
    assert sorted(vnis) == list(range(100, 124))  # unique, and the lowest ones
    assert len(prefixes) == 16 and len(set(prefixes)) == 16
    assert all(ipaddress.IPv6Network(p).subnet_of(limits.pool) for p in prefixes)
    # conflicts happened and were resolved; a redelivery appends nothing more
    last = await event_log.last_sequence()
    await asyncio.gather(*(allocators[(i + 1) % 3].settle(ask) for i, ask in enumerate(asks)))
    assert await event_log.last_sequence() == last


async def test_two_services_share_the_work_and_exhaustion_fails(
    config: Config, store: Store
) -> None:
    config = with_network(config, vni_min=7, vni_max=10)  # four VNIs
    config = msgspec.structs.replace(config, consumer=ConsumerConfig(batch=1, backoff_s=[0.1]))
    log = await EventLog.connect(config.nats)
    await log.ensure_stream()
    tasks = []
    try:
        for name in ("netalloc-1", "netalloc-2"):
            allocator = NetAlloc(log, limits_of(config.network))
            tasks.append(asyncio.create_task(run_consumer(
                log, store, durable=netalloc.DURABLE, subjects=netalloc.SUBJECTS,
                handle=allocator.handle, settings=config.consumer,
                poison_prefix=f"{config.etcd.prefix}_poison/",
                name=name,
            )))
        asks = [requested(new_id(), "none") for _ in range(6)]
        for ask in asks:
            await log.append(ask, expected=0)

        async def all_decided() -> bool:
            for ask in asks:
                stored, _ = await log.load("net", ask.net)
                if not any(isinstance(s.event, ev.NetCreated | ev.NetFailed) for s in stored):
                    return False
            return True

        await until(all_decided)
        results = [await outcome(log, ask.net) for ask in asks]
        created = [r for r in results if isinstance(r, ev.NetCreated)]
        failed = [r for r in results if isinstance(r, ev.NetFailed)]
        assert sorted(c.vni for c in created) == [7, 8, 9, 10]
        assert len(failed) == 2 and all(f.reason == "no free VNI in 7-10" for f in failed)
        assert sorted((await pools(log)).vnis) == [7, 8, 9, 10]  # the failed hold nothing
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await log.close()


# --- the routes, with netalloc running -------------------------------------------------


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    settings = gateway_config(with_network(config), tmp_path)
    async with running_gateway(settings) as running:
        ctx = ServiceContext(config=settings, log=running.log, store=running.store,
                             name="netalloc")
        task = asyncio.create_task(netalloc.run(ctx))
        try:
            yield running
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def created(gw: Running, user: User, ident: str) -> dict[str, Any]:
    client = gw.client(user)

    async def check() -> dict[str, Any] | None:
        view: dict[str, Any] = (await client.get(f"/v1/networks/{ident}")).json()
        return view if view.get("status") == "created" else None

    result: dict[str, Any] = await until(check)
    return result


async def test_networks_create_list_show_delete(gw: Running) -> None:
    alice = await gw.new_user("alice")
    client = gw.client(alice)
    answer = await client.post("/v1/networks", json={"name": "lan", "ipam": "auto"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "requested" and answer.json()["owner"] == "alice"
    lan = await created(gw, alice, "lan")
    assert lan["ipam"] == "auto" and lan["vni"] == 100 and lan["prefix"] == "fd00:aa:bb::/64"
    l2 = (await client.post("/v1/networks", json={"name": "l2"})).json()
    l2 = await created(gw, alice, l2["id"])
    assert (l2["ipam"], l2["vni"], l2["prefix"]) == ("none", 101, "")
    listed = (await client.get("/v1/networks")).json()
    assert [n["name"] for n in listed] == ["l2", "lan"]
    assert (await client.get(f"/v1/networks/{lan['id']}")).json() == lan

    before = await gw.last_seq()
    for body, status, field in [
        ({"name": "lan"}, 409, "name"),
        ({"name": "has space"}, 400, "name"),
        ({"name": "01a1fcc3-332a-7817-92ff-b6c26b86a603"}, 400, "name"),
        ({"name": "x", "ipam": "dhcp"}, 400, "ipam"),
        ({"name": "x", "vni": 5}, 400, "vni"),
        ({"ipam": "auto"}, 400, "name"),
    ]:
        refused = await client.post("/v1/networks", json=body)
        assert refused.status_code == status, (body, refused.text)
        assert refused.json()["field"] == field
    assert await gw.last_seq() == before

    deleting = await client.delete("/v1/networks/l2")
    assert deleting.status_code == 202 and deleting.json()["status"] == "deleting"
    again = await client.delete("/v1/networks/l2")
    assert again.status_code in (202, 404)  # still going, or netalloc was quicker: gone

    async def gone() -> bool:
        return (await client.get(f"/v1/networks/{l2['id']}")).status_code == 404

    await until(gone)
    assert 101 not in (await pools(gw.log)).vnis  # released
    again = (await client.post("/v1/networks", json={"name": "l2b", "ipam": "manual"})).json()
    again = await created(gw, alice, again["id"])
    assert again["vni"] == 101 and again["prefix"] == "fd00:aa:bb:1::/64"  # reused, lowest


async def test_delete_is_refused_while_vms_are_attached(gw: Running) -> None:
    alice = await gw.new_user("alice")
    client = gw.client(alice)
    await gw.image("alice", "debian")
    net = (await client.post("/v1/networks", json={"name": "lan", "ipam": "auto"})).json()
    lan = await created(gw, alice, net["id"])
    vms = []
    for name in ("web", "db"):
        answer = await client.post("/v1/vms", json={
            "name": name, "cpu": 1, "ram": 1, "ssd": 1, "image": "debian", "networks": ["lan"]})
        assert answer.status_code == 202, answer.text
        vms.append(answer.json())
    nic = vms[0]["nics"][0]
    assert nic["network"] == lan["id"] and nic["address"] == eui64(lan["prefix"], nic["mac"])
    assert ipaddress.IPv6Address(nic["address"]) in ipaddress.IPv6Network(lan["prefix"])

    before = await gw.last_seq()
    refused = await client.delete("/v1/networks/lan")
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "2 VM(s) are attached to network lan: db, web", "field": "id"}
    assert await gw.last_seq() == before
    for vm in vms:  # what hostd appends once the VMs are gone
        await gw.append(ev.VmDeleted(**system(), vm=vm["id"]))
    assert (await client.delete("/v1/networks/lan")).status_code == 202

    async def released() -> bool:
        current = await pools(gw.log)
        return lan["vni"] not in current.vnis and lan["prefix"] not in current.prefixes

    await until(released)


async def test_networks_of_others_do_not_exist(gw: Running) -> None:
    alice, bob = await gw.new_user("alice"), await gw.new_user("bob")
    net = (await gw.client(alice).post("/v1/networks", json={"name": "lan"})).json()
    await created(gw, alice, net["id"])
    as_bob = gw.client(bob)
    before = await gw.last_seq()
    for ident in (net["id"], "lan"):
        for method in ("GET", "DELETE"):
            answer = await as_bob.request(method, f"/v1/networks/{ident}")
            assert answer.status_code == 404, (method, ident, answer.text)
            assert answer.json() == {"error": f"no network {ident}", "field": "id"}
    assert (await as_bob.get("/v1/networks")).json() == []
    assert await gw.last_seq() == before
    # bob's own network of the same name is his; the admin sees both
    assert (await as_bob.post("/v1/networks", json={"name": "lan"})).status_code == 202
    owners = [n["owner"] for n in (await gw.client(gw.admin).get("/v1/networks")).json()]
    assert owners == ["alice", "bob"]
    assert (await gw.client().get("/v1/networks")).status_code == 401


async def test_the_net_verbs_of_the_cli(
    gw: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alice = await gw.new_user("alice")
    monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("UCLOUD_URL", gw.url)
    monkeypatch.setenv("UCLOUD_TOKEN", alice.token)

    async def ucloud(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await ucloud("net", "create", "lan", "--ipam", "auto", "--wait", "-o", "json")
    assert code == 0
    lan = json.loads(out)
    assert lan["status"] == "created" and lan["vni"] == 100 and lan["ipam"] == "auto"
    code, out, _ = await ucloud("net", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "NAME", "OWNER", "STATUS", "IPAM", "VNI", "PREFIX"]
    assert out.splitlines()[1].split()[1:] == ["lan", "alice", "created", "auto", "100",
                                               "fd00:aa:bb::/64"]
    code, out, _ = await ucloud("net", "show", "lan")
    assert code == 0 and "prefix:   fd00:aa:bb::/64" in out
    code, _, err = await ucloud("net", "create", "lan")
    assert code == 4 and "name: you already have a network named lan" in err  # conflict
    code, out, _ = await ucloud("net", "delete", "lan", "--wait")
    assert code == 0 and out == ""  # piped: no progress, and a gone network prints nothing
    code, _, err = await ucloud("net", "show", "lan")
    assert code == 3 and "no network lan" in err  # not found


async def test_two_requests_picking_one_mac_at_once_get_different_ones(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await gw.new_user("alice")
    client = gw.client(alice)
    await gw.image("alice", "debian")
    await created(gw, alice, (await client.post("/v1/networks", json={"name": "lan"})).json()["id"])
    picks = iter(["02:00:00:00:00:01", "02:00:00:00:00:01", "02:00:00:00:00:02"])
    monkeypatch.setattr(routes_vms, "new_mac", lambda: next(picks))
    answers = await asyncio.gather(*(client.post("/v1/vms", json={
        "name": name, "cpu": 1, "ram": 1, "ssd": 1, "image": "debian", "networks": ["lan"]})
        for name in ("a", "b")))
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    macs = sorted(a.json()["nics"][0]["mac"] for a in answers)
    assert macs == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
