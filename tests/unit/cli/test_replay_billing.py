"""``ucloud replay billing`` output: money is fixed-point text in every format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ucloud.cli.replay_billing import render
from ucloud.events.types import Resources
from ucloud.replay.billing import Charge, Invoice, OwnerBill, VmBill

START = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
END = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def invoice() -> Invoice:
    charge = Charge(item="ssd_gib", quantity=Decimal("1"), unit_price=Decimal("8E-7"),
                    minutes=3, amount=Decimal("0.0000024"))
    bill = VmBill(vm="v1", name="web", owner="alice", minutes=3,
                  spec=Resources(cpu=1, ram_mib=256, ssd_mib=1024), image="i", nics=0,
                  order="", currency="CHF", charges=(charge,), total=Decimal("0.0000024"))
    owner = OwnerBill(owner="alice", vms=(bill,), totals={"CHF": Decimal("0.0000024")})
    return Invoice(start=START, end=END, owners=(owner,), totals={"CHF": Decimal("0.0000024")})


@pytest.mark.parametrize("output", ["json", "csv", "table"])
def test_no_exponent_in_any_format(output: str) -> None:
    text = render(invoice(), output)
    assert "E-" not in text and "0.0000008" in text


def test_json_keeps_its_shape() -> None:
    data = json.loads(render(invoice(), "json"))
    charge = data["owners"][0]["vms"][0]["charges"][0]
    assert charge == {"item": "ssd_gib", "quantity": "1", "unit_price": "0.0000008",
                      "minutes": 3, "amount": "0.0000024"}
    assert data["start"] == "2026-11-21T07:00:00Z"
    assert data["totals"] == {"CHF": "0.0000024"}
