"""Billing and prices: table tests, and random lifecycles against a tick-by-tick reference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.config import Config
from ucloud.errors import ConfigError, InputError
from ucloud.events.order import OrderPlaced, PriceLine
from ucloud.ids import derive_id
from ucloud.replay.billing import OwnerBill, UsageFold, bill
from ucloud.replay.prices import load_prices, parse_prices, quote

T0 = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 21, tzinfo=UTC)
TICK = timedelta(seconds=15)
PRICES = parse_prices(
    {
        "currency": "CHF",
        "decimals": 2,
        "per_minute": {
            "cpu": Decimal("0.0007"),
            "ram_gib": Decimal("0.0009"),
            "ssd_gib": Decimal("0.000008"),
            "hdd_gib": Decimal("0.000002"),
            "nic": Decimal("0.0001"),
            "images": {"windows": Decimal("0.003")},
        },
    }
)
SPEC = ev.Resources(cpu=2, ram_mib=2048, ssd_mib=10240)


def envelope(key: str, at: datetime, actor: str = "system:hostd") -> dict[str, Any]:
    return {"id": derive_id("00000000-0000-7000-8000-000000000000", key), "at": at,
            "actor": actor}


def requested(vm: str, owner: str, at: datetime, *, order: str = "", nics: int = 0,
              image: str = "debian", spec: ev.Resources = SPEC) -> ev.VmRequested:
    return ev.VmRequested(
        **envelope(f"requested/{vm}", at, owner), vm=vm, owner=owner, name=f"n-{vm}", spec=spec,
        image=image,
        nics=tuple(ev.Nic(network="net", mac=f"02:00:00:00:00:{i:02x}") for i in range(nics)),
        order=order,
    )


def lifecycle(vm: str, *steps: tuple[str, datetime]) -> list[ev.Event]:
    kinds = {"started": ev.VmStarted, "stopped": ev.VmStopped, "crashed": ev.VmCrashed,
             "deleted": ev.VmDeleted, "lost": ev.VmLost, "migrated": ev.VmMigrated}
    out: list[ev.Event] = []
    for n, (kind, at) in enumerate(steps, start=1):
        extra: dict[str, Any] = {"host": "h1"}
        if kind in ("crashed", "lost"):
            extra["reason"] = "test"
        if kind == "migrated":
            extra = {"from_host": "h1", "to_host": "h2"}
        out.append(kinds[kind](**envelope(f"{vm}/{n}", at), vm=vm, **extra))
    return out


def minutes_of(owners: tuple[OwnerBill, ...]) -> dict[str, int]:
    return {vm.vm: vm.minutes for owner in owners for vm in owner.vms}


# --- prices and quotes ------------------------------------------------------------------


def test_the_shipped_sample_is_the_default_price_table() -> None:
    table = load_prices(Path(Config().billing.prices))
    assert table.currency == "CHF" and table.per_minute.cpu > 0


def test_quote_prices_a_spec_per_minute_and_per_30_days() -> None:
    q = quote(SPEC, PRICES, image="windows", nics=2)
    assert [(line.item, line.quantity) for line in q.lines] == [
        ("cpu", Decimal(2)), ("ram_gib", Decimal(2)), ("ssd_gib", Decimal(10)),
        ("nic", Decimal(2)), ("image", Decimal(1)),
    ]
    # 2*0.0007 + 2*0.0009 + 10*0.000008 + 2*0.0001 + 0.003
    assert q.per_minute == Decimal("0.00648")
    assert q.per_30_days == Decimal("279.94")  # 0.00648 * 43200 = 279.936
    assert quote(SPEC, PRICES, image="debian").per_minute == Decimal("0.00328")
    encoded = msgspec.json.decode(msgspec.json.encode(q))
    assert Decimal(encoded["per_minute"]) == Decimal("0.00648")  # a decimal string


def test_quote_refuses_a_negative_spec() -> None:
    with pytest.raises(InputError, match="spec.cpu"):
        quote(ev.Resources(cpu=-1, ram_mib=1, ssd_mib=1), PRICES)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"currency": "swiss francs"}, "currency"),
        ({"decimals": 12}, "decimals"),
        ({"per_minute": {"cpu": "-1", "ram_gib": 1, "ssd_gib": 1}}, "per_minute.cpu"),
        ({"per_minute": {"cpu": "NaN", "ram_gib": 1, "ssd_gib": 1}}, "per_minute.cpu"),
        ({"per_minute": {"cpu": 1, "ram_gib": 1}}, "ssd_gib"),
        ({"per_minute": {"cpu": 1, "ram_gib": 1, "ssd_gib": 1, "gpu": 1}}, "gpu"),
        ({"per_minute": {"cpu": "cheap", "ram_gib": 1, "ssd_gib": 1}}, "per_minute.cpu"),
    ],
)
def test_bad_price_tables_name_the_key(change: dict[str, object], key: str) -> None:
    raw: dict[str, object] = {"currency": "CHF", "per_minute": {"cpu": 1, "ram_gib": 1,
                                                                "ssd_gib": 1}}
    raw.update(change)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_prices(raw)


def test_price_table_files_are_read_as_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('currency = "EUR"\n[per_minute]\ncpu = 0.1\nram_gib = "0.2"\nssd_gib = 3\n')
    table = load_prices(path)
    assert (table.per_minute.cpu, table.per_minute.ram_gib) == (Decimal("0.1"), Decimal("0.2"))
    path.write_text("currency = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_prices(path)
    with pytest.raises(ConfigError, match="no such price table"):
        load_prices(tmp_path / "missing.toml")


# --- billing: tables ----------------------------------------------------------------------


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("steps", "start", "end", "minutes"),
    [
        # 61 seconds of running is 2 minutes: partial minutes are rounded up
        ([("started", at(0.5)), ("stopped", at(1.5) + timedelta(seconds=1))], 0, 10, 2),
        ([("started", at(1)), ("stopped", at(3))], 0, 10, 2),
        # running at the end of the window: billed up to the end
        ([("started", at(1))], 0, 10, 9),
        # running at the start of the window: billed from the start
        ([("started", at(1)), ("stopped", at(8))], 5, 10, 3),
        # crash and restart within a minute: one sum, rounded once
        ([("started", at(0)), ("crashed", at(0.25)), ("started", at(0.5)),
          ("stopped", at(0.75))], 0, 10, 1),
        # started again while running changes nothing; migration keeps it running
        ([("started", at(0)), ("started", at(2)), ("migrated", at(3)), ("stopped", at(4))],
         0, 10, 4),
        # deleted ends it; nothing counts after deletion
        ([("started", at(0)), ("deleted", at(2)), ("started", at(3))], 0, 10, 2),
        ([("started", at(0)), ("lost", at(2))], 0, 10, 2),
        # outside the window: not on the invoice
        ([("started", at(0)), ("stopped", at(2))], 5, 10, None),
        ([("started", at(12))], 5, 10, None),
    ],
)
def test_running_minutes(
    steps: list[tuple[str, datetime]], start: float, end: float, minutes: int | None
) -> None:
    events = [requested("v1", "alice", at(-1)), *lifecycle("v1", *steps)]
    invoice = bill(events, PRICES, start=at(start), end=at(end), now=NOW)
    assert minutes_of(invoice.owners).get("v1") == minutes


def test_charges_are_rounded_per_line_and_summed_per_owner_and_invoice() -> None:
    events = [
        requested("v1", "alice", at(0), nics=1, image="windows"),
        requested("v2", "alice", at(0)),
        requested("v3", "bob", at(0)),
        *lifecycle("v1", ("started", at(0)), ("stopped", at(100))),
        *lifecycle("v2", ("started", at(0))),
        *lifecycle("v3", ("started", at(10)), ("stopped", at(70))),
    ]
    invoice = bill(events, PRICES, start=at(0), end=at(1000), now=NOW)
    alice, bob = invoice.owners
    v1 = alice.vms[0]
    assert [(c.item, c.minutes, c.amount) for c in v1.charges] == [
        ("cpu", 100, Decimal("0.14")),
        ("ram_gib", 100, Decimal("0.18")),
        ("ssd_gib", 100, Decimal("0.01")),  # 0.008
        ("nic", 100, Decimal("0.01")),
        ("image", 100, Decimal("0.30")),
    ]
    assert v1.total == Decimal("0.64")
    assert alice.vms[1].total == Decimal("3.28")  # 1000 minutes at 0.00328
    assert alice.totals == {"CHF": Decimal("3.92")}
    # 60 minutes: cpu 0.084 -> 0.08, ram 0.108 -> 0.11, ssd 0.0048 -> 0.00 (not 0.1968 -> 0.20)
    assert bob.totals == {"CHF": Decimal("0.19")}
    assert invoice.totals == {"CHF": Decimal("4.11")}


def test_a_licensed_image_is_priced_by_the_name_its_id_was_requested_with() -> None:
    image = "01a1fcf0-0000-7000-8000-00000000000a"  # what VmRequested.image holds: an id
    named = ev.ImageRequested(**envelope("image", at(-5000), "bob"), image=image, owner="bob",
                              name="windows", file="f1", public=True)
    events = [named, requested("v1", "alice", at(0), image=image),
              requested("v2", "alice", at(0), image="01a1fcf0-0000-7000-8000-00000000000b"),
              *lifecycle("v1", ("started", at(0))), *lifecycle("v2", ("started", at(0)))]
    invoice = bill(events, PRICES, start=at(0), end=at(100), now=NOW)
    v1, v2 = invoice.owners[0].vms
    assert [(c.item, c.amount) for c in v1.charges if c.item == "image"] == [
        ("image", Decimal("0.30"))]  # 100 minutes at 0.003
    assert "image" not in [c.item for c in v2.charges]  # an image nobody named: no licence
    assert v1.total - v2.total == Decimal("0.30")


def test_an_order_fixes_the_price_and_currency() -> None:
    order = OrderPlaced(
        **envelope("order/o1", at(-2), "alice"), order="o1", owner="alice", vm="v1", spec=SPEC,
        lines=(PriceLine(item="flat", quantity=Decimal(1), unit_price=Decimal("0.01")),),
        currency="EUR",
    )
    events = [order, requested("v1", "alice", at(-1), order="o1"),
              requested("v2", "alice", at(-1), order="unknown"),
              *lifecycle("v1", ("started", at(0))), *lifecycle("v2", ("started", at(0)))]
    invoice = bill(events, PRICES, start=at(0), end=at(60), now=NOW)
    v1, v2 = invoice.owners[0].vms
    assert (v1.order, v1.currency, v1.total) == ("o1", "EUR", Decimal("0.60"))
    assert (v2.order, v2.currency, v2.total) == ("", "CHF", Decimal("0.19"))
    assert invoice.totals == {"CHF": Decimal("0.19"), "EUR": Decimal("0.60")}


def test_owner_filter() -> None:
    events = [requested("v1", "alice", at(0)), requested("v2", "bob", at(0)),
              *lifecycle("v1", ("started", at(0))), *lifecycle("v2", ("started", at(0)))]
    invoice = bill(events, PRICES, start=at(0), end=at(5), now=NOW, owner="bob")
    assert [o.owner for o in invoice.owners] == ["bob"]


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (at(0), NOW + timedelta(seconds=1), "to"),  # the future cannot be billed
        (at(5), at(5), "from"),
        (at(6), at(5), "from"),
        (datetime(2026, 10, 1), at(5), "from"),  # no time zone
    ],
)
def test_bad_windows_are_refused(start: datetime, end: datetime, field: str) -> None:
    with pytest.raises(InputError) as info:
        bill([], PRICES, start=start, end=end, now=NOW)
    assert info.value.field == field


# --- billing: random lifecycles against a reference ------------------------------------

OWNERS = ("alice", "bob", "carol")
MOVES = {  # state -> the steps a VM can take from it
    "new": ("started", "deleted"),
    "running": ("stopped", "crashed", "deleted", "migrated"),
    "stopped": ("started", "deleted"),
    "crashed": ("started", "deleted"),  # "started" after a crash is the restart
}
AFTER = {"started": "running", "stopped": "stopped", "crashed": "crashed", "migrated": "running",
         "deleted": "deleted"}


@dataclass
class Vm:
    vm: str
    owner: str
    events: list[ev.Event]
    order: OrderPlaced | None


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ev.Event], list[Vm], int, int]:
    vms: list[Vm] = []
    for i in range(draw(st.integers(1, 6))):
        vm, owner = f"vm{i}", draw(st.sampled_from(OWNERS))
        tick = draw(st.integers(0, 40))
        order = None
        if draw(st.booleans()):
            price = Decimal(draw(st.integers(1, 999))) / 10000
            order = OrderPlaced(
                **envelope(f"order/{i}", T0 + tick * TICK, owner), order=f"o{i}", owner=owner,
                vm=vm, spec=SPEC, currency="CHF",
                lines=(PriceLine(item="vm", quantity=Decimal(1), unit_price=price),),
            )
        first = requested(vm, owner, T0 + tick * TICK, order=order.order if order else "",
                          nics=draw(st.integers(0, 2)),
                          image=draw(st.sampled_from(("debian", "windows"))),
                          spec=ev.Resources(cpu=draw(st.integers(1, 8)),
                                            ram_mib=draw(st.integers(1, 64)) * 256,
                                            ssd_mib=draw(st.integers(1, 100)) * 1024,
                                            hdd_mib=draw(st.sampled_from((0, 512000)))))
        steps: list[tuple[str, datetime]] = []
        state = "new"
        for choice, gap in draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30)),
                                         max_size=10)):
            if state == "deleted":
                break
            tick += gap
            step = MOVES[state][choice % len(MOVES[state])]
            steps.append((step, T0 + tick * TICK))
            state = AFTER[step]
        vms.append(Vm(vm, owner, [first, *lifecycle(vm, *steps)], order))
    merged = [e for vm in vms for e in vm.events] + [vm.order for vm in vms if vm.order]
    merged.sort(key=lambda e: e.at)  # stable: each VM's own order is kept
    start = draw(st.integers(0, 200))
    end = draw(st.integers(start + 1, 400))
    return merged, vms, start, end


def running_at(events: list[ev.Event], t: datetime) -> bool:
    """The reference: is the VM running at instant ``t``? (Naive: scans its history.)"""
    running = False
    for event in events:
        if event.at > t:
            break
        if isinstance(event, ev.VmDeleted):
            return False
        if isinstance(event, ev.VmStarted):
            running = True
        elif isinstance(event, (ev.VmStopped, ev.VmCrashed, ev.VmLost)):
            running = False
    return running


def reference(vms: list[Vm], start: int, end: int) -> dict[str, dict[str, Decimal]]:
    """Owner -> VM -> total, computed tick by tick with prices written out by hand."""
    cents = Decimal("0.01")
    out: dict[str, dict[str, Decimal]] = {}
    for vm in vms:
        ticks = sum(running_at(vm.events, T0 + k * TICK) for k in range(start, end))
        if not ticks:
            continue
        minutes = math.ceil(ticks * 15 / 60)
        first = vm.events[0]
        assert isinstance(first, ev.VmRequested)
        if vm.order is not None:
            per_item = [vm.order.lines[0].unit_price]
        else:
            s, unit = first.spec, PRICES.per_minute
            per_item = [s.cpu * unit.cpu, s.ram_mib * unit.ram_gib / 1024,
                        s.ssd_mib * unit.ssd_gib / 1024, s.hdd_mib * unit.hdd_gib / 1024,
                        len(first.nics) * unit.nic,
                        unit.images["windows"] if first.image == "windows" else Decimal(0)]
        total = sum(((minutes * p).quantize(cents, ROUND_HALF_UP) for p in per_item),
                    Decimal(0))
        out.setdefault(vm.owner, {})[vm.vm] = total
    return out


@settings(max_examples=150, deadline=None)
@given(histories())
def test_billing_equals_a_tick_by_tick_reference(
    history: tuple[list[ev.Event], list[Vm], int, int],
) -> None:
    events, vms, start, end = history
    invoice = bill(events, PRICES, start=T0 + start * TICK, end=T0 + end * TICK, now=NOW)
    got = {o.owner: {vm.vm: vm.total for vm in o.vms} for o in invoice.owners}
    expected = reference(vms, start, end)
    assert got == expected
    grand = sum((t for owner in expected.values() for t in owner.values()), Decimal(0))
    assert sum(invoice.totals.values(), Decimal(0)) == grand
    for owner in invoice.owners:
        assert owner.totals.get("CHF", Decimal(0)) == sum(expected[owner.owner].values())


@settings(max_examples=50, deadline=None)
@given(histories(), st.integers(1, 7))
def test_the_same_replay_gives_the_same_invoice_however_it_is_fed(
    history: tuple[list[ev.Event], list[Vm], int, int], chunk: int,
) -> None:
    events, _, start, end = history
    begin, finish = T0 + start * TICK, T0 + end * TICK
    first = msgspec.json.encode(bill(events, PRICES, start=begin, end=finish, now=NOW))
    assert msgspec.json.encode(bill(events, PRICES, start=begin, end=finish, now=NOW)) == first
    fold = UsageFold(begin, finish)
    for i in range(0, len(events), chunk):  # a replay fed batch by batch
        fold.apply_all(events[i : i + chunk])
    assert msgspec.json.encode(fold.invoice(PRICES)) == first
    decoded = [ev.decode(ev.encode(e)) for e in events]  # as read back from the log
    assert msgspec.json.encode(bill(decoded, PRICES, start=begin, end=finish, now=NOW)) == first
