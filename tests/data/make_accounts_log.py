"""How tests/data/log-2026-12-accounts.jsonl and its projection were made.

Run once, on 2026-12-02, from the repository root::

    PYTHONPATH=. .venv/bin/python tests/data/make_accounts_log.py

Never run it again: like ``make_old_log.py`` (whose story, cast and procedure it reuses),
it wrote a guard. It holds the events of accounts' lifecycle and quotas that log-2026-12
predates: users disabled and enabled, a quota override, admissions of a VM and a network,
a TOTP rotation, and a user deleted and made again under the same name.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.data.make_old_log import HERE, PREFIX, Story, append_and_project, spec
from ucloud import events as ev
from ucloud.cli.main import main as ucloud_main
from ucloud.config import Config, EtcdConfig, NatsConfig
from ucloud.events import Event
from ucloud.servers import EmbeddedEtcd, EmbeddedNats

NAME = "log-2026-12-accounts"
NEW = {"user.disabled", "user.enabled", "user.quota_set", "user.admitted", "user.totp_rotated"}


def tell(s: Story) -> list[Event]:
    s.chain("system:gateway").then(ev.UserCreated, user="admin", realm="admin")
    for name in ("dora", "erin"):
        s.chain("admin").then(ev.UserCreated, user=name, realm="users")
    s.chain("admin").then(ev.UserQuotaSet, user="dora",
                          limits=ev.QuotaLimits(vms=2, cores=4, networks=1))
    vm = s.chain("dora")
    vm.then(ev.UserAdmitted, user="dora", kind="vm", resource="vm-dora-1",
            spec=spec(2, 2, 10))
    net = s.chain("dora")
    net.then(ev.UserAdmitted, user="dora", kind="net", resource="net-dora-1")
    s.chain("dora").then(ev.UserTotpRotated, user="dora")
    s.chain("admin").then(ev.UserDisabled, user="dora")
    s.chain("admin").then(ev.UserEnabled, user="dora")
    s.chain("admin").then(ev.UserDisabled, user="erin")
    s.chain("admin").then(ev.UserDeleted, user="erin")
    s.chain("admin").then(ev.UserCreated, user="erin", realm="users")
    s.chain("admin").then(ev.UserQuotaSet, user="erin", limits=ev.QuotaLimits(vms=0))
    return s.events


def main() -> int:
    events = tell(Story())
    missing = NEW - {e.tag() for e in events}
    if missing:
        raise SystemExit(f"the story lacks {sorted(missing)}")
    directory = Path(tempfile.mkdtemp(prefix="ucloud-accounts-log-"))
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
        code = ucloud_main(
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
