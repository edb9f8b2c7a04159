"""The systemd units of ``systemd/``: one per service, valid to systemd, and ``Type=notify``
readiness that ``ucloud serve`` really sends."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import missing
from tests.integration.hostd_harness import settings_text
from ucloud.config import Config
from ucloud.services import SERVICES

UNITS = Path(__file__).parents[2] / "systemd"
INSTALLED = "/usr/local/bin/ucloud"  # where the units expect the console script


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / f"ucloud-{name}.service")
    return parser


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_has_a_notify_unit(name: str) -> None:
    service = unit(name)["Service"]
    assert service["ExecStart"].split() == [
        INSTALLED, "--config", "/etc/ucloud/ucloud.toml", "serve", name,
    ]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    # VMs and radvd outlive hostd; every other service's children end with it
    assert service.get("KillMode", "control-group") == ("process" if name == "hostd" else
                                                          "control-group")


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (Debian's systemd package)")
    here = str(Path(sys.executable).parent / "ucloud")
    for path in sorted(UNITS.glob("*.service")):
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, here))
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == len(SERVICES)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # warnings too: an unknown key is a mistake


@pytest.mark.servers
@pytest.mark.timeout(60)
def test_serve_says_ready_then_stopping(config: Config, tmp_path: Path) -> None:
    settings = tmp_path / "ucloud.toml"
    settings.write_text(settings_text(config))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(45)
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ucloud.cli.main", "--config", str(settings), "serve",
                 "netalloc"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        try:
            assert listener.recv(4096) == b"READY=1", log.read_text()
            process.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1", log.read_text()
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_stop_bounds_nest() -> None:
    """A build child stops within the supervisor's bound, which ends before systemd's: else
    a stopping service is killed with its build still running."""
    from ucloud.imagebuild import child, groups
    from ucloud.supervisor import STOP_TIMEOUT_S

    assert groups.STOP_S < child.STOP_S < STOP_TIMEOUT_S
    for name in SERVICES:
        assert STOP_TIMEOUT_S < float(unit(name)["Service"]["TimeoutStopSec"])
