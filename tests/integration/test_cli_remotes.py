"""Named remotes through the real ``ucloud`` CLI against two real gateways.

Each gateway has its own stream, projection prefix and secrets prefix (two clouds); the CLI
runs in a worker thread with a config directory of the test's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Servers
from tests.integration.gateway_harness import Running, gateway_config, running_gateway
from ucloud.cli.main import main
from ucloud.errors import ExitCode

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


class Cli:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    async def run(self, *argv: str, **env: str) -> tuple[int, str, str]:
        for name in ("UCLOUD_URL", "UCLOUD_TOKEN"):
            if name in env:
                self.monkeypatch.setenv(name, env[name])
            else:
                self.monkeypatch.delenv(name, raising=False)
        self.capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def vm_names(self, *argv: str, **env: str) -> list[str]:
        code, out, err = await self.run("vm", "list", "-o", "json", *argv, **env)
        assert code == 0, err
        return [vm["name"] for vm in json.loads(out)]


async def with_vm(gw: Running, name: str) -> None:
    image = await gw.image("admin", "img", public=True)
    spec = {"name": name, "image": image, "cpu": 1, "ram": "128M", "ssd": 1}
    answer = await gw.client(gw.admin).post("/v1/vms", json=spec)
    assert answer.status_code == 202, answer.text
    await gw.settle(await gw.last_seq())


@pytest.fixture
async def clouds(servers: Servers, tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a = gateway_config(servers.config(), tmp_path / "a")
    config_b = gateway_config(servers.config(), tmp_path / "b")
    async with running_gateway(config_a) as a, running_gateway(config_b) as b:
        await with_vm(a, "in-a")
        await with_vm(b, "in-b")
        yield a, b


async def test_each_remote_has_its_own_login_and_the_current_one_is_used(
    clouds: tuple[Running, Running],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = clouds
    home = tmp_path / "home"
    monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(home))
    cli = Cli(monkeypatch, capsys)
    admin = ("--name", "admin", "--realm", "admin")

    # A login made the way it was before remotes: one credentials.json, the remote "default".
    code, out, err = await cli.run("login", *admin, "--otp", a.admin.next_otp(), "--url", a.url)
    assert code == 0, err
    assert (home / "credentials.json").exists()
    assert await cli.vm_names() == ["in-a"]

    code, out, err = await cli.run("remote", "add", "b", b.url)
    assert code == 0, err
    code, out, err = await cli.run("vm", "list", "--remote", "b")
    assert code == ExitCode.AUTH and "remote b" in err
    code, out, err = await cli.run("login", *admin, "--otp", b.admin.next_otp(), "--remote", "b")
    assert code == 0, err
    assert f"at {b.url}" in out
    assert (home / "logins" / "b.json").stat().st_mode & 0o077 == 0

    assert await cli.vm_names("--remote", "b") == ["in-b"]
    assert await cli.vm_names() == ["in-a"]  # default is still current
    listed: list[dict[str, Any]] = json.loads((await cli.run("remote", "list", "-o", "json"))[1])
    assert [(r["name"], r["url"], r["current"], r["login"]) for r in listed] == [
        ("b", b.url, "", "admin@admin"), ("default", a.url, "*", "admin@admin"),
    ]

    code, out, err = await cli.run("remote", "switch", "b")
    assert code == 0, err
    assert await cli.vm_names() == ["in-b"]
    token_a = json.loads((home / "credentials.json").read_text())["token"]
    # The CI variables win over the current remote; --remote wins over them.
    assert await cli.vm_names(UCLOUD_URL=a.url, UCLOUD_TOKEN=token_a) == ["in-a"]
    assert await cli.vm_names("--remote", "b", UCLOUD_URL=a.url, UCLOUD_TOKEN=token_a) == [
        "in-b"
    ]
    assert await cli.vm_names("--remote", "default") == ["in-a"]

    code, out, err = await cli.run("vm", "list", "--remote", "nope")
    assert code == ExitCode.USAGE and "ucloud remote list" in err
    code, out, err = await cli.run("logout", "--remote", "b")
    assert code == 0 and "logged out of b" in out
    code, out, err = await cli.run("vm", "list")
    assert code == ExitCode.AUTH
    code, out, err = await cli.run("remote", "remove", "b")
    assert code == 0, err
    assert await cli.vm_names() == ["in-a"]  # back to default
