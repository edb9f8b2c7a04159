"""``ucloud replay state`` through the real CLI, on a real log of the session's nats-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import tomli_w

from tests.old_logs import FIRST, read_log
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.events import Event, decode
from ucloud.replay.state import StateAt

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def _replay(config: Config, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ucloud.toml"
    path.write_text(tomli_w.dumps({
        "data_dir": str(tmp_path / "data"),
        "nats": {"url": config.nats.url, "stream": config.nats.stream,
                 "subject_root": config.nats.subject_root},
        "etcd": {"endpoints": list(config.etcd.endpoints), "prefix": config.etcd.prefix},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
    return subprocess.run(
        [sys.executable, "-m", "ucloud.cli.main", "--config", str(path), "replay", "state",
         *argv], capture_output=True, text=True, env=env, timeout=60,
    )


def _minute(n: int) -> str:
    return (BASE + timedelta(minutes=n)).isoformat()


async def test_state_at_and_diff_between_chosen_times(
    config: Config, event_log: EventLog, tmp_path: Path
) -> None:
    # the old log's first events, each appended a minute after the one before
    events: list[Event] = [
        msgspec.structs.replace(decode(line.data), at=BASE + timedelta(minutes=i))
        for i, line in enumerate(read_log(FIRST)[:80])
    ]
    for event in events:
        await event_log.append(event)
    middle = StateAt(BASE + timedelta(minutes=40))
    for seq, event in enumerate(events, 1):
        middle.feed(seq, event)

    shown = _replay(config, tmp_path, "--at", _minute(40), "-o", "json")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    assert state["sequence"] == 41
    assert state["vms"] == json.loads(msgspec.json.encode(middle.views()["vms"]))
    assert state["networks"] and state["hosts"]
    table = _replay(config, tmp_path, "--at", _minute(40))
    assert table.returncode == 0, table.stderr
    for vm in state["vms"]:
        assert vm["name"] in table.stdout and vm["owner"] in table.stdout

    before = _replay(config, tmp_path, "--at", "2029-12-31T23:00")
    assert "sequence 0" in before.stdout and "VMS" in before.stdout

    diff = _replay(config, tmp_path, "--diff", _minute(40), _minute(79), "-o", "json")
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)
    assert changed
    later = {e.id: e for e in events[41:]}
    for d in changed:
        assert d["before"] != d["after"] and d["by"]
        for change in d["by"]:
            assert 41 < change["seq"] <= 80 and change["actor"]
            assert change["actor"] == events[change["seq"] - 1].actor
    assert any(c["actor"] == e.actor for e in later.values() for d in changed for c in d["by"])
    people = _replay(config, tmp_path, "--diff", _minute(40), _minute(79))
    assert "ACTOR" in people.stdout and changed[0]["key"] in people.stdout

    wrong = _replay(config, tmp_path, "--diff", _minute(79), _minute(40))
    assert wrong.returncode == 2 and "--diff" in wrong.stderr
