"""The embedded nats-server syncs what it acknowledges: as the server itself reports it.

Read from the server's ``/varz`` (what it runs with), not from the config file we wrote.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Servers
from tests.integration.test_up import Up, _stop_strays
from ucloud.servers import EmbeddedNats

DEFAULT_SYNC_NS = 120 * 10**9  # nats-server's own default: every two minutes


def jetstream_config(monitor_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{monitor_url}/varz", timeout=5) as resp:
        config: dict[str, Any] = json.loads(resp.read())["jetstream"]["config"]
    return config


@pytest.mark.servers
def test_the_test_servers_nats_syncs_every_write(servers: Servers) -> None:
    assert jetstream_config(servers.nats.monitor_url).get("sync_always") is True


@pytest.mark.parametrize(
    ("sync", "always", "interval_ns"),
    [("always", True, DEFAULT_SYNC_NS), ("10ms", False, 10**7), (None, False, DEFAULT_SYNC_NS)],
)
def test_the_sync_setting_reaches_the_server(
    tmp_path: Path, sync: str | None, always: bool, interval_ns: int
) -> None:
    server = EmbeddedNats(tmp_path / "nats", sync=sync).start()
    try:
        config = jetstream_config(server.monitor_url)
    finally:
        server.stop()
    assert bool(config.get("sync_always")) is always
    assert config["sync_interval"] == interval_ns


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "always"), [(None, True), ("10ms", False)])
def test_the_all_in_one_runs_with_the_configured_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, always: bool
) -> None:
    if setting is not None:
        monkeypatch.setenv("UCLOUD_NATS__SYNC", setting)
    data_dir = tmp_path / "aio"
    try:
        up = Up(data_dir)
        try:
            ports = json.loads((data_dir / "nats" / "ports.json").read_text())
            config = jetstream_config(f"http://127.0.0.1:{ports['monitor']}")
        finally:
            assert up.terminate() == 0
    finally:
        _stop_strays(data_dir)
    assert bool(config.get("sync_always")) is always
