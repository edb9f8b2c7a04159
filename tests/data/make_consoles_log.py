"""How tests/data/log-2026-12-consoles.jsonl and its projection were made.

Run once, on 2026-12-02, from the repository root::

    .venv/bin/python tests/data/make_consoles_log.py

Never run it again: like ``make_old_log.py`` (whose story, servers, append and export it
reuses), it made a guard. It holds the event types added after that log: a short story
of a user, a host, an image and a VM through its start, where the owner opens the serial
console, an admin the VNC console, and the VM is stopped (``vm.console_opened``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import make_old_log as base  # noqa: E402

from ucloud import events as ev  # noqa: E402
from ucloud.cli.main import main as ucloud_main  # noqa: E402
from ucloud.config import Config, EtcdConfig, NatsConfig  # noqa: E402
from ucloud.events import Event  # noqa: E402
from ucloud.servers import EmbeddedEtcd, EmbeddedNats  # noqa: E402

NAME = "log-2026-12-consoles"
NEW_TYPES = ("vm.console_opened",)


def tell(cloud: base.Cloud) -> list[Event]:
    s = cloud.story
    s.chain("system:up").then(ev.UserCreated, user="admin", realm="admin")
    s.chain("admin").then(ev.UserCreated, user="dora", realm="users")
    address, capacity, router = base.HOSTS["h1"]
    s.chain("system:hostd:h1").then(
        ev.HostRegistered, host="h1", capacity=capacity, address=address, router=router
    )
    file, image = cloud.new(), cloud.new()
    s.chain("system:filescan").then(
        ev.FileUploaded, file=file, owner="dora", name="tiny.raw", size=67_108_864,
        sha256="12" * 32, mtime_ns=1_796_000_000_000_000_000,
    )
    chain = s.chain("dora")
    chain.then(ev.ImageRequested, image=image, owner="dora", name="tiny", file=file,
               file_name="tiny.raw", file_sha256="12" * 32)
    chain.then(ev.ImageCreated, "system:imagescan", image=image, size=64 << 20, checksum="0")
    size = base.spec(1, 1, 1)
    vm = cloud.run_vm("dora", "shell", size, image, "h1")
    s.chain("dora").then(ev.VmConsoleOpened, vm=vm, kind="serial")
    s.chain("admin").then(ev.VmConsoleOpened, vm=vm, kind="vnc")
    cloud.stop(vm, "h1", "dora")
    return s.events


def main() -> int:
    events = tell(base.Cloud())
    missing = set(NEW_TYPES) - {e.tag() for e in events}
    if missing:
        raise SystemExit(f"the story lacks {sorted(missing)}")
    directory = Path(tempfile.mkdtemp(prefix="ucloud-old-log-"))
    nats_server = EmbeddedNats(directory / "nats").start()
    etcd = EmbeddedEtcd(directory / "etcd", fsync=False).start()
    try:
        config = Config(
            data_dir=str(directory / "data"),
            nats=NatsConfig(url=nats_server.url),
            etcd=EtcdConfig(endpoints=[etcd.endpoint], prefix=base.PREFIX),
        )
        projection = asyncio.run(base.append_and_project(config, events))
        config_file = directory / "ucloud.toml"
        config_file.write_text(
            f'[nats]\nurl = "{config.nats.url}"\n'
            f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
        )
        code = ucloud_main(
            ["--config", str(config_file), "events", "export", "-o",
             str(base.HERE / f"{NAME}.jsonl")]
        )  # fmt: skip
        if code != 0:
            return code
        (base.HERE / f"{NAME}.projection.json").write_text(
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
