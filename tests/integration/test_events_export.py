"""``ucloud events export`` and ``import`` against a real nats-server: byte for byte."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_events_tail import requested, scheduled
from tests.old_logs import FIRST, read_log
from ucloud.cli.events_cmd import export_events, import_events
from ucloud.cli.main import build_parser
from ucloud.config import Config, NatsConfig
from ucloud.errors import LogError
from ucloud.eventlog import EventLog
from ucloud.ids import new_id

pytestmark = pytest.mark.servers


def config_file(config: Config, path: Path) -> Path:
    path.write_text(
        f'[nats]\nurl = "{config.nats.url}"\nstream = "{config.nats.stream}"\n'
        f'subject_root = "{config.nats.subject_root}"\n'
        f'[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n'
    )
    return path


async def export(file: Path, *argv: str) -> list[dict[str, Any]]:
    args = build_parser().parse_args(["--config", str(file), "events", "export", *argv])
    out = io.StringIO()
    assert await export_events(args, out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_an_old_log_imported_elsewhere_exports_as_it_was(
    config: Config, tmp_path: Path
) -> None:
    assert config.nats.subject_root != "ucloud.evt"  # another root than the log was made under
    file = config_file(config, tmp_path / "ucloud.toml")
    log = FIRST
    args = build_parser().parse_args(["--config", str(file), "events", "import", str(log)])
    said = io.StringIO()
    began = datetime.now(UTC)

    assert await import_events(args, said) == 0

    lines = read_log(log)
    assert said.getvalue() == (
        f"imported {len(lines)} records into {config.nats.stream}: sequences 1..{len(lines)}\n"
    )
    written = tmp_path / "out.jsonl"
    args = build_parser().parse_args(
        ["--config", str(file), "events", "export", "-o", str(written)]
    )
    assert await export_events(args) == 0
    again = read_log(written)
    assert [(a.seq, a.subject, a.data) for a in again] == [
        (line.seq, line.subject, line.data) for line in lines
    ]
    assert [a.headers for a in again] == [
        {k: v for k, v in line.headers.items() if not k.startswith("Nats-Expected-")}
        for line in lines
    ]
    times = [json.loads(text)["time"] for text in written.read_text().splitlines()]
    assert all(t.endswith("Z") and len(t) == len("2026-12-02T16:18:23.348112000Z") for t in times)
    first = datetime.fromisoformat(times[0][:26] + "+00:00")
    assert began - timedelta(seconds=5) < first < datetime.now(UTC)
    assert times == sorted(times)

    tail = await export(file, "--since-seq", str(len(lines) - 2))
    assert [r["seq"] for r in tail] == [len(lines) - 2, len(lines) - 1, len(lines)]


async def test_export_keeps_odd_bodies_and_import_drops_the_expected_sequences(
    config: Config, event_log: EventLog, tmp_path: Path
) -> None:
    vm = new_id()
    first = await event_log.append(requested(vm), expected=0)
    await event_log.append(scheduled(vm), expected=first)
    await event_log.append_raw(f"ucloud.evt.vm.{vm}.junk", b"\xff\x00 not json", {"X-Why": "t"})
    exported = await export(config_file(config, tmp_path / "source.toml"))
    assert exported[1]["headers"] == {
        "Nats-Msg-Id": exported[1]["headers"]["Nats-Msg-Id"],
        "Ucloud-Type": "vm.scheduled",
        "Nats-Expected-Last-Subject-Sequence": str(first),
        "Nats-Expected-Last-Subject-Sequence-Subject": f"{config.nats.subject_root}.vm.{vm}.*",
    }
    assert exported[2]["headers"] == {"X-Why": "t"}
    assert "data" not in exported[2] and exported[2]["data_base64"] == "/wAgbm90IGpzb24="
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in exported))

    # another stream, where the VM's events come at other sequences
    nats = NatsConfig(url=config.nats.url, stream=config.nats.stream + "B",
                      subject_root=config.nats.subject_root + "b")
    other = Config(data_dir=config.data_dir, nats=nats, etcd=config.etcd)
    target_log = await EventLog.connect(nats)
    try:
        await target_log.ensure_stream()
        await target_log.append(requested(new_id()), expected=0)
    finally:
        await target_log.close()
    target = config_file(other, tmp_path / "target.toml")
    args = build_parser().parse_args(["--config", str(target), "events", "import", str(dump)])
    assert await import_events(args, io.StringIO()) == 0

    copied = await export(target, "--since-seq", "2")
    assert [(r["seq"], r["subject"], r.get("data"), r.get("data_base64")) for r in copied] == [
        (int(r["seq"]) + 1, r["subject"], r.get("data"), r.get("data_base64"))
        for r in exported
    ]
    assert [r["headers"] for r in copied] == [
        {k: v for k, v in r["headers"].items() if not k.startswith("Nats-Expected-")}
        for r in exported
    ]


async def test_export_of_a_missing_stream_says_so(config: Config, tmp_path: Path) -> None:
    with pytest.raises(LogError, match=f"no stream {config.nats.stream}"):
        await export(config_file(config, tmp_path / "ucloud.toml"))
