"""``ucloud doctor`` through the real CLI, with the real probes on this host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from tests.integration.hostd_harness import image_cache
from ucloud.config import Config
from ucloud.servers import free_port

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


def _doctor(config_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
    return subprocess.run(
        [sys.executable, "-m", "ucloud.cli.main", "--config", str(config_file), "doctor",
         "--timeout", "3"],
        capture_output=True, text=True, env=env, timeout=150,
    )


def _settings(tmp_path: Path, nats: str, etcd: list[str]) -> Path:
    data = tmp_path / "data"
    builtin = data / "images" / "builtin"  # the KVM probe boots the cached tiny guest
    builtin.mkdir(parents=True)
    for built in image_cache().glob("tiny*"):
        shutil.copy(built, builtin / built.name)
    path = tmp_path / "ucloud.toml"
    path.write_text(tomli_w.dumps({
        "data_dir": str(data), "nats": {"url": nats}, "etcd": {"endpoints": etcd},
        "host": {"runtime_dir": str(Path("/tmp") / f"doc{os.getpid()}")},
    }))
    return path


@pytest.mark.root
def test_this_host_passes_with_the_session_servers(config: Config, tmp_path: Path) -> None:
    done = _doctor(_settings(tmp_path, config.nats.url, list(config.etcd.endpoints)))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("accelerator", "qemu version", "qemu-img version", "nft", "radvd",
                 "VM networking", "IPv6 forwarding", "image store", "nats", "etcd"):
        line = next(line for line in lines if line.split()[1:2] == name.split()[:1])
        assert not line.startswith("NOT OK"), line
    assert next(line for line in lines if " nats " in line).startswith("ok")
    assert "NOT OK" not in done.stdout
    assert any(w in lines[0] for w in ("kvm (", "tcg, slow (")), lines[0]  # probed, why


def test_a_closed_nats_port_is_not_reachable_with_the_fix(
    config: Config, tmp_path: Path
) -> None:
    closed = f"nats://127.0.0.1:{free_port('127.0.0.1')}"
    done = _doctor(_settings(tmp_path, closed, list(config.etcd.endpoints)))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[2:3] == ["nats"])
    assert lines[at].startswith("NOT OK") and "not reachable" in lines[at]
    assert "fix:" in lines[at + 1] and "nats.url" in lines[at + 1]
    assert next(line for line in lines if " etcd " in line).startswith("ok")
