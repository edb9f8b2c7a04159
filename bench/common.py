"""What every benchmark needs: embedded servers in a temporary directory, rates, a report.

Run a benchmark as a module from the repository root (``python -m bench.append``). It
prints its figures for people and, as the last line, one JSON object of metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ucloud.config import Config, EtcdConfig, NatsConfig
from ucloud.servers import EmbeddedEtcd, EmbeddedNats


@dataclass
class BenchServers:
    nats: EmbeddedNats
    etcd: EmbeddedEtcd | None
    directory: Path

    def config(self, stream: str = "BENCH", prefix: str = "/bench/v1/") -> Config:
        """A config pointing at these servers, with its own stream, subject root and prefix."""
        endpoints = [self.etcd.endpoint] if self.etcd is not None else []
        return Config(
            data_dir=str(self.directory / "data"),
            nats=NatsConfig(url=self.nats.url, stream=stream, subject_root=f"{stream.lower()}.evt"),
            etcd=EtcdConfig(endpoints=endpoints, prefix=prefix),
        )


@contextlib.contextmanager
def embedded_servers(
    *, etcd: bool = True, sync: str | None = "always", parent: Path | None = None
) -> Iterator[BenchServers]:
    """nats-server (and etcd unless ``etcd=False``) in a temporary directory, removed after.

    ``sync`` is the nats-server's JetStream ``sync_interval`` (``None``: its own default);
    ``parent`` is where the temporary directory goes (the disk whose fsyncs are measured).
    """
    directory = Path(tempfile.mkdtemp(prefix="ucloud-bench-", dir=parent))
    started: list[EmbeddedNats | EmbeddedEtcd] = []
    try:
        nats_server = EmbeddedNats(directory / "nats", sync=sync).start()
        started.append(nats_server)
        etcd_server = EmbeddedEtcd(directory / "etcd", fsync=False).start() if etcd else None
        if etcd_server is not None:
            started.append(etcd_server)
        yield BenchServers(nats_server, etcd_server, directory)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def filesystem(path: Path) -> str:
    """The type and device of the file system ``path`` is on (``ext4 /dev/vda``)."""
    best, found = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            inside = str(path.resolve()).startswith(point.rstrip("/") + "/") or point == "/"
            if inside and len(point) >= len(best):
                best, found = point, f"{kind} {device}"
    return found


class Stopwatch:
    """Elapsed wall-clock seconds since it was made (or last restarted)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def restart(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


async def post_once(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST with one ``Idempotency-Key`` through connection faults, 502/503/504 and a key
    in progress (as the CLI does): a create whose answer was lost makes one resource."""
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    for delay in (*RETRY_DELAYS_S, None):
        try:
            answer = await client.post(path, json=body, headers=headers)
        except httpx.TransportError as exc:
            if delay is None:
                raise
            reason = str(exc) or type(exc).__name__
        else:
            busy = answer.status_code == 409 and "Retry-After" in answer.headers
            if delay is None or not (answer.status_code in (502, 503, 504) or busy):
                return answer
            reason = f"HTTP {answer.status_code}"
        print(f"retrying {path} in {delay:g}s: {reason}", file=sys.stderr, flush=True)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def rate(count: int, seconds: float) -> float:
    """Operations per second, rounded for printing."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def report(metrics: dict[str, Any]) -> None:
    """Print the metrics as one JSON object: the last line a benchmark prints."""
    print(json.dumps(metrics, sort_keys=True), flush=True)
