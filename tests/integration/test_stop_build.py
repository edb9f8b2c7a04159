"""Stopping a guest image build leaves nothing behind: no process, no mount, no partial image.

A fresh ``debian`` build (minutes: mmdebstrap with apt and dpkg in a chroot) is stopped
while it runs, through ``ucloud up`` (SIGTERM to it, its builtins service stops the build)
and through ``ucloud image build`` itself (SIGTERM to its pid only). Every process of the
build seen while it ran must be gone afterwards, nothing may stay mounted under the test's
directories, and only complete, renamed images may exist in the cache or the data dir.
The cache directories are the test's own, empty: the machine's cached images are not used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_up import Up
from ucloud.imagebuild.builder import mounts_under

pytestmark = [pytest.mark.root, pytest.mark.slow]

UNDER_WAY_S = 180.0  # until the build reaches the point where it is stopped
STOPPED_S = 90.0  # more than the supervisor's stop bound
CONTINUE_S = 8.0  # how long the build runs on once it is under way, before the signal
Pid = tuple[int, int]  # pid and start time (clock ticks since boot): survives pid reuse


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of ``pid``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 1 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _processes() -> dict[int, tuple[str, int, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def descendants(root: int) -> set[Pid]:
    """The live processes below ``root`` (not itself), with their start times."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (_state, ppid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[Pid] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][2]))
        todo += children.get(pid, [])
    return found


def alive(pids: set[Pid]) -> list[str]:
    """Those of ``pids`` still running (zombies are not), with their command lines."""
    left = []
    for pid, start in pids:
        stat = _stat(pid)
        if stat is None or stat[2] != start or stat[0] in "ZX":
            continue
        with contextlib.suppress(OSError):
            left.append(f"{pid}: {_cmdline(pid)}")
    return left


def mentioning(path: Path) -> list[str]:
    """Live processes whose command line names ``path`` (a build's cache or data dir)."""
    left = []
    for pid, (state, _ppid, _start) in _processes().items():
        if state in "ZX" or pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(path) in (line := _cmdline(pid)):
                left.append(f"{pid}: {line}")
    return left


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300]


def partial_files(directory: Path) -> list[str]:
    """Scratch trees and temporary files of a build or of placing its image."""
    found = []
    for path in directory.rglob("*"):
        if path.is_relative_to(directory / "nats") or path.is_relative_to(directory / "etcd"):
            continue
        name = path.name
        if "-build-" in name or name.startswith(".builtin-") or name.endswith(".tmp"):
            found.append(str(path))
    return found


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def mmdebstrap_below(root: int) -> bool:
    return any("mmdebstrap" in line for line in alive(descendants(root)))


def installing_below(root: int) -> bool:
    """dpkg installing into the chroot (mmdebstrap has mounted what it needs there)."""
    return any("dpkg --install" in line for line in alive(descendants(root)))


@contextlib.contextmanager
def cleaned_up(top: Path, seen: set[Pid]) -> Iterator[None]:
    """After the test, even a failed one: nothing of the build running or mounted."""
    try:
        yield
    finally:
        for pid, start in seen:
            stat = _stat(pid)
            if stat is not None and stat[2] == start:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for mount in mounts_under(Path("/proc/self/mountinfo").read_text(), str(top)):
            subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)


def assert_nothing_left(top: Path, seen: set[Pid], *directories: Path) -> None:
    time.sleep(1.0)  # processes killed at the last moment are reaped by now
    assert not alive(seen), f"processes of the build left: {alive(seen)}"
    assert not mentioning(top), f"processes naming the build's directories: {mentioning(top)}"
    mounts = mounts_under(Path("/proc/self/mountinfo").read_text(), str(top))
    assert not mounts, f"mounts left: {mounts}"
    for directory in directories:
        assert not partial_files(directory), f"partial files: {partial_files(directory)}"


def test_stopping_up_during_a_build_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "aio"
    cache = data_dir / "images" / "builtin"  # the builtins service builds here: empty
    monkeypatch.setenv("UCLOUD_IMAGES__BUILTIN", '["debian-12"]')
    seen: set[Pid] = set()
    with cleaned_up(tmp_path, seen):
        up = Up(data_dir)
        try:
            log = data_dir.parent / f"{data_dir.name}.stderr"
            pid = up.process.pid
            wait_for("dpkg installing", lambda: installing_below(pid), UNDER_WAY_S, log)
            deadline = time.monotonic() + CONTINUE_S
            while time.monotonic() < deadline:  # every process the build starts meanwhile
                seen |= descendants(pid)
                time.sleep(0.2)
            seen |= descendants(pid)
            assert any("image build debian" in line for line in alive(seen))
            up.process.send_signal(signal.SIGTERM)
            code = up.process.wait(STOPPED_S)
        finally:
            if up.process.poll() is None:
                up.process.kill()
                up.process.wait()
            assert up.process.stdout is not None
            up.process.stdout.close()
            up.stderr.close()
        assert code == 0, log.read_text()[-3000:]
        assert "did not stop" not in log.read_text()
        assert_nothing_left(tmp_path, seen, cache, data_dir)
        assert list(cache.glob("*.qcow2")) == []  # it was stopped long before the end


@pytest.mark.parametrize("point", ["early", "installing"])
def test_stopping_the_build_command_leaves_nothing(tmp_path: Path, point: str) -> None:
    cache = tmp_path / "cache"
    log = tmp_path / "build.stderr"
    seen: set[Pid] = set()
    with cleaned_up(tmp_path, seen), log.open("wb") as stderr:
        build = subprocess.Popen(
            [sys.executable, "-m", "ucloud.cli.main", "image", "build", "debian",
             "--cache-dir", str(cache)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            start_new_session=True,
        )
        try:
            under_way = installing_below if point == "installing" else mmdebstrap_below
            deadline = time.monotonic() + UNDER_WAY_S
            while not under_way(build.pid):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert build.poll() is None, log.read_text()[-3000:]
                seen |= descendants(build.pid)
                time.sleep(0.2)
            seen |= descendants(build.pid)
            assert any("mmdebstrap" in line for line in alive(seen))
            build.send_signal(signal.SIGTERM)  # to it alone: it stops what it started
            code = build.wait(STOPPED_S)
        finally:
            if build.poll() is None:
                os.killpg(build.pid, signal.SIGKILL)
                build.wait()
            assert build.stdout is not None
            build.stdout.close()
        assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert_nothing_left(tmp_path, seen, cache)
        assert [p.name for p in cache.iterdir()] == [".debian.lock"]
