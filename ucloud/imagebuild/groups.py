"""The commands of a build, each in a process group of its own that ends with the build.

Theory of operation: a build command (mmdebstrap and all it forks: apt, dpkg, tar, the
maintainer scripts in the chroot) runs as the leader of a new process group. When the
build is stopped while it waits for one (SIGTERM, which ``ucloud image build`` turns into
SystemExit, or Ctrl-C), the whole group gets SIGTERM, our ends of its pipes are closed
(a blocked writer gets SIGPIPE, which mmdebstrap handles like SIGTERM), and the build
waits until no process of the group is alive, not only its leader: mmdebstrap's main
process ignores SIGTERM while its worker lives, and the worker unmounts what it mounted
before it exits. After ``STOP_S`` the group gets SIGKILL. Only then does the builder
remove the scratch tree, so nothing is left writing into it.

A build started by a service also ends when that service's process dies without stopping
it (SIGKILL): ``stop_with_parent`` asks the kernel for SIGTERM at the parent's death.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

STOP_S = 15.0  # from SIGTERM to SIGKILL of a command's group
_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


def run_in_group(args: Sequence[str], input: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run ``args`` as a new process group; its exit code, stdout and stderr.

    Any exception while it runs (SystemExit, KeyboardInterrupt) stops the whole group
    first (``stop_group``) and is raised again.
    """
    process = subprocess.Popen(
        list(args), stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
    )
    try:
        stdout, stderr = process.communicate(input)
    except BaseException:
        stop_group(process)
        raise
    return process.returncode, stdout, stderr


def stop_group(process: subprocess.Popen[bytes], stop_s: float = STOP_S) -> None:
    """SIGTERM to the group ``process`` leads; wait until none of it lives; then SIGKILL."""
    _signal_group(process.pid, signal.SIGTERM)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    deadline = time.monotonic() + stop_s
    while time.monotonic() < deadline:
        process.poll()  # reap the leader; the group's other members are not our children
        if not live_members(process.pid):
            break
        time.sleep(_POLL_S)
    else:
        _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def live_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Pids of the processes of group ``pgid`` that have not exited (zombies do not count)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        state, pgrp = parse_stat(stat)
        if pgrp == pgid and state not in "ZX":
            found.append(int(entry.name))
    return found


def parse_stat(stat: str) -> tuple[str, int]:
    """The state letter and process group of a /proc/PID/stat line.

    The command name (field 2) is in parentheses and may hold spaces and parentheses;
    the fields after its last ``)`` are ``state ppid pgrp ...``.
    """
    fields = stat[stat.rindex(")") + 1 :].split()
    return fields[0], int(fields[2])


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` (its parent) dies.

    ``PR_SET_PDEATHSIG`` set in the child itself (``preexec_fn`` is unsafe with threads);
    when the parent died before, the signal would never come, so it is raised at once.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        signal.raise_signal(signal.SIGTERM)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
