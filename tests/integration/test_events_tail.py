"""``ucloud events tail`` against a real nats-server: what it prints, filters, follows."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ucloud import events as ev
from ucloud.cli.events_cmd import render, tail_events
from ucloud.cli.main import build_parser
from ucloud.config import Config
from ucloud.errors import LogError, NotFound, Unreachable
from ucloud.eventlog import EventLog, Record
from ucloud.ids import new_id
from ucloud.servers import free_port

pytestmark = pytest.mark.servers

_HEAD = re.compile(r"^\[(\d+)\] Subject: (\S+) Received: (\S+)$", re.MULTILINE)


@dataclass
class Shown:
    seq: int
    subject: str
    received: datetime
    headers: dict[str, str]
    body: dict[str, object]


def parse(output: str) -> list[Shown]:
    """Read the ``nats stream view`` layout back: head line, headers, JSON body."""
    heads = list(_HEAD.finditer(output))
    if not heads:
        return []
    ends = [h.start() for h in heads[1:]] + [len(output)]
    shown = []
    for head, end in zip(heads, ends, strict=True):
        block = output[head.end() : end].strip("\n")
        headers_text, _, body = block.partition("\n\n")
        headers = dict(
            line.strip().split(": ", 1) for line in headers_text.splitlines() if line.strip()
        )
        shown.append(
            Shown(int(head[1]), head[2], datetime.fromisoformat(head[3]), headers,
                  json.loads(body))
        )
    return shown


@pytest.fixture
def config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "ucloud.toml"
    path.write_text(
        f'[nats]\nurl = "{config.nats.url}"\nstream = "{config.nats.stream}"\n'
        f'subject_root = "{config.nats.subject_root}"\n'
        f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
        f'prefix = "{config.etcd.prefix}"\n'
    )
    return path


async def tail(config_file: Path, *argv: str) -> str:
    args = build_parser().parse_args(["--config", str(config_file), "events", "tail", *argv])
    out = io.StringIO()
    assert await tail_events(args, out) == 0
    return out.getvalue()


def requested(vm: str) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor="alice", vm=vm, owner="alice", name="web",
        spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024), image="tiny",
    )


def scheduled(vm: str) -> ev.VmScheduled:
    return ev.VmScheduled(id=new_id(), at=datetime.now(UTC), actor="system:t", vm=vm, host="h")


async def test_tail_prints_the_last_twenty_as_nats_stream_view_does(
    event_log: EventLog, config_file: Path
) -> None:
    appended = [requested(new_id()) for _ in range(23)]
    sequences = [await event_log.append(e, expected=0) for e in appended]

    shown = parse(await tail(config_file))

    assert [s.seq for s in shown] == sequences[-20:]
    for item, event in zip(shown, appended[-20:], strict=True):
        assert item.subject == event.subject
        assert item.headers["Nats-Msg-Id"] == event.id
        assert item.headers["Ucloud-Type"] == "vm.requested"
        assert "Nats-Sequence" not in item.headers
        assert item.body["id"] == event.id and item.body["type"] == "vm.requested"
        assert item.body["vm"] == event.vm
        assert abs((item.received - event.at).total_seconds()) < 60


async def test_tail_filters_by_aggregate_id_and_sequence(
    event_log: EventLog, config_file: Path
) -> None:
    vm, other = new_id(), new_id()
    first = await event_log.append(requested(vm), expected=0)
    await event_log.append(requested(other), expected=0)
    second = await event_log.append(scheduled(vm), expected=first)
    for _ in range(10):
        await event_log.append(requested(new_id()), expected=0)

    only_vm = parse(await tail(config_file, "--aggregate", "vm", "--id", vm))
    assert [(s.seq, s.body["type"]) for s in only_vm] == [
        (first, "vm.requested"), (second, "vm.scheduled")
    ]
    assert [s.seq for s in parse(await tail(config_file, "--id", vm, "-n", "1"))] == [second]
    assert parse(await tail(config_file, "--aggregate", "host")) == []
    assert await tail(config_file, "-n", "0") == ""

    since = parse(await tail(config_file, "--since-seq", str(second)))
    assert [s.seq for s in since] == list(range(second, second + 11))


async def test_tail_refuses_a_bad_id_and_a_missing_stream(
    config: Config, config_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(LogError, match=f"no stream {config.nats.stream}"):
        await tail(config_file)  # nothing was appended: the stream does not exist
    with pytest.raises(LogError, match=f"no stream {config.nats.stream}"):
        await tail(config_file, "--id", "a.b")  # said before any id or name is looked up
    nowhere = tmp_path / "nowhere.toml"
    nowhere.write_text(f'[nats]\nurl = "nats://127.0.0.1:{free_port()}"\n')
    with pytest.raises(Unreachable, match="cannot reach NATS at nats://127.0.0.1:"):
        await tail(nowhere)
    log = await EventLog.connect(config.nats)
    try:
        await log.ensure_stream()
    finally:
        await log.close()
    with pytest.raises(NotFound, match="no id or name a.b in the log"):
        await tail(config_file, "--id", "a.b")


async def test_follow_prints_new_events_until_interrupted(
    event_log: EventLog, config_file: Path
) -> None:
    before, after = requested(new_id()), requested(new_id())
    await event_log.append(before, expected=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "ucloud.cli.main", "--config", str(config_file),
         "events", "tail", "--follow", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        assert before.id in _read_until(process, before.id)  # it is reading: append more
        await event_log.append(after, expected=0)
        assert after.subject in _read_until(process, after.id)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        assert process.stderr is not None
        process.stderr.close()


def _read_until(process: subprocess.Popen[bytes], needle: str, timeout_s: float = 30) -> str:
    """Read the child's stdout (unbuffered, so select sees all of it) until ``needle``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    while needle.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"no {needle!r} in the output of tail --follow:\n{seen!r}")
        seen += chunk
    return seen.decode()


def test_render_shows_headers_then_the_body_and_copes_with_non_json() -> None:
    record = Record(
        seq=7, subject="ucloud.evt.vm.x.requested",
        time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        headers={"Nats-Msg-Id": "e1", "Nats-Sequence": "7"}, data=b'{"a":1}',
    )
    text = render(record)
    head, rest = text.split("\n", 1)
    assert head.startswith("[7] Subject: ucloud.evt.vm.x.requested Received: ")
    assert datetime.fromisoformat(head.rsplit(" ", 1)[1]) == record.time
    assert rest == '\n  Nats-Msg-Id: e1\n\n{\n  "a": 1\n}\n\n'
    raw = render(Record(7, "s", record.time, {}, b"\xffnot json"))
    assert raw.split("\n")[1:] == ["", "\ufffdnot json", "", ""]
    assert render(Record(7, "s", record.time, {}, b"")).split("\n")[2] == "nil body"
