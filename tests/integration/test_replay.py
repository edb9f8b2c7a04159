"""Replays through the real log: scans, audit_vm, and the CLI verbs end to end."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from ucloud import events as ev
from ucloud.cli.main import main
from ucloud.cli.replay_billing import BILLED_SUBJECTS
from ucloud.config import Config
from ucloud.errors import ExitCode, InputError, NotFound
from ucloud.eventlog import EventLog, Record
from ucloud.events.order import OrderPlaced, PriceLine
from ucloud.ids import new_id
from ucloud.replay.audit import AuditLine, audit, audit_vm
from ucloud.replay.billing import BILLED_TAGS, bill
from ucloud.replay.prices import load_prices
from ucloud.replay.reader import scan, scan_events

pytestmark = pytest.mark.servers

BASE = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
SPEC = ev.Resources(cpu=2, ram_mib=4096, ssd_mib=20480)
PRICES = """currency = "CHF"
decimals = 2
[per_minute]
cpu = 0.0007
ram_gib = 0.0009
ssd_gib = 0.000008
nic = 0.0001
[per_minute.images]
debian-12 = 0.001
"""


def t(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def history(vms: dict[str, str]) -> list[ev.Event]:
    """VMs of two owners: one ordered, one crashing and restarting, one still running."""
    image = new_id()  # VMs name their image by id; the price table names it "debian-12"
    out: list[ev.Event] = [ev.ImageRequested(id=new_id(), at=t(-120), actor="admin", image=image,
                                             owner="admin", name="debian-12", file=new_id(),
                                             public=True)]
    for n, (vm, owner) in enumerate(vms.items()):
        order = ""
        if n == 0:
            order = new_id()
            out.append(OrderPlaced(
                id=new_id(), at=t(0), actor=owner, order=order, owner=owner, vm=vm, spec=SPEC,
                currency="CHF",
                lines=(PriceLine(item="vm", quantity=Decimal(1), unit_price=Decimal("0.01")),),
            ))
        first = ev.VmRequested(id=new_id(), at=t(n), actor=owner, vm=vm, owner=owner,
                               name=f"web{n}", spec=SPEC, image=image, order=order)
        scheduled = ev.VmScheduled(**ev.Cause.of(first, "system:scheduler", t(n)).envelope("s"),
                                   vm=vm, host="h1")
        placed = ev.HostVmPlaced(**ev.Cause.of(first, "system:scheduler", t(n)).envelope("p"),
                                 host="h1", vm=vm, resources=SPEC)
        started = ev.VmStarted(**ev.Cause.of(scheduled, "system:hostd", t(n + 1.5)).envelope("a"),
                               vm=vm, host="h1")
        out += [first, scheduled, placed, started]
        if n % 3 == 1:
            crashed = ev.VmCrashed(**ev.Cause.of(started, "system:hostd", t(30)).envelope("c"),
                                   vm=vm, host="h1", reason="oom")
            again = ev.VmStarted(**ev.Cause.of(crashed, "system:hostd", t(30.2)).envelope("r"),
                                 vm=vm, host="h1")
            out += [crashed, again]
        if n % 3 != 2:
            out.append(ev.VmDeleted(**ev.Cause.of(started, owner, t(60 + n)).envelope("d"),
                                    vm=vm, host="h1"))
    return out


async def fill(log: EventLog) -> tuple[list[ev.Event], dict[str, str]]:
    vms = {new_id(): owner for owner in ("alice", "bob") for _ in range(3)}
    events = sorted(history(vms), key=lambda e: e.at)
    for event in events:
        await log.append(event)
    return events, vms


STORED_HEADERS = {"Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject",
                  "Nats-Last-Sequence"}


def snapshot(records: list[Record]) -> list[tuple[int, str, dict[str, str], bytes]]:
    """What a record says, without the headers a direct get adds to the stored ones."""
    return [(r.seq, r.subject, {k: v for k, v in r.headers.items() if k not in STORED_HEADERS},
             r.data) for r in records]


async def collect(log: EventLog, **options: object) -> list[Record]:
    return [r async for batch in scan(log, **options) for r in batch]  # type: ignore[arg-type]


def tag_of(record: Record) -> str:
    tokens = record.subject.split(".")  # ucloud.evt.<aggregate>.<id>.<event>
    return f"{tokens[2]}.{tokens[4]}"


async def test_a_scan_reads_what_direct_gets_read(event_log: EventLog) -> None:
    events, _ = await fill(event_log)
    junk = await event_log.append_raw(f"ucloud.evt.vm.{new_id()}.started", b"{not json",
                                      {"Nats-Msg-Id": new_id()})
    scanned = await collect(event_log, batch=7)  # small pulls: many requests in flight
    direct = await event_log.records("ucloud.evt.>")
    assert snapshot(scanned) == snapshot(direct)
    assert [r.seq for r in scanned] == list(range(1, len(events) + 2)) and scanned[-1].seq == junk
    assert [r.event() for r in scanned[:-1]] == events
    pairs = zip(scanned, direct, strict=True)
    assert all(abs(a.time - b.time) < timedelta(microseconds=2) for a, b in pairs)

    skipped: list[int] = []
    decoded = [item async for batch in scan_events(event_log, skipped=skipped) for item in batch]
    assert decoded == list(enumerate(events, start=1)) and skipped == [junk]

    billed = await collect(event_log, subjects=BILLED_SUBJECTS)
    assert snapshot(billed) == snapshot([r for r in direct if tag_of(r) in BILLED_TAGS])
    assert {tag_of(r) for r in billed} == {
        "vm.requested", "vm.started", "vm.crashed", "vm.deleted", "order.placed",
        "image.requested"}

    before = (await event_log.js.stream_info(event_log.stream)).state.consumer_count
    middle = await collect(event_log, start=5, stop=9, batch=2)
    assert [r.seq for r in middle] == [5, 6, 7, 8, 9]
    assert await collect(event_log, start=junk + 1) == []
    assert await collect(event_log, start_time=datetime.now(UTC) + timedelta(minutes=1)) == []
    since = await collect(event_log, start_time=events[-3].at - timedelta(microseconds=1))
    assert [r.seq for r in since][:1] and since[-1].seq == junk
    after = (await event_log.js.stream_info(event_log.stream)).state.consumer_count
    assert after == before  # every scan removed its consumer


async def test_audit_vm_reads_one_vms_events(event_log: EventLog) -> None:
    events, vms = await fill(event_log)
    vm, owner = next(iter(vms.items()))
    lines = await audit_vm(event_log, vm)
    assert lines == audit(enumerate(events, start=1), vm=vm)
    assert [line.event for line in lines] == [
        "vm.requested", "vm.scheduled", "vm.started", "vm.deleted"
    ]
    assert {line.correlation for line in lines} == {lines[0].event_id}
    assert await audit_vm(event_log, vm, owner=owner) == lines
    with pytest.raises(NotFound):
        await audit_vm(event_log, vm, owner="mallory")  # not theirs: as if it did not exist
    with pytest.raises(NotFound):
        await audit_vm(event_log, new_id())
    with pytest.raises(InputError):
        await audit_vm(event_log, "a.b")


def config_file(config: Config, path: Path) -> Path:
    path.write_text(
        f'[nats]\nurl = "{config.nats.url}"\nstream = "{config.nats.stream}"\n'
        f'subject_root = "{config.nats.subject_root}"\n'
        f"[etcd]\nendpoints = {json.dumps(config.etcd.endpoints)}\n"
        f'prefix = "{config.etcd.prefix}"\n'
    )
    return path


async def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_billing_cli_prints_the_folds_invoice(
    event_log: EventLog, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, vms = await fill(event_log)
    await event_log.append_raw(f"ucloud.evt.vm.{new_id()}.stopped", b"junk",
                               {"Nats-Msg-Id": new_id()})
    (tmp_path / "prices.toml").write_text(PRICES)
    start, end = t(-10), t(45.5)
    argv = ["--config", str(config_file(config, tmp_path / "ucloud.toml")), "replay", "billing",
            "--from", start.isoformat(), "--to", end.isoformat(),
            "--prices", str(tmp_path / "prices.toml")]

    code, out, err = await run([*argv, "-o", "json"], capsys)
    assert code == 0, err
    assert "skipped 1 records" in err
    expected = bill(events, load_prices(tmp_path / "prices.toml"), start=start, end=end,
                    now=datetime.now(UTC))
    assert json.loads(out) == json.loads(msgspec.json.encode(expected))
    invoice = json.loads(out)
    assert [o["owner"] for o in invoice["owners"]] == ["alice", "bob"]
    assert sum(len(o["vms"]) for o in invoice["owners"]) == len(vms)
    ordered = [vm for o in invoice["owners"] for vm in o["vms"] if vm["order"]]
    assert len(ordered) == 1 and ordered[0]["charges"][0]["item"] == "vm"
    licensed = [vm for o in invoice["owners"] for vm in o["vms"]
                if any(c["item"] == "image" for c in vm["charges"])]
    assert len(licensed) == len(vms) - 1  # the image requested before the window, by name
    assert (await run([*argv, "-o", "json"], capsys))[1] == out  # the same replay twice

    code, text, _ = await run([*argv, "-o", "csv", "--owner", "bob"], capsys)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0 and {row["owner"] for row in rows} == {"bob", ""}
    charges = [row for row in rows if row["item"] != "total"]
    bob = next(o for o in invoice["owners"] if o["owner"] == "bob")
    assert sum(Decimal(row["amount"]) for row in charges) == Decimal(bob["totals"]["CHF"])
    assert rows[-1]["item"] == "total" and Decimal(rows[-1]["amount"]) == Decimal(
        bob["totals"]["CHF"])

    code, table, _ = await run(argv, capsys)
    assert code == 0 and f"total CHF {invoice['totals']['CHF']}" in table


async def test_billing_cli_refuses_the_future_and_changes_nothing(
    event_log: EventLog, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await fill(event_log)
    last = await event_log.last_sequence()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    argv = ["--config", str(config_file(config, tmp_path / "ucloud.toml")), "replay", "billing",
            "--from", t(0).isoformat(), "--to", future]
    code, out, err = await run(argv, capsys)
    assert code == ExitCode.USAGE and out == ""
    assert "--to" in err and "in the future" in err
    code, _, err = await run([*argv[:-1], "yesterday"], capsys)
    assert code == ExitCode.USAGE and "--to" in err and "ISO 8601" in err
    assert await event_log.last_sequence() == last
    code, out, err = await run([*argv[:-1], "now", "-o", "json"], capsys)
    assert code == 0, err
    end = datetime.fromisoformat(json.loads(out)["end"])
    assert abs(datetime.now(UTC) - end) < timedelta(minutes=1)


async def test_audit_cli_with_a_data_dir(
    event_log: EventLog, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, vms = await fill(event_log)
    (tmp_path / "ucloud.toml").write_text(
        f'[nats]\nstream = "{config.nats.stream}"\nsubject_root = "{config.nats.subject_root}"\n'
    )
    (tmp_path / "up.json").write_text(json.dumps(
        {"nats": config.nats.url, "etcd": config.etcd.endpoints, "pid": 0}))
    vm = list(vms)[1]  # bob's or alice's second VM: it crashed and restarted
    code, out, err = await run(["replay", "audit", "--vm", vm, "-o", "json",
                                "--data-dir", str(tmp_path)], capsys)
    assert code == 0, err
    lines = msgspec.json.decode(out, type=list[AuditLine])
    assert lines == await audit_vm(event_log, vm)
    assert [line.event for line in lines] == [
        "vm.requested", "vm.scheduled", "vm.started", "vm.crashed", "vm.started", "vm.deleted"
    ]

    code, out, _ = await run(["replay", "audit", "--owner", "alice", "--since",
                              t(29).isoformat(), "--data-dir", str(tmp_path)], capsys)
    assert code == 0
    alice = audit(enumerate(events, start=1), owner="alice", since=t(29))
    assert out.splitlines()[0].split() == ["TIME", "ACTOR", "CORRELATION", "EVENT", "ID",
                                           "SUMMARY"]
    assert [row.split()[3] for row in out.splitlines()[1:]] == [line.event for line in alice]


async def test_audit_and_billing_take_names_and_refuse_unknown_ones(
    event_log: EventLog, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, vms = await fill(event_log)
    conf = ["--config", str(config_file(config, tmp_path / "ucloud.toml"))]
    vm = list(vms)[1]
    code, out, err = await run([*conf, "replay", "audit", "--vm", vm, "-o", "json"], capsys)
    assert code == 0, err
    by_id = msgspec.json.decode(out, type=list[AuditLine])
    # fill() names its VMs web0, web1, ... in every run: the name means the latest web1
    for owner in ([], ["--owner", vms[vm]]):
        code, out, err = await run(
            [*conf, "replay", "audit", "--vm", "web1", *owner, "-o", "json"], capsys
        )
        assert code == 0, err
        by_name = msgspec.json.decode(out, type=list[AuditLine])
        assert by_name == by_id

    code, out, err = await run([*conf, "replay", "audit", "--vm", "no-such-vm"], capsys)
    assert (code, out) == (ExitCode.NOT_FOUND, "")
    assert "--vm: no vm with the id or name no-such-vm in the log" in err
    code, out, err = await run([*conf, "replay", "billing", "--from", t(0).isoformat(), "--to",
                                t(45).isoformat(), "--owner", "nobody-at-all"], capsys)
    assert (code, out) == (ExitCode.NOT_FOUND, "")
    assert "--owner: no user nobody-at-all" in err
