"""Orders' pure parts: the projection rule, specs and quotes as the API shows them, the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.cli.main import build_parser
from ucloud.cli.order_cmd import agreed_price, render_order, render_orders, render_quote
from ucloud.errors import InputError
from ucloud.events.order import PriceLine
from ucloud.gateway.routes_orders import quote_answer
from ucloud.gateway.spec import MAX_CPU, vm_resources
from ucloud.projections.apply import changes
from ucloud.projections.views import (
    OrderLineView,
    OrderView,
    decode_value,
    encode_value,
    is_projected,
    order_key,
    owner_key,
)
from ucloud.replay.prices import parse_prices, plain, quote

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = ev.Resources(cpu=2, ram_mib=2048, ssd_mib=10240)
PRICES = parse_prices({
    "currency": "CHF",
    "per_minute": {"cpu": Decimal("0.001"), "ram_gib": Decimal("0.0005"),
                   "ssd_gib": Decimal("0.0000008")},
})


def placed(**changed: Any) -> ev.OrderPlaced:
    fields: dict[str, Any] = {
        "id": "e1", "at": T0, "actor": "alice", "order": "o1", "owner": "alice", "vm": "v1",
        "spec": SPEC, "currency": "CHF", "image": "debian", "nics": 1,
        "lines": quote(SPEC, PRICES).lines, **changed,
    }
    return ev.OrderPlaced(**fields)


def test_an_order_becomes_a_view_and_an_owner_index() -> None:
    out = dict(changes({}, placed()))
    assert set(out) == {order_key("o1"), owner_key("alice", "order", "o1")}
    view = out[order_key("o1")]
    assert view == OrderView(
        id="o1", owner="alice", vm="v1", spec=SPEC, currency="CHF", image="debian", nics=1,
        lines=(
            OrderLineView(item="cpu", quantity="2", unit_price="0.001", per_minute="0.002"),
            OrderLineView(item="ram_gib", quantity="2", unit_price="0.0005",
                          per_minute="0.0010"),
            OrderLineView(item="ssd_gib", quantity="10", unit_price="0.0000008",
                          per_minute="0.0000080"),
        ),
        per_minute="0.0030080", per_30_days="129.9456000", placed_at=T0,
    )
    assert all(is_projected(key) for key in out)
    assert decode_value(order_key("o1"), encode_value(view)) == view
    # placed again (a redelivery, a replay onto the result): nothing changes
    assert changes(out, placed()) == []
    assert changes(out, placed(vm="v2")) == []


@pytest.mark.parametrize("decimals", [0, 2, 4, 8])
def test_an_order_and_its_quote_agree_on_the_30_day_price(decimals: int) -> None:
    prices = msgspec.structs.replace(PRICES, decimals=decimals)
    priced = quote(SPEC, prices)
    out = dict(changes({}, placed(lines=priced.lines, decimals=priced.decimals)))
    view = out[order_key("o1")]
    assert isinstance(view, OrderView)
    assert view.per_30_days == quote_answer(priced).per_30_days
    assert view.per_minute == quote_answer(priced).per_minute


def test_an_order_placed_before_orders_recorded_decimals_shows_the_exact_price() -> None:
    view = dict(changes({}, placed()))[order_key("o1")]
    assert isinstance(view, OrderView) and view.per_30_days == "129.9456000"


@pytest.mark.parametrize(
    ("cpu", "ram", "ssd", "hdd", "field"),
    [
        (0, 2, 10, 0, "cpu"),
        (-1, 2, 10, 0, "cpu"),
        (MAX_CPU + 1, 2, 10, 0, "cpu"),
        (1, 0, 10, 0, "ram"),
        (1, "12K", 10, 0, "ram"),
        (1, 2, "0M", 0, "ssd"),
        (1, 2, 10, -1, "hdd"),
        (1, 2, 10, True, "hdd"),
    ],
)
def test_a_bad_spec_names_its_field(
    cpu: int, ram: int | str, ssd: int | str, hdd: int | str, field: str
) -> None:
    with pytest.raises(InputError) as caught:
        vm_resources(cpu, ram, ssd, hdd)
    assert caught.value.field == field


def test_specs_read_sizes_as_users_write_them() -> None:
    assert vm_resources(2, "1536M", 10, "1T") == ev.Resources(
        cpu=2, ram_mib=1536, ssd_mib=10240, hdd_mib=1 << 20)
    assert vm_resources(MAX_CPU, 1, 1, 0).cpu == MAX_CPU


def test_a_quote_goes_out_in_fixed_point() -> None:
    answer = msgspec.to_builtins(quote_answer(quote(SPEC, PRICES)))
    assert answer == {
        "currency": "CHF", "per_minute": "0.0030080", "per_30_days": "129.95",
        "lines": [
            {"item": "cpu", "quantity": "2", "unit_price": "0.001", "per_minute": "0.002"},
            {"item": "ram_gib", "quantity": "2", "unit_price": "0.0005", "per_minute": "0.0010"},
            {"item": "ssd_gib", "quantity": "10", "unit_price": "0.0000008",
             "per_minute": "0.0000080"},
        ],
    }


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=0, max_value=10**6,
                   places=12))
def test_plain_money_is_exact_and_never_scientific(amount: Decimal) -> None:
    text = plain(amount)
    assert "E" not in text.upper() and Decimal(text) == amount


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 10**6)), max_size=6))
def test_an_orders_price_is_the_sum_of_its_lines(lines: list[tuple[int, int]]) -> None:
    priced = tuple(
        PriceLine(item=f"i{n}", quantity=Decimal(q), unit_price=Decimal(p).scaleb(-9))
        for n, (q, p) in enumerate(lines)
    )
    out = dict(changes({}, placed(lines=priced)))
    view = out[order_key("o1")]
    assert isinstance(view, OrderView)
    total = sum((Decimal(line.per_minute) for line in view.lines), Decimal(0))
    assert Decimal(view.per_minute) == total
    assert Decimal(view.per_30_days) == total * 43200


ORDER_JSON = {
    "id": "o1", "owner": "alice", "vm": "v1", "currency": "CHF",
    "spec": {"cpu": 2, "ram_mib": 2048, "ssd_mib": 10240, "hdd_mib": 0},
    "per_minute": "0.0031", "per_30_days": "133.92", "image": "debian", "nics": 0,
    "placed_at": "2026-01-01T00:00:00.5Z",
    "lines": [{"item": "cpu", "quantity": "2", "unit_price": "0.001", "per_minute": "0.002"}],
}


def test_what_the_cli_prints() -> None:
    assert agreed_price(ORDER_JSON) == (
        "ordered at CHF 0.0031 per minute (CHF 133.92 per 30 days), order o1")
    shown = render_order(ORDER_JSON)
    assert "placed:       2026-01-01T00:00:00Z" in shown and "ram:          2G" in shown
    assert shown.splitlines()[-1].split() == ["cpu", "2", "0.001", "0.002"]
    assert render_orders([ORDER_JSON]).splitlines()[1].split() == [
        "o1", "v1", "alice", "CHF", "0.0031", "2026-01-01T00:00:00Z"]
    quoted = render_quote({"currency": "CHF", "per_minute": "0.0031", "per_30_days": "133.92",
                           "lines": ORDER_JSON["lines"]})
    assert quoted.splitlines()[-2:] == ["per minute:   CHF 0.0031", "per 30 days:  CHF 133.92"]
    assert render_orders([]) == "ID  VM  OWNER  PER MINUTE  PLACED"


def test_the_cli_parses_orders_and_refuses_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["vm", "create", "web", "--image", "d", "--cpu", "1", "--ram", "1",
                              "--ssd", "1", "--order"])
    assert args.order is True
    quoted = parser.parse_args(["order", "quote", "--cpu", "2", "--ram", "1.5G", "--ssd", "10"])
    assert (quoted.cpu, quoted.ram, quoted.ssd, quoted.hdd) == (2, "1536M", "10240M", None)
    for argv in (["--cpu", "0", "--ram", "1", "--ssd", "1"],
                 ["--cpu", "1", "--ram", "lots", "--ssd", "1"],
                 ["--cpu", "1", "--ram", "1"]):
        with pytest.raises(SystemExit) as caught:
            parser.parse_args(["order", "quote", *argv])
        assert caught.value.code == 2
    assert "usage: ucloud order quote" in capsys.readouterr().err
