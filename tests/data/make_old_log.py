"""How tests/data/log-2026-12.jsonl and tests/data/log-2026-12.projection.json were made.

Run once, on 2026-12-02, from the repository root::

    .venv/bin/python tests/data/make_old_log.py

Never run it again to "refresh" the files: they are the guard. Events are immutable, so a
log written by the code of that day must decode and fold into the same projection with
the code of every later day (``tests/unit/test_old_log.py``,
``tests/integration/test_old_log.py``). When a new event type is added, write a new log
with a new script beside this one (``log-<month>.jsonl``) rather than editing these.

What it did: started a real nats-server and etcd in a temporary directory, appended a
story of causally sensible chains covering every event type of ``ucloud.events`` (users
and their keys, files, images, pools and networks, hosts, orders and VMs through
placement, start, stop, crash, migration, evacuation, loss, scheduling failure and
deletion) through ``EventLog.append`` with the expected sequence of each aggregate (so the stored
headers are those of the handlers' appends), rebuilt the projection into etcd with
``ucloud.projections.rebuild.rebuild``, dumped every projected key under the prefix
(relative, the checkpoint aside: it is a stream sequence) with its stored value as text,
and wrote the stream with ``ucloud events export``. Ids and event times are fixed by the
story (``Story``); only the stored times in the export are the day's clock.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ucloud import events as ev
from ucloud.cli.main import main as ucloud_main
from ucloud.config import Config, EtcdConfig, NatsConfig
from ucloud.eventlog import EventLog
from ucloud.events import Event, Nic, Resources
from ucloud.ids import derive_id
from ucloud.projections.rebuild import rebuild
from ucloud.projections.views import CHECKPOINT, POISON
from ucloud.servers import EmbeddedEtcd, EmbeddedNats
from ucloud.store import Store

HERE = Path(__file__).parent
NAME = "log-2026-12"
START = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
PREFIX = "/ucloud/v1/"


def fixed_id(at: datetime, n: int) -> str:
    """A UUIDv7-shaped id carrying ``at``'s millisecond, a pure function of (at, n)."""
    ms = int(at.timestamp() * 1000)
    return derive_id(str(uuid.UUID(int=ms << 80 | 0x7 << 76 | 0b10 << 62)), f"old-log/{n}")


@dataclass
class Story:
    """The events in the order they are appended, each a few seconds after the last."""

    now: datetime = START
    events: list[Event] = field(default_factory=list)

    def chain(self, actor: str) -> Chain:
        """A user request (or a system trigger) starting a chain: a minute later."""
        self.now += timedelta(minutes=1)
        return Chain(self, actor, fixed_id(self.now, len(self.events)))

    def add(self, cls: type[Event], actor: str, causation: str, correlation: str,
            **fields: Any) -> Event:
        self.now += timedelta(seconds=3)
        event = cls(
            id=fixed_id(self.now, len(self.events)), at=self.now, actor=actor,
            causation=causation, correlation=correlation, **fields,
        )
        self.events.append(event)
        return event


@dataclass
class Chain:
    story: Story
    actor: str
    correlation: str
    last: str = ""

    def then(self, cls: type[Event], actor: str | None = None, **fields: Any) -> Event:
        """The next event of the chain, caused by the one before (the request at first)."""
        event = self.story.add(
            cls, actor or self.actor, self.last or self.correlation, self.correlation, **fields
        )
        self.last = event.id
        return event


def spec(cpu: int, ram_gib: int, ssd_gib: int, hdd_gib: int = 0) -> Resources:
    return Resources(cpu=cpu, ram_mib=ram_gib * 1024, ssd_mib=ssd_gib * 1024,
                     hdd_mib=hdd_gib * 1024)


HOSTS = {
    "h1": ("2001:db8:0:1::11", spec(32, 128, 2000), False),
    "h2": ("2001:db8:0:1::12", spec(32, 128, 2000, 4000), False),
    "h3": ("2001:db8:0:1::13", spec(16, 64, 1000), True),
}
PRICES = {"cpu": Decimal("0.00025"), "ram_gib": Decimal("0.0001"), "ssd_gib": Decimal("0.000002"),
          "nic": Decimal("0.00001")}


class Cloud:
    """The story's cast and the steps every chain is made of."""

    def __init__(self) -> None:
        self.story = Story()
        self.keys: dict[str, tuple[str, ...]] = {}  # each owner's SSH keys, given to new VMs
        self.made = 0

    def new(self) -> str:
        """The id of a new aggregate (VM, network, image, file, order, key)."""
        self.made += 1
        return fixed_id(self.story.now, 10_000 + self.made)

    def request_vm(self, owner: str, name: str, size: Resources, image: str,
                   nics: tuple[Nic, ...] = (), *, order: bool = False,
                   restart: ev.RestartPolicy = "always") -> tuple[str, Chain]:
        vm = self.new()
        chain = self.story.chain(owner)
        order_id = ""
        if order:
            order_id = self.new()
            lines = (
                ev.PriceLine(item="cpu", quantity=Decimal(size.cpu), unit_price=PRICES["cpu"]),
                ev.PriceLine(item="ram_gib", quantity=Decimal(size.ram_mib) / 1024,
                             unit_price=PRICES["ram_gib"]),
                ev.PriceLine(item="ssd_gib", quantity=Decimal(size.ssd_mib) / 1024,
                             unit_price=PRICES["ssd_gib"]),
                ev.PriceLine(item="nic", quantity=Decimal(len(nics)), unit_price=PRICES["nic"]),
            )
            chain.then(ev.OrderPlaced, order=order_id, owner=owner, vm=vm, spec=size,
                       lines=lines, currency="CHF", image=image, nics=len(nics))
        chain.then(ev.VmRequested, vm=vm, owner=owner, name=name, spec=size, image=image,
                   nics=nics, keys=self.keys.get(owner, ()), restart=restart, order=order_id)
        return vm, chain

    def place(self, chain: Chain, vm: str, host: str, size: Resources,
              migration: bool = False) -> None:
        chain.then(ev.HostVmPlaced, "system:scheduler", host=host, vm=vm, resources=size,
                   migration=migration)

    def start_on(self, chain: Chain, vm: str, host: str, owner: str, name: str,
                 size: Resources, image: str, nics: tuple[Nic, ...] = (),
                 restart: ev.RestartPolicy = "always") -> None:
        chain.then(ev.HostVmStart, "system:dispatcher", host=host, vm=vm, owner=owner,
                   name=name, spec=size, image=image, nics=nics, restart=restart)
        chain.then(ev.VmStarted, f"system:hostd:{host}", vm=vm, host=host)

    def run_vm(self, owner: str, name: str, size: Resources, image: str, host: str,
               nics: tuple[Nic, ...] = (), *, order: bool = False,
               restart: ev.RestartPolicy = "always") -> str:
        vm, chain = self.request_vm(owner, name, size, image, nics, order=order,
                                    restart=restart)
        self.place(chain, vm, host, size)
        chain.then(ev.VmScheduled, "system:scheduler", vm=vm, host=host)
        self.start_on(chain, vm, host, owner, name, size, image, nics, restart)
        return vm

    def stop(self, vm: str, host: str, owner: str) -> None:
        chain = self.story.chain(owner)
        chain.then(ev.VmStopRequested, vm=vm)
        chain.then(ev.HostVmStop, "system:dispatcher", host=host, vm=vm)
        chain.then(ev.VmStopped, f"system:hostd:{host}", vm=vm, host=host, reason="requested")

    def delete(self, vm: str, host: str, owner: str) -> None:
        chain = self.story.chain(owner)
        chain.then(ev.VmDeleteRequested, vm=vm)
        chain.then(ev.HostVmDelete, "system:dispatcher", host=host, vm=vm)
        chain.then(ev.VmDeleted, f"system:hostd:{host}", vm=vm, host=host)
        chain.then(ev.HostVmReleased, f"system:hostd:{host}", host=host, vm=vm,
                   reason="deleted")


PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:0>43} {}"


def tell(cloud: Cloud) -> list[Event]:
    """The whole story: every event type at least once, in an order that makes sense."""
    s = cloud.story
    up = s.chain("system:up")
    up.then(ev.UserCreated, user="admin", realm="admin")
    for name in ("alice", "bob", "carol"):
        s.chain("admin").then(ev.UserCreated, user=name, realm="users")

    for owner, key_name, n in (("alice", "laptop", 1), ("alice", "Zoë's desktop", 2),
                               ("bob", "workstation", 3), ("carol", "phone", 4)):
        key = cloud.new()
        s.chain(owner).then(ev.UserKeyAdded, user=owner, key=key, name=key_name,
                            public_key=PUBLIC_KEY.format(n, f"{owner}@{key_name}"))
        cloud.keys[owner] = (*cloud.keys.get(owner, ()), key)
    removed = cloud.keys["alice"][1]
    s.chain("alice").then(ev.UserKeyRemoved, user="alice", key=removed)
    cloud.keys["alice"] = cloud.keys["alice"][:1]

    for host, (address, capacity, router) in HOSTS.items():
        s.chain(f"system:hostd:{host}").then(
            ev.HostRegistered, host=host, capacity=capacity, address=address, router=router
        )

    files: dict[str, str] = {}
    for owner, name, size in (("alice", "debian.qcow2", 345_000_000), ("alice", "tiny.raw",
                              67_108_864), ("alice", "broken.img", 1234),
                              ("admin", "debian-12.raw", 2_147_483_648),
                              ("bob", "notes.txt", 512)):
        file = cloud.new()
        files[name] = file
        s.chain("system:filescan").then(
            ev.FileUploaded, file=file, owner=owner, name=name, size=size,
            sha256=f"{len(files):064x}", mtime_ns=1_796_000_000_000_000_000 + len(files),
        )
    # tiny.raw uploaded again with other content: the same file, a new size and digest
    s.chain("system:filescan").then(
        ev.FileUploaded, file=files["tiny.raw"], owner="alice", name="tiny.raw",
        size=134_217_728, sha256="ff" * 32, mtime_ns=1_796_000_100_000_000_000,
    )
    s.chain("system:filescan").then(ev.FileDeleted, file=files["notes.txt"])

    images: dict[str, str] = {}
    for owner, name, file, store, public in (
        ("alice", "debian", "debian.qcow2", "fs", False),
        ("alice", "broken", "broken.img", "fs", False),
        ("admin", "debian-12", "debian-12.raw", "rbd", True),
        ("alice", "tiny", "tiny.raw", "fs", False),
    ):
        image = images[name] = cloud.new()
        chain = s.chain(owner)
        chain.then(ev.ImageRequested, image=image, owner=owner, name=name, file=files[file],
                   store=store, public=public, file_name=file, file_sha256="ab" * 32)
        if name == "broken":
            chain.then(ev.ImageFailed, "system:imagescan", image=image,
                       reason="not a qcow2 or raw image")
        else:
            chain.then(ev.ImageCreated, "system:imagescan", image=image, size=10 << 30,
                       checksum="sha256:" + "cd" * 32)

    nets: dict[str, str] = {}
    prefixes = iter(f"2001:db8:1000:{n:x}::/64" for n in range(16))
    for owner, name, ipam in (("alice", "lan", "auto"), ("alice", "storage", "none"),
                              ("bob", "dmz", "manual"), ("alice", "tmp", "manual")):
        net = nets[name] = cloud.new()
        chain = s.chain(owner)
        chain.then(ev.NetRequested, net=net, owner=owner, name=name, ipam=ipam)
        vni = 100 + len(nets) - 1
        chain.then(ev.PoolVniAllocated, "system:netalloc", pool="vni", vni=vni, net=net)
        prefix = ""
        if ipam != "none":
            prefix = next(prefixes)
            chain.then(ev.PoolPrefixAllocated, "system:netalloc", pool="prefix",
                       prefix=prefix, net=net)
        chain.then(ev.NetCreated, "system:netalloc", net=net, vni=vni, prefix=prefix, ipam=ipam)
    huge = cloud.new()
    chain = s.chain("alice")
    chain.then(ev.NetRequested, net=huge, owner="alice", name="huge", ipam="auto")
    chain.then(ev.NetFailed, "system:netalloc", net=huge, reason="no free VNI in 100-103")

    lan, storage, dmz = nets["lan"], nets["storage"], nets["dmz"]
    debian, debian12 = images["debian"], images["debian-12"]
    small, medium = spec(1, 1, 10), spec(2, 4, 40)

    # web: ordered, two NICs (one MAC in capitals), stopped and started, then migrated
    web_nics = (Nic(network=lan, mac="52:54:00:AB:CD:01"), Nic(network=storage,
                mac="52:54:00:ab:cd:02"))
    web = cloud.run_vm("alice", "web", medium, debian12, "h1", web_nics, order=True)
    cloud.stop(web, "h1", "alice")
    chain = s.chain("alice")
    chain.then(ev.VmStartRequested, vm=web)
    cloud.start_on(chain, web, "h1", "alice", "web", medium, debian12, web_nics)
    migrate(cloud, web, "h1", "h2", medium, ok=True)

    # db: restart never, on h2; its migration fails and the reservation is tidied
    db_nics = (Nic(network=storage, mac="52:54:00:ab:cd:03"),)
    db = cloud.run_vm("alice", "db", medium, debian12, "h2", db_nics, restart="never")
    migrate(cloud, db, "h2", "h1", medium, ok=False)

    # worker: crashes and is restarted by its hostd
    worker = cloud.run_vm("bob", "worker", small, debian12, "h1",
                          (Nic(network=dmz, mac="52:54:00:ab:cd:04"),), order=True)
    s.chain("system:hostd:h1").then(ev.VmCrashed, vm=worker, host="h1",
                                   reason="QEMU exited with status 1")
    s.chain("system:hostd:h1").then(ev.VmStarted, vm=worker, host="h1")

    # giant: fits nowhere; deleted without ever having a host
    giant, chain = cloud.request_vm("bob", "giant", spec(64, 512, 100), debian12)
    chain.then(ev.VmSchedulingFailed, "system:scheduler", vm=giant,
               reason="no host has 64 free CPUs", resource="cpu")
    chain = s.chain("bob")
    chain.then(ev.VmDeleteRequested, vm=giant)
    chain.then(ev.VmDeleted, "system:dispatcher", vm=giant, host="")

    # h3 goes down: cache (shared disk) is evacuated to h1, scratch (local disk) is lost
    cache = cloud.run_vm("alice", "cache", small, debian12, "h3")
    scratch = cloud.run_vm("alice", "scratch", small, debian, "h3",
                           (Nic(network=lan, mac="52:54:00:ab:cd:05"),))
    down = s.chain("system:liveness")
    down.then(ev.HostDown, host="h3")
    chain = Chain(s, "system:scheduler", down.correlation, down.last)
    cloud.place(chain, cache, "h1", small)
    chain.then(ev.VmEvacuated, vm=cache, from_host="h3", to_host="h1")
    chain.then(ev.HostVmReleased, host="h3", vm=cache, reason="evacuated")
    cloud.start_on(chain, cache, "h1", "alice", "cache", small, debian12)
    chain = Chain(s, "system:scheduler", down.correlation, down.last)
    chain.then(ev.VmLost, vm=scratch, host="h3", reason="host h3 is down and the disk is local")
    chain.then(ev.HostVmStart, "system:dispatcher", host="h3", vm=scratch, owner="alice",
               name="scratch", spec=small, image=debian,
               nics=(Nic(network=lan, mac="52:54:00:ab:cd:05"),))
    back = s.chain("system:liveness")
    back.then(ev.HostUp, host="h3")
    back.then(ev.VmStarted, "system:hostd:h3", vm=scratch, host="h3")

    # h2 drained for maintenance and back
    s.chain("admin").then(ev.HostDrained, host="h2")
    s.chain("admin").then(ev.HostUndrained, host="h2")

    # carol tries a VM, deletes it, removes her key and is deleted
    trial = cloud.run_vm("carol", "trial", small, debian12, "h1")
    cloud.delete(trial, "h1", "carol")
    s.chain("carol").then(ev.UserKeyRemoved, user="carol", key=cloud.keys["carol"][0])
    s.chain("admin").then(ev.UserDeleted, user="carol")

    # the image tiny and the network tmp are deleted
    chain = s.chain("alice")
    chain.then(ev.ImageDeleteRequested, image=images["tiny"])
    chain.then(ev.ImageDeleted, "system:imagescan", image=images["tiny"])
    chain = s.chain("alice")
    chain.then(ev.NetDeleteRequested, net=nets["tmp"])
    chain.then(ev.PoolVniReleased, "system:netalloc", pool="vni", vni=103, net=nets["tmp"])
    chain.then(ev.PoolPrefixReleased, "system:netalloc", pool="prefix",
               prefix="2001:db8:1000:2::/64", net=nets["tmp"])
    chain.then(ev.NetDeleted, "system:netalloc", net=nets["tmp"])

    # an ordinary day: a fleet started over the hosts; some stopped, some deleted
    for n in range(24):
        owner = ("alice", "bob")[n % 2]
        host = ("h1", "h2", "h3")[n % 3]
        net = lan if owner == "alice" else dmz
        nics = (Nic(network=net, mac=f"52:54:00:10:00:{n:02x}"),)
        vm = cloud.run_vm(owner, f"fleet-{n}", small, debian12 if n % 4 else debian, host, nics,
                          order=n % 3 == 0)
        if n % 5 == 1:
            cloud.stop(vm, host, owner)
        elif n % 5 == 3:
            cloud.delete(vm, host, owner)
    return s.events


def migrate(cloud: Cloud, vm: str, source: str, target: str, size: Resources, *,
            ok: bool) -> None:
    chain = cloud.story.chain("admin")
    chain.then(ev.VmMigrationRequested, vm=vm, host=target if ok else "")
    cloud.place(chain, vm, target, size, migration=True)
    chain.then(ev.HostVmMigrateIn, "system:scheduler", host=target, vm=vm, from_host=source)
    uri = f"tcp:[{HOSTS[target][0]}]:49152"
    chain.then(ev.VmMigrationReady, f"system:hostd:{target}", vm=vm, host=target, uri=uri)
    chain.then(ev.HostVmMigrateOut, "system:dispatcher", host=source, vm=vm, to_host=target,
               uri=uri)
    if ok:
        chain.then(ev.VmMigrated, f"system:hostd:{source}", vm=vm, from_host=source,
                   to_host=target)
        chain.then(ev.HostVmReleased, f"system:hostd:{source}", host=source, vm=vm,
                   reason="migrated")
    else:
        chain.then(ev.VmMigrationFailed, f"system:hostd:{source}", vm=vm,
                   reason="the destination closed the migration stream")
        chain.then(ev.HostVmReleased, "system:scheduler", host=target, vm=vm,
                   reason="migration failed")


async def append_and_project(config: Config, events: list[Event]) -> dict[str, str]:
    event_log = await EventLog.connect(config.nats)
    store = await Store.connect(config.etcd.endpoints)
    try:
        await event_log.ensure_stream()
        last: dict[tuple[str, str], int] = {}  # each aggregate's last sequence
        for event in events:  # with optimistic concurrency, as the handlers append
            aggregate = (event.aggregate, event.aggregate_id)
            last[aggregate] = await event_log.append(event, expected=last.get(aggregate, 0))
        await rebuild(store, event_log, config.etcd.prefix, max_txn_ops=config.etcd.max_txn_ops)
        items = await store.get_prefix(config.etcd.prefix)
    finally:
        await store.close()
        await event_log.close()
    projection = {}
    for key, value in items:
        relative = key[len(config.etcd.prefix) :]
        if relative.startswith(POISON):
            raise SystemExit(f"the story holds poison: {relative}")
        if not relative.startswith(CHECKPOINT):
            projection[relative] = value.decode()
    return projection


def main() -> int:
    cloud = Cloud()
    events = tell(cloud)
    missing = set(ev.BY_TAG) - {e.tag() for e in events}
    if missing:
        raise SystemExit(f"the story lacks {sorted(missing)}")
    directory = Path(tempfile.mkdtemp(prefix="ucloud-old-log-"))
    nats_server = EmbeddedNats(directory / "nats").start()
    etcd = EmbeddedEtcd(directory / "etcd", fsync=False).start()
    try:
        config = Config(
            data_dir=str(directory / "data"),
            nats=NatsConfig(url=nats_server.url),
            etcd=EtcdConfig(endpoints=[etcd.endpoint], prefix=PREFIX),
        )
        projection = asyncio.run(append_and_project(config, events))
        config_file = directory / "ucloud.toml"
        config_file.write_text(
            f'[nats]\nurl = "{config.nats.url}"\n'
            f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
        )
        log_file = HERE / f"{NAME}.jsonl"
        code = ucloud_main(
            ["--config", str(config_file), "events", "export", "-o", str(log_file)]
        )
        if code != 0:
            return code
        (HERE / f"{NAME}.projection.json").write_text(
            json.dumps(projection, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        )
    finally:
        nats_server.stop()
        etcd.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{len(events)} events, {len(projection)} projected keys", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
