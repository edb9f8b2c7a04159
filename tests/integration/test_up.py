"""``ucloud up`` and ``ucloud serve`` as real processes on temporary data directories."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ucloud import events as ev
from ucloud.client.upfile import UpInfo, read_up
from ucloud.config import NatsConfig
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.servers import free_port
from ucloud.services import SERVICES
from ucloud.store import Store

START_TIMEOUT_S = 60.0


def ucloud(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ucloud.cli.main", *argv]


class Up:
    """One ``ucloud up`` child process; ready when it prints its line."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.stderr = (data_dir.parent / f"{data_dir.name}.stderr").open("ab")
        self.gateway_port = free_port("::1")
        env = dict(
            os.environ, UCLOUD_GATEWAY__LISTEN=f"[::1]:{self.gateway_port}",
            UCLOUD_DNS__SERVER=f"[::1]:{free_port('::1')}",
        )
        env.pop("UCLOUD_CONFIG", None)
        self.process = subprocess.Popen(
            ucloud("up", "--data-dir", str(data_dir)),
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, env=env,
        )
        self.line = self._read_line()
        self.info: UpInfo = read_up(data_dir)
        self.servers: dict[str, int] = json.loads((data_dir / "servers.json").read_text())

    def _read_line(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line:
            self.kill()
            log = (self.data_dir.parent / f"{self.data_dir.name}.stderr").read_text()
            raise AssertionError(f"ucloud up did not say it is up:\n{log[-3000:]}")
        return line

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close()

    def _close(self) -> None:
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.stderr.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "aio"
    _stop_strays(tmp_path / "aio")


def _stop_strays(data_dir: Path) -> None:
    """After a failed test: stop servers a killed ``up`` left (only ours, by pid file)."""
    try:
        pids = json.loads((data_dir / "servers.json").read_text())
    except (FileNotFoundError, ValueError):
        return
    for pid in pids.values():
        with contextlib.suppress(OSError):
            if str(data_dir) in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def uploaded(file: str) -> ev.FileUploaded:
    """A fact no service acts on (the all-in-one runs them all): only projected."""
    return ev.FileUploaded(
        id=new_id(), at=datetime.now(UTC), actor="alice", file=file, owner="alice",
        name="notes.txt", size=5, sha256="0" * 64,
    )


async def test_up_resumes_with_nothing_lost_and_stops_its_servers(data_dir: Path) -> None:
    first = Up(data_dir)
    assert first.line.startswith("ucloud is up:")
    assert first.info.nats in first.line and first.info.etcd[0] in first.line
    assert first.info.pid == first.process.pid
    if "gateway" in SERVICES:
        assert first.info.gateway == f"http://[::1]:{first.gateway_port}"
    assert (data_dir / "ucloud.toml").exists()

    appended = [uploaded(new_id()) for _ in range(3)]
    log = await EventLog.connect(NatsConfig(url=first.info.nats))
    sequences = [await log.append(event, expected=0) for event in appended]
    await log.close()
    store = await Store.connect(first.info.etcd)
    await store.put("/test/kept", b"yes")
    await store.close()

    assert first.terminate() == 0
    assert not (data_dir / "up.json").exists()
    # knotd, the DNS server, when it is installed (dns.enabled unset)
    assert set(first.servers) == {"nats", "etcd"} | ({"knot"} if shutil.which("knotd") else set())
    for name, pid in first.servers.items():
        assert _gone(pid), f"{name} (pid {pid}) still runs after ucloud up stopped"

    second = Up(data_dir)
    try:
        log = await EventLog.connect(NatsConfig(url=second.info.nats))
        for event, seq in zip(appended, sequences, strict=True):
            stored, last = await log.load("file", event.file)
            assert last == seq and [(s.seq, s.event) for s in stored] == [(seq, event)]
        await log.close()
        store = await Store.connect(second.info.etcd)
        assert await store.get("/test/kept") == b"yes"
        await store.close()
    finally:
        assert second.terminate() == 0


async def test_a_second_up_on_a_running_directory_is_refused(data_dir: Path) -> None:
    first = Up(data_dir)
    try:
        refused = subprocess.run(
            ucloud("up", "--data-dir", str(data_dir)),
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert refused.returncode == 8  # ExitCode.SERVER: the servers of that dir run
        assert "already running" in refused.stderr and str(first.process.pid) in refused.stderr
        assert refused.stdout == ""
        assert read_up(data_dir) == first.info  # the running one is untouched
        assert first.process.poll() is None
    finally:
        assert first.terminate() == 0


async def test_up_after_a_killed_up_stops_the_servers_it_left(data_dir: Path) -> None:
    first = Up(data_dir)
    first.kill()  # SIGKILL: no chance to stop nats-server and etcd
    assert all(_alive(pid) for pid in first.servers.values())

    second = Up(data_dir)
    try:
        for name, pid in first.servers.items():
            assert _gone(pid), f"leftover {name} (pid {pid}) was not stopped"
        assert second.info.pid == second.process.pid
    finally:
        assert second.terminate() == 0


def test_serve_an_unknown_service_lists_the_services() -> None:
    result = subprocess.run(
        ucloud("serve", "nope"), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "unknown service 'nope'" in result.stderr
    assert "projector" in result.stderr


def test_replay_rebuild_finds_the_all_in_one_the_login_found(
    data_dir: Path, tmp_path: Path
) -> None:
    up = Up(data_dir)
    try:
        env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "elsewhere"),
                   UCLOUD_CONFIG_DIR=str(tmp_path / "conf"))
        for name in ("UCLOUD_CONFIG", "UCLOUD_URL", "UCLOUD_TOKEN"):
            env.pop(name, None)
        lost = subprocess.run(ucloud("replay", "rebuild"), capture_output=True, text=True,
                              env=env, timeout=30)
        assert lost.returncode == 6, lost.stderr  # unreachable: nothing found, said once
        assert len(lost.stderr.splitlines()) == 1 and "--data-dir" in lost.stderr, lost.stderr
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (data_dir / "admin.otp").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        login = subprocess.run(
            ucloud("login", "--name", "admin", "--realm", "admin", "--secret-file",
                   str(data_dir / "admin.otp"), "--data-dir", str(data_dir)),
            capture_output=True, text=True, env=env, timeout=30,
        )
        assert login.returncode == 0, login.stderr
        rebuilt = subprocess.run(ucloud("replay", "rebuild"), capture_output=True, text=True,
                                 env=env, timeout=60)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert rebuilt.stdout.startswith("rebuilt "), rebuilt.stdout
        assert "NATS" not in rebuilt.stderr  # no warnings of a connection retried
    finally:
        assert up.terminate() == 0
