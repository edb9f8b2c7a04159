"""A guest image build as a child process, as the services run it.

``ucloud image build <recipe> --cache-dir DIR`` runs in its own process group: a cached
build returns at once, a fresh ``debian`` takes minutes; its progress lines are logged.
When the caller is cancelled the group gets SIGTERM and the build is waited for: it stops
its command's group (at most ``groups.STOP_S``) and removes its scratch tree. Only past
``STOP_S``, or when the caller is cancelled again while waiting, does it get SIGKILL. If
the caller's process dies without stopping it, the kernel sends it SIGTERM
(``--stop-with-parent``). Whoever waits for a service to stop (the supervisor) must
allow it more than ``STOP_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from ucloud.errors import ImageBuildError

log = logging.getLogger(__name__)

STOP_S = 30.0  # more than groups.STOP_S and the removal of a scratch tree


async def build_in_child(recipe: str, cache_dir: Path) -> Path:
    """Build (or find cached) the image of ``recipe``; ImageBuildError when that fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ucloud.cli.main", "image", "build", recipe,
        "--cache-dir", str(cache_dir), "--stop-with-parent", str(os.getpid()),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    tail: list[str] = []
    try:
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("built-in %s: %s", recipe, line)
                tail = [*tail[-9:], line]
        out = (await process.stdout.read()).decode(errors="replace")
        code = await process.wait()
    except asyncio.CancelledError:
        await _stop(process)
        raise
    if code != 0:
        raise ImageBuildError(recipe, "build", "\n".join(tail) or f"exited {code}")
    lines = out.strip().splitlines()
    if not lines or not Path(lines[-1]).is_file():
        raise ImageBuildError(recipe, "build", f"no image path in its output: {out[-200:]!r}")
    return Path(lines[-1])


async def _stop(process: asyncio.subprocess.Process) -> None:
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_S)
    except TimeoutError:
        log.error("image build (pid %d) did not stop within %.0fs: killed", process.pid, STOP_S)
    finally:  # also when cancelled again while waiting (the event loop shutting down)
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
