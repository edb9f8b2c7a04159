"""``ucloud serve --log-format json``: every stderr line one JSON object, with the service,
the host, and the event being handled where the line is about one."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_harness import system
from tests.integration.hostd_harness import settings_text
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.ids import new_id

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]


def lines_of(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
    return [json.loads(line) for line in complete.splitlines()]  # each line must parse


async def test_netalloc_logs_json_lines_naming_the_event_it_handled(
    config: Config, event_log: EventLog, tmp_path: Path
) -> None:
    settings = tmp_path / "ucloud.toml"
    settings.write_text(settings_text(config))
    err = tmp_path / "serve.log"
    with err.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ucloud.cli.main", "-v", "--config", str(settings),
             "serve", "netalloc", "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        net = new_id()
        request = ev.NetRequested(**system(), correlation=net, net=net, owner="alice", name="n")
        await event_log.append(request)
        deadline = time.monotonic() + 45
        while not any(line.get("event_id") == request.id for line in lines_of(err)):
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()[-4000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, err.read_text()[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = lines_of(err)
    assert lines and all(
        line["service"] == "netalloc" and line["host"] == socket.gethostname()
        and {"time", "level", "logger", "message"} <= line.keys()
        for line in lines
    )
    handled = [line for line in lines if line.get("event_id") == request.id]
    assert handled[0]["correlation"] == net
    assert handled[0]["event"] == "net.requested"
    assert isinstance(handled[0]["seq"], int)
