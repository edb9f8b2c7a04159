"""Session fixtures: one real nats-server (JetStream) and one real etcd for the whole run.

Tests isolate themselves by unique ids and key prefixes, never by restarting servers.
Capability markers (root, netns, qemu, ceph, browser): a test whose capability is missing is
skipped with the reason, unless UCLOUD_REQUIRE_CAPABILITIES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.capabilities import missing, missing_capability
from tests.ceph_cluster import CephCluster
from ucloud.config import Config, EtcdConfig, NatsConfig
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.servers import EmbeddedEtcd, EmbeddedNats
from ucloud.store import Store

# `ucloud up` started by tests must not build the built-in guest images (minutes, root).
os.environ.setdefault("UCLOUD_IMAGES__BUILTIN", "[]")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("root", "netns", "qemu", "ceph", "browser"):
        if item.get_closest_marker(marker) is None:
            continue
        reason = missing_capability(marker)
        if reason is None:
            continue
        missing(f"capability {marker}: {reason}")


@dataclass
class Servers:
    nats: EmbeddedNats
    etcd: EmbeddedEtcd
    directory: Path

    def config(self, stream: str | None = None, prefix: str | None = None) -> Config:
        """A config of the test's own: its own stream (and subject root) and key prefix."""
        name = stream or unique_stream()
        return Config(
            data_dir=str(self.directory / "data"),
            nats=NatsConfig(url=self.nats.url, stream=name, subject_root=f"{name.lower()}.evt"),
            etcd=EtcdConfig(
                endpoints=[self.etcd.endpoint], prefix=prefix or f"/t/{new_id()}/v1/"
            ),
        )


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    directory = Path(tempfile.mkdtemp(prefix="ucloud-test-"))
    nats_server = EmbeddedNats(directory / "nats", sync="always").start()
    try:
        etcd = EmbeddedEtcd(directory / "etcd", fsync=False).start()
    except BaseException:
        nats_server.stop()
        raise
    try:
        yield Servers(nats_server, etcd, directory)
    finally:
        nats_server.stop()
        etcd.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    """A single-node Ceph (mon, mgr, memstore OSD) with an RBD pool, started on first use."""
    with CephCluster.start(Path(tempfile.mkdtemp(prefix="ucloud-ceph-"))) as cluster:
        yield cluster


def unique_stream() -> str:
    return "T" + new_id().replace("-", "")[-16:].upper()


@pytest.fixture
def config(servers: Servers) -> Config:
    """A config of the test's own: a stream, subject root and etcd prefix nobody else uses."""
    return servers.config()


@pytest.fixture
async def event_log(config: Config) -> AsyncIterator[EventLog]:
    log = await EventLog.connect(config.nats)
    await log.ensure_stream()
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
async def store(servers: Servers) -> AsyncIterator[Store]:
    client = await Store.connect([servers.etcd.endpoint])
    try:
        yield client
    finally:
        await client.close()


