"""Shell completion of the real ``ucloud`` executable against a real gateway.

The shell's side is played as argcomplete's own tests do: ``_ARGCOMPLETE=1`` with the
command line in ``COMP_LINE``/``COMP_POINT``, the answer read from the output argcomplete
writes (a file here, ``_ARGCOMPLETE_STDOUT_FILENAME``), the words split on ``IFS``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Servers
from tests.integration.gateway_harness import Running, gateway_config, running_gateway

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]
UCLOUD = [sys.executable, "-m", "ucloud.cli.main"]


@pytest.fixture
async def gw(servers: Servers, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(servers.config(), tmp_path)) as running:
        image = await running.image("admin", "debian-12", public=True)
        for name in ("web", "db"):
            spec = {"name": name, "image": image, "cpu": 1, "ram": "128M", "ssd": 1}
            answer = await running.client(running.admin).post("/v1/vms", json=spec)
            assert answer.status_code == 202, answer.text
        await running.settle(await running.last_seq())
        yield running


def completions(line: str, tmp_path: Path, **env: str) -> list[str]:
    out = tmp_path / "completions"
    out.unlink(missing_ok=True)
    environment = {
        **os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "UCLOUD_CONFIG_DIR": str(tmp_path / "cfg"),
        **env,
    }
    environment.pop("UCLOUD_TOKEN", None) if "UCLOUD_TOKEN" not in env else None
    done = subprocess.run(UCLOUD, env=environment, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return sorted(word.strip() for word in out.read_text().split("\v") if word.strip())


async def test_verbs_options_and_vm_names_from_the_gateway(gw: Running, tmp_path: Path) -> None:
    login = {"UCLOUD_URL": gw.url, "UCLOUD_TOKEN": gw.admin.token}
    verbs = await asyncio.to_thread(completions, "ucloud vm sh", tmp_path, **login)
    assert verbs == ["show"]
    names = await asyncio.to_thread(completions, "ucloud vm show ", tmp_path, **login)
    assert names == ["db", "web"]
    named = await asyncio.to_thread(completions, "ucloud vm delete w", tmp_path, **login)
    assert named == ["web"]
    options = await asyncio.to_thread(completions, "ucloud vm list --rem", tmp_path, **login)
    assert options == ["--remote"]
    # No login, or a gateway that does not answer: nothing, quickly, and no error.
    assert await asyncio.to_thread(
        completions, "ucloud vm show ", tmp_path, UCLOUD_URL=gw.url
    ) == []
    assert await asyncio.to_thread(
        completions, "ucloud vm show ", tmp_path, UCLOUD_URL="http://[::1]:9", UCLOUD_TOKEN="x"
    ) == []


def test_the_printed_scripts_are_valid_shell(tmp_path: Path) -> None:
    bash = subprocess.run([*UCLOUD, "completion", "bash"], capture_output=True, text=True)
    assert bash.returncode == 0 and "complete " in bash.stdout
    script = tmp_path / "ucloud.bash"
    script.write_text(bash.stdout)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    zsh = subprocess.run([*UCLOUD, "completion", "zsh"], capture_output=True, text=True)
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef ucloud")
