"""The projector against a real nats-server and etcd: views appear, a killed projector
resumes at its checkpoint, poison is recorded and skipped, two projectors take turns, and
``ucloud replay rebuild [--verify]`` through the real command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.events import Event, Nic, Resources
from ucloud.ids import new_id
from ucloud.net_addr import eui64
from ucloud.projections import projector as projector_mod
from ucloud.projections.metrics import ProjectorMetrics
from ucloud.projections.projector import Projector, wait_for_checkpoint
from ucloud.projections.rebuild import verify
from ucloud.projections.views import HostView, PoisonView, UserView, VmView
from ucloud.services import ServiceContext
from ucloud.store import Store

pytestmark = pytest.mark.servers

SMALL = Resources(cpu=1, ram_mib=512, ssd_mib=1024)
BIG = Resources(cpu=4096, ram_mib=1 << 30, ssd_mib=1 << 40)
PREFIX64 = "2001:db8:7::/64"


def env() -> dict[str, Any]:
    return {"id": new_id(), "at": datetime.now(UTC), "actor": "system:test"}


async def append_all(event_log: EventLog, events: Sequence[Event]) -> int:
    seqs = await asyncio.gather(*(event_log.append(e) for e in events))
    return max(seqs)


async def view(store: Store, config: Config, key: str, cls: type[Any]) -> Any:
    data = await store.get(config.etcd.prefix + key)
    return None if data is None else msgspec.json.decode(data, type=cls)


def vm_history(vm: str, host: str, net: str, mac: str) -> list[Event]:
    return [
        ev.VmRequested(**env(), vm=vm, owner="alice", name=f"web-{vm[-6:]}", spec=SMALL,
                       image="img", nics=(Nic(network=net, mac=mac),)),
        ev.HostVmPlaced(**env(), host=host, vm=vm, resources=SMALL),
        ev.VmScheduled(**env(), vm=vm, host=host),
        ev.VmStarted(**env(), vm=vm, host=host),
    ]


def world(host: str, net: str) -> list[Event]:
    return [
        ev.HostRegistered(**env(), host=host, capacity=BIG),
        ev.NetRequested(**env(), net=net, owner="alice", name="lan", ipam="auto"),
        ev.NetCreated(**env(), net=net, vni=4242, prefix=PREFIX64, ipam="auto"),
        ev.UserCreated(**env(), user="alice", realm="users"),
        ev.UserKeyAdded(**env(), user="alice", key="k1", name="laptop", public_key="ssh-x A"),
    ]


async def in_order(event_log: EventLog, events: Sequence[Event]) -> int:
    seq = 0
    for event in events:
        seq = await event_log.append(event)
    return seq


async def test_the_service_projects_views_and_follows(
    config: Config, event_log: EventLog, store: Store
) -> None:
    host, net, vm, mac = new_id(), new_id(), new_id(), "02:00:00:00:07:01"
    await in_order(event_log, [*world(host, net), *vm_history(vm, host, net, mac)])
    ctx = ServiceContext(config=config, log=event_log, store=store, name="projector")
    task = asyncio.create_task(projector_mod.run(ctx))
    try:
        last = await event_log.last_sequence()
        await wait_for_checkpoint(store, config.etcd.prefix, last, timeout=20)
        got: VmView = await view(store, config, f"vm/{vm}", VmView)
        assert (got.status, got.host) == ("running", host)
        assert got.nics[0].address == eui64(PREFIX64, mac)
        assert await store.get(config.etcd.prefix + f"idx/mac/{mac}") == vm.encode()
        assert await store.get(config.etcd.prefix + "idx/vni/4242") == net.encode()
        hv: HostView = await view(store, config, f"host/{host}", HostView)
        assert hv.used == SMALL and hv.vms == (vm,)
        user: UserView = await view(store, config, "user/alice", UserView)
        assert [k.id for k in user.keys] == ["k1"]
        metrics = ctx.shared.projector
        assert isinstance(metrics, ProjectorMetrics) and metrics.checkpoint == last
        assert metrics.lag(last + 5) == 5

        last = await in_order(event_log, [
            ev.VmDeleted(**env(), vm=vm, host=host),
            ev.HostVmReleased(**env(), host=host, vm=vm),
        ])
        await wait_for_checkpoint(store, config.etcd.prefix, last, timeout=20)
        assert await store.get(config.etcd.prefix + f"vm/{vm}") is None
        assert await store.get(config.etcd.prefix + f"idx/mac/{mac}") is None
        assert await store.get_prefix(config.etcd.prefix + "idx/owner/alice/vm/") == []
        hv = await view(store, config, f"host/{host}", HostView)
        assert hv.used == ev.NOTHING and hv.vms == ()
        with pytest.raises(TimeoutError, match=str(last + 1)):
            await wait_for_checkpoint(store, config.etcd.prefix, last + 1, timeout=0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_killed_projector_resumes_at_its_checkpoint(
    config: Config, event_log: EventLog, store: Store
) -> None:
    host = new_id()
    vms = [new_id() for _ in range(300)]
    first = await event_log.append(ev.HostRegistered(**env(), host=host, capacity=BIG))
    last = await in_order(event_log, [e for vm in vms for e in (
        ev.VmRequested(**env(), vm=vm, owner="bob", name=vm, spec=SMALL, image="img"),
        ev.HostVmPlaced(**env(), host=host, vm=vm, resources=SMALL),
    )])
    assert last == first + 2 * len(vms)
    prefix = config.etcd.prefix

    # Three keys per vm.requested and max_txn_ops 4: about one event per transaction,
    # slow enough to be killed in the middle.
    one = Projector(store, event_log, prefix, max_txn_ops=4)
    task = asyncio.create_task(one.run())
    await wait_for_checkpoint(store, prefix, first + 50, timeout=20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stored = int(await store.get(prefix + "_checkpoint/main") or b"0")
    assert first + 50 <= stored < last, "the projector was not killed mid-stream"

    two = Projector(store, event_log, prefix, max_txn_ops=4)
    await two.catch_up(last)
    assert two.metrics.applied == last - stored  # resumed right after the checkpoint
    hv: HostView = await view(store, config, f"host/{host}", HostView)
    assert hv.used.cpu == len(vms) and list(hv.vms) == vms
    assert len(await store.get_prefix(prefix + "idx/owner/bob/vm/")) == len(vms)
    assert await verify(store, event_log, prefix, max_txn_ops=64) == (last, [])


async def test_poison_is_recorded_and_skipped(
    config: Config, event_log: EventLog, store: Store
) -> None:
    host = new_id()
    await event_log.append(ev.HostRegistered(**env(), host=host, capacity=BIG))
    subject = f"ucloud.evt.host.{host}.up"
    bad = [
        b"{not json",
        b'{"type":"host.exploded","id":"x","at":"2026-01-01T00:00:00Z","actor":"a","host":"h"}',
        b'{"type":"host.up","id":7,"at":"yesterday","actor":"a","host":"h"}',
    ]
    seqs = [await event_log.append_raw(subject, data, {"Nats-Msg-Id": new_id()}) for data in bad]
    last = await event_log.append(ev.HostDrained(**env(), host=host))
    projector = Projector(store, event_log, config.etcd.prefix, max_txn_ops=128)
    await asyncio.wait_for(projector.catch_up(last), 20)
    for seq, reason in zip(seqs, ["JSON", "host.exploded", "Expected `str`"], strict=True):
        poison: PoisonView = await view(store, config, f"_poison/{seq}", PoisonView)
        assert (poison.seq, poison.subject, poison.seen_by) == (seq, subject, "projector")
        assert reason in poison.error
    hv: HostView = await view(store, config, f"host/{host}", HostView)
    assert hv.drained  # the event after the poison was applied
    assert (projector.metrics.poison, projector.metrics.applied) == (3, 2)


async def test_a_projector_outlives_the_consumer_of_its_read(
    config: Config, event_log: EventLog, store: Store
) -> None:
    host = new_id()
    first = await in_order(event_log, [
        ev.HostRegistered(**env(), host=host, capacity=BIG),
        *(ev.HostVmPlaced(**env(), host=host, vm=new_id(), resources=SMALL) for _ in range(5)),
    ])
    projector = Projector(store, event_log, config.etcd.prefix, max_txn_ops=16)
    task = asyncio.create_task(projector.run())
    try:
        await wait_for_checkpoint(store, config.etcd.prefix, first, timeout=20)
        consumers = await event_log.js.consumers_info(event_log.stream)
        assert len(consumers) == 1  # the follow read's
        await event_log.js.delete_consumer(event_log.stream, consumers[0].name)
        last = await in_order(event_log, [
            ev.HostVmPlaced(**env(), host=host, vm=new_id(), resources=SMALL) for _ in range(4)
        ])
        await wait_for_checkpoint(store, config.etcd.prefix, last, timeout=20)
        # the counters move just after the commit that etcd already shows
        async with asyncio.timeout(20):
            while projector.metrics.applied < last:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    hv: HostView = await view(store, config, f"host/{host}", HostView)
    assert hv.used.cpu == 9 and projector.metrics.applied == last
    assert projector.metrics.reloads == 0  # the read recovered by itself


async def test_two_projectors_take_turns(
    config: Config, event_log: EventLog, store: Store, servers: Any
) -> None:
    host, net = new_id(), new_id()
    await in_order(event_log, world(host, net))
    vms = [new_id() for _ in range(60)]
    history = [e for i, vm in enumerate(vms)
               for e in vm_history(vm, host, net, f"02:00:00:00:08:{i:02x}")]
    last = await append_all(event_log, history)
    other = await Store.connect([servers.etcd.endpoint])
    try:
        a = Projector(store, event_log, config.etcd.prefix, max_txn_ops=8)
        b = Projector(other, event_log, config.etcd.prefix, max_txn_ops=8)
        await asyncio.wait_for(asyncio.gather(a.catch_up(last), b.catch_up(last)), 60)
    finally:
        await other.close()
    assert a.metrics.applied + b.metrics.applied == last  # every event committed once
    assert a.metrics.reloads + b.metrics.reloads >= 1  # and the guard did turn one away
    hv: HostView = await view(store, config, f"host/{host}", HostView)
    assert hv.used.cpu == len(vms) and set(hv.vms) == set(vms)
    assert await verify(store, event_log, config.etcd.prefix, max_txn_ops=64) == (last, [])


async def ucloud(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ucloud.cli.main", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def config_toml(config: Config) -> str:
    return (
        f'[nats]\nurl = "{config.nats.url}"\nstream = "{config.nats.stream}"\n'
        f'subject_root = "{config.nats.subject_root}"\n'
        f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
        f'prefix = "{config.etcd.prefix}"\nmax_txn_ops = 16\n'
    )


@pytest.fixture
async def projected(config: Config, event_log: EventLog, store: Store) -> AsyncIterator[str]:
    """A small history, projected; yields the id of one VM in it."""
    host, net = new_id(), new_id()
    vms = [new_id() for _ in range(5)]
    history = world(host, net) + [
        e for i, vm in enumerate(vms) for e in vm_history(vm, host, net, f"02:00:00:00:09:{i:02x}")
    ] + [ev.VmDeleted(**env(), vm=vms[0], host=host), ev.HostVmReleased(**env(), host=host,
                                                                        vm=vms[0])]
    last = await in_order(event_log, history)
    await Projector(store, event_log, config.etcd.prefix, max_txn_ops=16).catch_up(last)
    yield vms[1]


async def test_rebuild_verify_is_clean_then_reports_tampering(
    config: Config, store: Store, projected: str, tmp_path: Path
) -> None:
    path = tmp_path / "ucloud.toml"
    path.write_text(config_toml(config))
    code, out = await ucloud("replay", "rebuild", "--verify", "--config", str(path))
    assert code == 0, out
    assert "equals a replay of sequences 1.." in out

    prefix = config.etcd.prefix
    vm = projected
    await store.put(prefix + f"vm/{vm}", b'{"tampered":true}')
    await store.delete(prefix + f"idx/owner/alice/vm/{vm}")
    await store.put(prefix + "vm/ghost", b"{}")
    code, out = await ucloud("replay", "rebuild", "--verify", "--config", str(path))
    assert code == 1, out
    assert f"different  vm/{vm}" in out and '{"tampered":true}' in out
    assert f"missing    idx/owner/alice/vm/{vm}" in out
    assert "extra      vm/ghost" in out
    assert "in 3 keys" in out
    assert await store.get_prefix(prefix.rstrip("/") + ".verify-") == []  # scratch is gone


async def test_rebuild_restores_the_live_projection_byte_for_byte(
    config: Config, store: Store, projected: str, tmp_path: Path
) -> None:
    prefix = config.etcd.prefix
    before = await store.get_prefix(prefix)
    foreign = {prefix + "alive/h1": b"1", prefix + "secret/alice": b"totp"}
    for key, value in foreign.items():
        await store.put(key, value)
    await store.put(prefix + f"vm/{projected}", b"{}")
    await store.put(prefix + "idx/mac/ff:ff:ff:ff:ff:ff", b"ghost")

    (tmp_path / "ucloud.toml").write_text(config_toml(config))
    (tmp_path / "up.json").write_text(json.dumps(
        {"nats": config.nats.url, "etcd": config.etcd.endpoints, "gateway": "http://[::1]:1"}
    ))
    code, out = await ucloud("replay", "rebuild", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert "rebuilt" in out and "events/s" in out
    after = await store.get_prefix(prefix)
    assert [kv for kv in after if kv[0] not in foreign] == before
    assert {k: v for k, v in after if k in foreign} == foreign  # other writers' keys stay


async def test_rebuild_names_a_missing_stream(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "ucloud.toml"
    path.write_text(config_toml(config).replace(config.nats.stream, "NOSUCHSTREAM"))
    code, out = await ucloud("replay", "rebuild", "--config", str(path))
    assert code == 8  # ExitCode.SERVER: the log has no such stream
    assert "no stream NOSUCHSTREAM" in out
