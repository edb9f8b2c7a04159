"""The real ``ucloud`` CLI against the real gateway, projector and scheduler.

Services run in this test's event loop under the supervisor, on the test's own stream,
projection prefix and secrets prefix; the CLI runs in a worker thread (it is synchronous)
with its own config directory per user.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from ucloud import events as ev
from ucloud.cli.main import main
from ucloud.config import Config
from ucloud.errors import ExitCode
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.servers import free_port
from ucloud.store import Store
from ucloud.supervisor import Supervisor

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]
SERVICES = ("projector", "gateway", "scheduler")
READY_TIMEOUT_S = 30.0


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cloud:
    url: str
    admin_secret_file: Path
    home: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    async def ucloud(self, user: str, *argv: str) -> Result:
        """``ucloud ARGV`` as ``user`` (each user has a config directory of their own)."""
        self.monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(self.home / user))
        self.capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    async def json(self, user: str, *argv: str) -> Any:
        result = await self.ucloud(user, *argv, "-o", "json")
        assert result.code == 0, result.err
        return json.loads(result.out)

    def token_of(self, user: str) -> str:
        stored = json.loads((self.home / user / "credentials.json").read_text())
        token: str = stored["token"]
        return token


@pytest.fixture
async def cloud(
    config: Config,
    event_log: EventLog,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cloud]:
    port = free_port("::1")
    admin_file = tmp_path / "admin.otp"
    raw = msgspec.to_builtins(config)
    raw["data_dir"] = str(tmp_path / "data")
    raw["gateway"]["listen"] = f"[::1]:{port}"
    raw["gateway"]["bootstrap_admin_file"] = str(admin_file)
    raw["etcd"]["secrets_prefix"] = config.etcd.prefix.rstrip("/") + "-secret/"
    mine = msgspec.convert(raw, Config)
    supervisor = Supervisor(mine, event_log, store, SERVICES)
    assert supervisor.load() == {}
    supervisor.start()
    url = f"http://[::1]:{port}"
    monkeypatch.setenv("UCLOUD_URL", url)
    monkeypatch.delenv("UCLOUD_TOKEN", raising=False)
    try:
        await _ready(url, admin_file)
        yield Cloud(url, admin_file, tmp_path / "home", monkeypatch, capsys)
    finally:
        await supervisor.stop()


async def _ready(url: str, admin_file: Path) -> None:
    """Until the gateway answers /healthz and has written the admin's secret."""
    async with httpx.AsyncClient(base_url=url) as client:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                try:
                    healthy = (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    healthy = False
                if healthy and admin_file.exists():
                    return
                await asyncio.sleep(0.05)


async def _public_image(event_log: EventLog, name: str) -> str:
    """An image as imagescan leaves it (requested, then created), public."""
    image = new_id()
    envelope: dict[str, Any] = {
        "at": datetime.now(UTC), "actor": "system:imagescan", "correlation": image
    }
    await event_log.append(ev.ImageRequested(
        id=image, **envelope, causation=image, image=image, owner="admin", name=name,
        file=new_id(), public=True,
    ))
    await event_log.append(ev.ImageCreated(
        id=new_id(), **envelope, causation=image, image=image, size=1 << 30, checksum="0" * 64,
    ))
    return image


async def test_a_user_creates_a_vm_that_only_they_and_the_admin_see(
    cloud: Cloud, event_log: EventLog, tmp_path: Path
) -> None:
    login_admin = await cloud.ucloud(
        "admin", "login", "--name", "admin", "--realm", "admin",
        "--secret-file", str(cloud.admin_secret_file),
    )
    assert login_admin.code == 0, login_admin.err
    assert f"logged in as admin (realm admin) at {cloud.url}" in login_admin.out

    for name in ("alice", "bob"):
        added = await cloud.ucloud("admin", "user", "add", name, "--realm", "users")
        assert added.code == 0, added.err
        assert "shown once" in added.out
        secret = added.out.split("TOTP secret: ", 1)[1].split()[0]
        secret_file = tmp_path / f"{name}.totp"
        secret_file.write_text(secret + "\n")
        login = await cloud.ucloud(
            name, "login", "--name", name, "--realm", "users", "--secret-file", str(secret_file)
        )
        assert login.code == 0, login.err
        assert cloud.token_of(name) not in login.out + login.err
    names = [user["name"] for user in await cloud.json("admin", "user", "list")]
    assert sorted(names) == ["admin", "alice", "bob"]
    refused = await cloud.ucloud("alice", "user", "list")
    assert refused.code == ExitCode.AUTH and refused.err.startswith("ucloud: ")

    host = await cloud.json("admin", "host", "add", "h1", "--cpu", "8", "--ram", "16",
                            "--ssd", "200")
    assert host["id"] == "h1"
    image = await _public_image(event_log, "debian-12")

    public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUe4nKqGcAbJdGmKHq0YpG2F3y4u7s5wH3o0J2l9fQx"
    key_file = tmp_path / "id.pub"
    key_file.write_text(f"{public_key} alice@laptop\n")
    key = await cloud.json("alice", "key", "add", "laptop", str(key_file))
    assert key["name"] == "laptop"
    listed = await cloud.ucloud("alice", "key", "list")
    assert listed.code == 0 and "laptop" in listed.out

    created = await cloud.ucloud(
        "alice", "vm", "create", "web", "--image", "debian-12", "--cpu", "2", "--ram", "1.5G",
        "--ssd", "20", "--until", "scheduled", "--timeout", "60",
    )
    assert created.code == 0, created.err
    assert created.out.splitlines()[0].startswith("id:")  # piped: no progress lines
    assert "status:   scheduled" in created.out

    shown = await cloud.json("alice", "vm", "show", "web")
    assert (shown["name"], shown["owner"], shown["host"], shown["image"]) == (
        "web", "alice", "h1", image
    )
    assert shown["spec"]["ram_mib"] == 1536
    assert shown["keys"] == [key["id"]]
    vms = await cloud.json("alice", "vm", "list")
    assert [vm["id"] for vm in vms] == [shown["id"]]
    table = await cloud.ucloud("alice", "vm", "list")
    assert table.out.splitlines()[1].split()[:4] == [shown["id"], "web", "alice", "scheduled"]

    trail = await cloud.json("alice", "vm", "events", "web")
    assert [line["type"] for line in trail][:2] == ["vm.requested", "vm.scheduled"]
    hosts = await cloud.ucloud("admin", "host", "list")
    assert hosts.out.splitlines()[1].split()[:4] == ["h1", "up", "2/8", "1.5G/16G"]

    assert await cloud.json("bob", "vm", "list") == []
    for ident in (shown["id"], "web"):
        hidden = await cloud.ucloud("bob", "vm", "show", ident)
        assert hidden.code == ExitCode.NOT_FOUND
        assert hidden.err.startswith("ucloud: id: ") and "alice" not in hidden.err
    assert [vm["id"] for vm in await cloud.json("admin", "vm", "list")] == [shown["id"]]

    deleted = await cloud.ucloud("alice", "key", "delete", key["id"])
    assert deleted.code == 0, deleted.err
    assert await cloud.json("alice", "key", "list") == []
    again = await cloud.ucloud("alice", "key", "delete", key["id"])
    assert again.code == ExitCode.NOT_FOUND and again.err.startswith("ucloud: id: ")


async def _alice_with_a_vm(cloud: Cloud, event_log: EventLog, tmp_path: Path) -> dict[str, Any]:
    """The admin, a host h1, a public image, alice logged in with VM ``web`` scheduled."""
    assert (await cloud.ucloud("admin", "login", "--name", "admin", "--realm", "admin",
                               "--secret-file", str(cloud.admin_secret_file))).code == 0
    added = await cloud.ucloud("admin", "user", "add", "alice", "--realm", "users")
    secret_file = tmp_path / "alice.totp"
    secret_file.write_text(added.out.split("TOTP secret: ", 1)[1].split()[0] + "\n")
    assert (await cloud.ucloud("alice", "login", "--name", "alice", "--realm", "users",
                               "--secret-file", str(secret_file))).code == 0
    await cloud.json("admin", "host", "add", "h1", "--cpu", "8", "--ram", "16", "--ssd", "200")
    await _public_image(event_log, "debian-12")
    vm: dict[str, Any] = await cloud.json(
        "alice", "vm", "create", "web", "--image", "debian-12", "--cpu", "2", "--ram", "1.5G",
        "--ssd", "20", "--until", "scheduled", "--timeout", "60",
    )
    return vm


async def test_every_format_and_column_choice_on_list_and_show(
    cloud: Cloud, event_log: EventLog, tmp_path: Path
) -> None:
    vm = await _alice_with_a_vm(cloud, event_log, tmp_path)
    for verb in (("vm", "list"), ("vm", "show", "web")):
        as_json = await cloud.json("alice", *verb)
        yaml_out = await cloud.ucloud("alice", *verb, "-o", "yaml")
        assert yaml_out.code == 0 and yaml.safe_load(yaml_out.out) == as_json
        picked = await cloud.json("alice", *verb, "-c", "name", "-c", "ram")
        assert picked == ([{"name": "web", "ram": 1536}] if verb[1] == "list"
                          else {"name": "web", "ram": 1536})
        csv_out = await cloud.ucloud("alice", *verb, "-o", "csv", "-c", "id", "-c", "host")
        assert csv_out.out.splitlines() == ["id,host", f"{vm['id']},h1"]
        table = await cloud.ucloud("alice", *verb, "-c", "status", "-c", "name")
        assert table.out.split() == (["STATUS", "NAME", "scheduled", "web"] if verb[1] == "list"
                                     else ["status:", "scheduled", "name:", "web"])
    host = await cloud.ucloud("alice", "vm", "show", "web", "-c", "host", "-o", "value")
    assert host.out == "h1\n"
    rows = await cloud.ucloud("alice", "vm", "list", "-c", "name", "-c", "cpu", "-o", "value")
    assert rows.out == "web 2\n"
    nets = await cloud.ucloud("alice", "net", "list", "-o", "csv")
    assert nets.out.splitlines() == ["id,name,owner,status,ipam,vni,prefix"]
    wrong = await cloud.ucloud("alice", "vm", "list", "-c", "colour")
    assert wrong.code == ExitCode.USAGE and "no column 'colour'" in wrong.err


async def test_each_cause_has_its_exit_code(
    cloud: Cloud, event_log: EventLog, tmp_path: Path
) -> None:
    await _alice_with_a_vm(cloud, event_log, tmp_path)
    missing = await cloud.ucloud("alice", "vm", "show", "nope")
    assert missing.code == ExitCode.NOT_FOUND and "`ucloud vm list`" in missing.err
    taken = await cloud.ucloud("alice", "vm", "create", "web", "--image", "debian-12",
                               "--cpu", "1", "--ram", "1", "--ssd", "1")
    assert taken.code == ExitCode.CONFLICT, taken.err
    stuck = await cloud.ucloud("alice", "vm", "create", "db", "--image", "debian-12",
                               "--cpu", "1", "--ram", "1", "--ssd", "1", "--wait",
                               "--timeout", "0.5")  # no hostd here: it never runs
    assert stuck.code == ExitCode.TIMEOUT and "gave up waiting" in stuck.err
    bad = await cloud.ucloud("bob", "login", "--name", "alice", "--realm", "users",
                             "--otp", "000000")
    assert bad.code == ExitCode.AUTH, bad.err
    nobody = await cloud.ucloud("carol", "vm", "list")
    assert nobody.code == ExitCode.AUTH and "run `ucloud login" in nobody.err
    cloud.monkeypatch.setenv("UCLOUD_URL", f"http://[::1]:{free_port('::1')}")  # nothing there
    cloud.monkeypatch.setenv("UCLOUD_TOKEN", cloud.token_of("alice"))
    down = await cloud.ucloud("alice", "vm", "list")
    assert down.code == ExitCode.UNREACHABLE and "is `ucloud up`" in down.err


async def test_wait_progress_has_elapsed_times_on_a_terminal_and_none_when_piped(
    cloud: Cloud, event_log: EventLog, tmp_path: Path
) -> None:
    await _alice_with_a_vm(cloud, event_log, tmp_path)
    argv = [sys.executable, "-m", "ucloud.cli.main", "vm", "create", "NAME", "--image",
            "debian-12", "--cpu", "1", "--ram", "1", "--ssd", "1", "--until", "scheduled",
            "--timeout", "60"]
    env = dict(os.environ, UCLOUD_CONFIG_DIR=str(cloud.home / "alice"), COLUMNS="100")

    def on_a_terminal() -> str:
        leader, follower = pty.openpty()
        with subprocess.Popen([*argv[:5], "tty", *argv[6:]], stdout=follower,
                              stderr=subprocess.PIPE, env=env) as child:
            os.close(follower)
            out = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            assert child.wait(60) == 0, child.stderr.read() if child.stderr else ""
        os.close(leader)
        return out.decode().replace("\r\n", "\n")

    shown = await asyncio.to_thread(on_a_terminal)
    progress = [line for line in shown.splitlines() if re.match(r"^ +\d+\.\ds  ", line)]
    assert progress[0].endswith("s  tty: requested"), shown
    assert progress[-1].endswith("s  scheduled on h1"), shown
    piped = await asyncio.to_thread(
        subprocess.run, [*argv[:5], "piped", *argv[6:]], capture_output=True, env=env,
        text=True, timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert not re.search(r"\d\.\ds  ", piped.stdout + piped.stderr)
    assert piped.stdout.startswith("id:")
