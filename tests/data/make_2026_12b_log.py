"""How tests/data/log-2026-12b.jsonl and its projection were made: the DNS events.

Run once, on 2026-12-02, from the repository root::

    .venv/bin/python tests/data/make_2026_12b_log.py

Never run it again: like ``make_old_log.py`` (whose cast, servers and export it uses),
it wrote a guard. The story: a user, a network with a /64, a VM that gets two DNS names,
loses one, has the PTR of its address set and reset, and is deleted with its name.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ucloud import events as ev
from ucloud.config import Config, EtcdConfig, NatsConfig
from ucloud.events import Event, Nic
from ucloud.servers import EmbeddedEtcd, EmbeddedNats

HERE = Path(__file__).parent
NAME = "log-2026-12b"
_spec = importlib.util.spec_from_file_location("make_old_log", HERE / "make_old_log.py")
assert _spec is not None and _spec.loader is not None
old = importlib.util.module_from_spec(_spec)
sys.modules["make_old_log"] = old  # its dataclasses look themselves up there
_spec.loader.exec_module(old)

NEW = ("vm.dns_name_added", "vm.dns_name_removed", "vm.ptr_set")


def tell(cloud: old.Cloud) -> list[Event]:
    s = cloud.story
    s.chain("system:up").then(ev.UserCreated, user="admin", realm="admin")
    s.chain("admin").then(ev.UserCreated, user="alice", realm="users")
    net = cloud.new()
    chain = s.chain("alice")
    chain.then(ev.NetRequested, net=net, owner="alice", name="lan", ipam="auto")
    prefix = "fd75:636c:6f75::/64"
    chain.then(ev.PoolVniAllocated, "system:netalloc", pool="vni", vni=1, net=net)
    chain.then(ev.PoolPrefixAllocated, "system:netalloc", pool="prefix", prefix=prefix, net=net)
    chain.then(ev.NetCreated, "system:netalloc", net=net, vni=1, prefix=prefix, ipam="auto")
    s.chain("admin").then(ev.HostRegistered, host="h1", capacity=old.spec(8, 32, 500),
                          address="2001:db8:0:1::11")
    size = old.spec(1, 1, 10)
    nics = (Nic(network=net, mac="52:54:00:ab:cd:01"),)
    vm = cloud.run_vm("alice", "web", size, "img", "h1", nics)
    address = "fd75:636c:6f75:0:5054:ff:feab:cd01"
    s.chain("alice").then(ev.VmDnsNameAdded, vm=vm, name="web.alice.vm.test", zone="vm.test")
    s.chain("alice").then(ev.VmDnsNameAdded, vm=vm, name="www.vm.test", zone="vm.test")
    s.chain("alice").then(ev.VmDnsNameRemoved, vm=vm, name="www.vm.test")
    s.chain("alice").then(ev.VmPtrSet, vm=vm, address=address, name="www.example.net")
    s.chain("alice").then(ev.VmPtrSet, vm=vm, address=address)
    s.chain("alice").then(ev.VmPtrSet, vm=vm, address=address, name="mail.example.net")
    vm2 = cloud.run_vm("alice", "db", size, "img", "h1",
                       (Nic(network=net, mac="52:54:00:ab:cd:02"),))
    s.chain("alice").then(ev.VmDnsNameAdded, vm=vm2, name="db.alice.vm.test", zone="vm.test")
    cloud.delete(vm2, "h1", "alice")
    return s.events


def main() -> int:
    events = tell(old.Cloud())
    missing = set(NEW) - {e.tag() for e in events}
    if missing:
        raise SystemExit(f"the story lacks {sorted(missing)}")
    directory = Path(tempfile.mkdtemp(prefix="ucloud-old-log-"))
    nats_server = EmbeddedNats(directory / "nats").start()
    etcd = EmbeddedEtcd(directory / "etcd", fsync=False).start()
    try:
        config = Config(
            data_dir=str(directory / "data"),
            nats=NatsConfig(url=nats_server.url),
            etcd=EtcdConfig(endpoints=[etcd.endpoint], prefix=old.PREFIX),
        )
        projection = asyncio.run(old.append_and_project(config, events))
        config_file = directory / "ucloud.toml"
        config_file.write_text(
            f'[nats]\nurl = "{config.nats.url}"\n'
            f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
        )
        code = old.ucloud_main(
            ["--config", str(config_file), "events", "export", "-o", str(HERE / f"{NAME}.jsonl")]
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
