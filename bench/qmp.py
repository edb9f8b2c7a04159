"""QMP: connects and ``query-status`` round trips, hostd's session against the bare protocol.

One QEMU with no machine (``-machine none``: QMP and nothing else) in a temporary
directory, removed at the end. Each client is measured the same way:

1. ``--connects`` times: connect (greeting, ``qmp_capabilities``), one ``query-status``,
   disconnect; the milliseconds of each, p50 and p99.
2. On one connection, ``--calls`` sequential ``query-status``: microseconds per call
   (p50, p99) and calls per second.

The clients: ``session`` is ``ucloud.hostd.qmp.QmpSession`` (the QEMU project's
``qemu.qmp`` underneath); ``bare`` writes one JSON line and reads one back on an asyncio
stream, with no routing, events or states: the floor, and what hostd's former
hand-written client did per call. Targets: a session's connect p50 <= 20 ms and a
``query-status`` p50 <= 1 ms, far under what hostd asks of QMP (a few calls per VM
operation, one ``query-migrate`` a second while a migration runs).
Run from the repository root: ``python -m bench.qmp [--connects N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from bench.common import Stopwatch, rate, report
from ucloud.hostd.qmp import QmpSession

TARGET_CONNECT_P50_MS = 20.0
TARGET_CALL_P50_US = 1000.0
VM = "00000000-0000-0000-0000-00000000b0b0"


class Client(Protocol):
    async def connect(self) -> None: ...
    async def execute(self, command: str) -> Any: ...
    async def disconnect(self) -> None: ...


class Bare:
    """QMP with nothing around it: one line out, one line in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> None:
        self.streams = await asyncio.open_unix_connection(str(self.path), limit=1 << 20)
        json.loads(await self.streams[0].readline())  # the greeting
        await self.execute("qmp_capabilities")

    async def execute(self, command: str) -> Any:
        assert self.streams is not None
        reader, writer = self.streams
        writer.write(json.dumps({"execute": command}).encode() + b"\n")
        await writer.drain()
        while "event" in (answer := json.loads(await reader.readline())):
            pass
        return answer["return"]

    async def disconnect(self) -> None:
        assert self.streams is not None
        writer, self.streams = self.streams[1], None
        writer.close()
        await writer.wait_closed()


class Session:
    """hostd's session, as hostd uses it."""

    def __init__(self, path: Path) -> None:
        self.session = QmpSession(VM, path)

    async def connect(self) -> None:
        await self.session.connect()

    async def execute(self, command: str) -> Any:
        return await self.session.execute(command)

    async def disconnect(self) -> None:
        await self.session.disconnect()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await action()
    return time.perf_counter() - began


async def measure(make: Callable[[], Client], connects: int, calls: int) -> dict[str, float]:
    connect_s: list[float] = []
    for _ in range(connects):
        client = make()

        async def once(client: Client = client) -> None:
            await client.connect()
            assert (await client.execute("query-status"))["status"]
            await client.disconnect()

        connect_s.append(await timed(once))
    client = make()
    await client.connect()
    call_s = [await timed(lambda: client.execute("query-status")) for _ in range(calls)]
    await client.disconnect()
    return {
        "connect_p50_ms": round(statistics.median(connect_s) * 1e3, 3),
        "connect_p99_ms": round(percentile(connect_s, 0.99) * 1e3, 3),
        "call_p50_us": round(statistics.median(call_s) * 1e6, 1),
        "call_p99_us": round(percentile(call_s, 0.99) * 1e6, 1),
        "calls_per_s": rate(calls, sum(call_s)),
    }


async def ready(path: Path, qemu: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if path.exists():
            return
        if qemu.poll() is not None:
            raise SystemExit(f"QEMU exited with {qemu.returncode}")
        await asyncio.sleep(0.05)
    raise SystemExit("QEMU made no QMP socket within 10 s")


async def main(connects: int, calls: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="ucloud-bench-qmp-"))
    path = directory / "qmp.sock"
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
        "-qmp", f"unix:{path},server=on,wait=off",
    ])  # fmt: skip
    try:
        await ready(path, qemu)
        clock = Stopwatch()
        figures = {
            "bare": await measure(lambda: Bare(path), connects, calls),
            "session": await measure(lambda: Session(path), connects, calls),
        }
        for name, measured in figures.items():
            print(
                f"{name:8} connect+query-status+disconnect p50 {measured['connect_p50_ms']} ms"
                f" p99 {measured['connect_p99_ms']} ms; query-status p50"
                f" {measured['call_p50_us']} us p99 {measured['call_p99_us']} us"
                f" ({measured['calls_per_s']}/s)"
            )
        session = figures["session"]
        print(f"in {clock.seconds:.1f} s; targets: connect p50 <= {TARGET_CONNECT_P50_MS} ms,"
              f" query-status p50 <= {TARGET_CALL_P50_US} us")  # fmt: skip
        report({
            **{f"{name}_{key}": value for name, m in figures.items() for key, value in m.items()},
            "connects": connects, "calls": calls,
            "meets_targets": session["connect_p50_ms"] <= TARGET_CONNECT_P50_MS
            and session["call_p50_us"] <= TARGET_CALL_P50_US,
        })  # fmt: skip
    finally:
        qemu.kill()
        qemu.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--calls", type=int, default=2000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.connects, arguments.calls))
