"""Quotes and orders over real HTTP and the real CLI; billing at the agreed price."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway
from tests.integration.test_replay import config_file
from ucloud import events as ev
from ucloud.cli.main import main
from ucloud.cli.replay_billing import BILLED_SUBJECTS
from ucloud.config import Config
from ucloud.ids import derive_id
from ucloud.projections.rebuild import verify
from ucloud.replay.billing import bill
from ucloud.replay.prices import load_prices
from ucloud.replay.reader import scan_events

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]

TODAY = """
currency = "CHF"
decimals = 2
[per_minute]
cpu = 0.001
ram_gib = 0.0005
ssd_gib = 0.00001
nic = 0.0002
[per_minute.images]
"windows-2022" = 0.003
"""
LATER = TODAY.replace("0.001", "0.002").replace("0.0005", "0.001").replace("0.00001", "0.00002")
SPEC = {"cpu": 2, "ram": "2G", "ssd": 10}
# 2 x 0.001 + 2 x 0.0005 + 10 x 0.00001 per minute, x 43200 for 30 days
SPEC_LINES = [
    {"item": "cpu", "quantity": "2", "unit_price": "0.001", "per_minute": "0.002"},
    {"item": "ram_gib", "quantity": "2", "unit_price": "0.0005", "per_minute": "0.0010"},
    {"item": "ssd_gib", "quantity": "10", "unit_price": "0.00001", "per_minute": "0.00010"},
]


@dataclass
class Setup:
    gw: Running
    alice: User
    bob: User
    prices: Path


@pytest.fixture
async def setup(config: Config, tmp_path: Path) -> AsyncIterator[Setup]:
    prices = tmp_path / "prices.toml"
    prices.write_text(TODAY)
    mine = gateway_config(config, tmp_path)
    mine = msgspec.structs.replace(
        mine, billing=msgspec.structs.replace(mine.billing, prices=str(prices))
    )
    async with running_gateway(mine) as gw:
        alice, bob = await gw.new_user("alice"), await gw.new_user("bob")
        await gw.image("alice", "debian")
        yield Setup(gw, alice, bob, prices)


async def test_a_quote_prices_a_spec_at_todays_table(setup: Setup) -> None:
    gw = setup.gw
    client = gw.client(setup.alice)
    await gw.image("admin", "windows-2022", public=True)
    await gw.network("alice", "lan")
    await gw.network("bob", "theirs")
    before = await gw.last_seq()

    answer = await client.post("/v1/orders/quote", json=SPEC)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "currency": "CHF", "per_minute": "0.00310", "per_30_days": "133.92",
        "lines": SPEC_LINES,
    }
    licensed = (await client.post("/v1/orders/quote", json={
        **SPEC, "ram": "1536M", "image": "windows-2022", "networks": ["lan"],
    })).json()
    assert [(x["item"], x["quantity"]) for x in licensed["lines"]] == [
        ("cpu", "2"), ("ram_gib", "1.5"), ("ssd_gib", "10"), ("nic", "1"), ("image", "1")]
    # 0.002 + 0.00075 + 0.0001 + 0.0002 + 0.003
    assert (licensed["per_minute"], licensed["per_30_days"]) == ("0.00605", "261.36")
    plain = (await client.post("/v1/orders/quote", json={**SPEC, "image": "debian"})).json()
    assert plain["per_minute"] == "0.00310"  # an image the table does not price is free

    cases: list[tuple[dict[str, Any], str]] = [
        ({**SPEC, "cpu": 0}, "cpu"),
        ({**SPEC, "cpu": 2000}, "cpu"),
        ({**SPEC, "ram": "lots"}, "ram"),
        ({**SPEC, "ram": 0}, "ram"),
        ({**SPEC, "ssd": "1.00001G"}, "ssd"),
        ({**SPEC, "hdd": -1}, "hdd"),
        ({"cpu": 2, "ram": 2}, "ssd"),
        ({**SPEC, "image": "nope"}, "image"),
        ({**SPEC, "networks": ["theirs"]}, "networks[0]"),
        ({**SPEC, "networks": ["lan", "lan"]}, "networks[1]"),
        ({**SPEC, "colour": "blue"}, "colour"),
    ]
    for body, field in cases:
        bad = await client.post("/v1/orders/quote", json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["field"] == field and bad.json()["error"], (body, bad.text)
    assert (await gw.client().post("/v1/orders/quote", json=SPEC)).status_code == 401

    setup.prices.write_text(LATER)  # the table as it reads at the moment of the quote
    later = (await client.post("/v1/orders/quote", json=SPEC)).json()
    assert (later["per_minute"], later["per_30_days"]) == ("0.00620", "267.84")
    setup.prices.write_text("currency = 'CHF'\n[per_minute]\ncpu = -1\n")
    broken = await client.post("/v1/orders/quote", json=SPEC)
    assert broken.status_code == 500 and "per_minute" in broken.json()["error"]
    assert await gw.last_seq() == before  # quotes record nothing


async def test_an_ordered_vm_is_billed_at_the_agreed_price(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, alice, bob = setup.gw, setup.alice, setup.bob
    client = gw.client(alice)
    answer = await client.post("/v1/vms", json={**SPEC, "name": "web", "image": "debian",
                                                "order": True})
    assert answer.status_code == 202, answer.text
    vm = answer.json()
    order_id = vm["order"]
    assert order_id
    plain = (await client.post("/v1/vms", json={**SPEC, "name": "db", "image": "debian"})).json()
    assert plain["order"] == ""

    orders, _ = await gw.log.load("order", order_id)
    requested, _ = await gw.log.load("vm", vm["id"])
    placed, first = orders[0].event, requested[0].event
    assert isinstance(placed, ev.OrderPlaced) and isinstance(first, ev.VmRequested)
    assert orders[0].seq < requested[0].seq  # the price is in the log before the VM
    assert (placed.owner, placed.vm, placed.currency, placed.image) == (
        "alice", vm["id"], "CHF", "debian")
    assert [(x.item, x.quantity, x.unit_price) for x in placed.lines] == [
        (x["item"], Decimal(x["quantity"]), Decimal(x["unit_price"])) for x in SPEC_LINES]
    assert first.order == order_id and first.correlation == placed.correlation

    shown = (await client.get(f"/v1/orders/{order_id}")).json()
    assert (shown["id"], shown["vm"], shown["owner"]) == (order_id, vm["id"], "alice")
    assert shown["lines"] == SPEC_LINES
    assert (shown["per_minute"], shown["per_30_days"]) == ("0.00310", "133.92")
    assert (await client.get("/v1/orders")).json() == [shown]
    assert (await gw.client(gw.admin).get(f"/v1/orders/{order_id}")).json() == shown
    theirs = gw.client(bob)
    hidden = await theirs.get(f"/v1/orders/{order_id}")
    assert hidden.status_code == 404 and hidden.json()["field"] == "id"
    assert (await theirs.get("/v1/orders")).json() == []
    assert (await theirs.get(f"/v1/vms/{vm['id']}/events")).status_code == 404
    trail = (await client.get("/v1/vms/web/events")).json()
    assert [line["type"] for line in trail] == ["vm.requested"]
    assert f"order={order_id}" in trail[0]["summary"]

    # Both VMs run 100 minutes; then the table doubles its prices.
    now = datetime.now(UTC)
    ran = [(now - timedelta(minutes=150), "started"), (now - timedelta(minutes=50), "stopped")]
    for ident in (vm["id"], plain["id"]):
        for at, what in ran:
            kind = ev.VmStarted if what == "started" else ev.VmStopped
            await gw.append(kind(id=derive_id(ident, what), at=at, actor="system:hostd",
                                 vm=ident, host="h1"))
    setup.prices.write_text(LATER)

    events = [e async for batch in scan_events(gw.log, subjects=BILLED_SUBJECTS)
              for _, e in batch]
    start, end = now - timedelta(hours=3), now
    invoice = bill(events, load_prices(setup.prices), start=start, end=end,
                   now=datetime.now(UTC), owner="alice")
    bills = {b.name: b for b in invoice.owners[0].vms}
    # 100 minutes x (0.002 + 0.001 + 0.0001) agreed; x (0.004 + 0.002 + 0.0002) at the new table
    assert (bills["web"].order, bills["web"].total) == (order_id, Decimal("0.31"))
    assert (bills["db"].order, bills["db"].total) == ("", Decimal("0.62"))

    argv = ["--config", str(config_file(gw.config, tmp_path / "ucloud.toml")), "replay",
            "billing", "--from", start.isoformat(), "--to", end.isoformat(), "--owner", "alice",
            "--prices", str(setup.prices), "-o", "json"]
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    replayed = {b["name"]: b for b in json.loads(out)["owners"][0]["vms"]}
    assert (replayed["web"]["order"], replayed["web"]["total"]) == (order_id, "0.31")
    assert replayed["db"]["total"] == "0.62"
    # the orders in etcd are what a replay of the log makes of it
    checkpoint, differences = await verify(gw.store, gw.log, gw.config.etcd.prefix,
                                           max_txn_ops=gw.config.etcd.max_txn_ops)
    assert checkpoint == await gw.last_seq() and differences == []


async def test_a_quote_and_the_order_placed_from_it_agree_on_the_30_day_price(
    setup: Setup,
) -> None:
    gw = setup.gw
    client = gw.client(setup.alice)
    await gw.network("alice", "lan")
    # 0.002 + 0.001 + 1.5 x 0.00001 + 0.0002 = 0.003215 per minute: 138.888 per 30 days
    spec = {"cpu": 2, "ram": "2G", "ssd": "1536M", "image": "debian", "networks": ["lan"]}
    quoted = (await client.post("/v1/orders/quote", json=spec)).json()
    made = await client.post("/v1/vms", json={**spec, "name": "web", "order": True})
    assert made.status_code == 202, made.text
    order = (await client.get(f"/v1/orders/{made.json()['order']}")).json()
    assert (quoted["per_minute"], quoted["per_30_days"]) == ("0.003215", "138.89")
    assert (order["per_minute"], order["per_30_days"]) == (
        quoted["per_minute"], quoted["per_30_days"])
    assert order["lines"] == quoted["lines"]


async def test_creating_with_an_order_checks_first_and_appends_nothing_on_bad_input(
    setup: Setup,
) -> None:
    gw = setup.gw
    client = gw.client(setup.alice)
    before = await gw.last_seq()
    body = {**SPEC, "name": "web", "image": "debian", "order": True}
    for bad, field in (({**body, "ram": "lots"}, "ram"), ({**body, "order": "yes"}, "order")):
        answer = await client.post("/v1/vms", json=bad)
        assert answer.status_code == 400 and answer.json()["field"] == field, answer.text
    setup.prices.write_text("not toml [")
    broken = await client.post("/v1/vms", json=body)
    assert broken.status_code == 500 and "TOML" in broken.json()["error"]
    assert await gw.last_seq() == before
    assert (await client.get("/v1/vms")).json() == []


async def test_a_quote_and_a_vm_create_accept_and_refuse_the_same_specs(setup: Setup) -> None:
    gw = setup.gw
    client = gw.client(setup.alice)
    await gw.network("alice", "lan")
    await gw.network("bob", "theirs")
    before = await gw.last_seq()
    specs: list[dict[str, Any]] = [
        {**SPEC, "cpu": 0}, {**SPEC, "cpu": 1025}, {**SPEC, "ram": "lots"}, {**SPEC, "ram": 0},
        {**SPEC, "ssd": "1.00001G"}, {**SPEC, "hdd": -1}, {**SPEC, "hdd": "2P"},
        {"cpu": 2, "ram": 2}, {**SPEC, "image": "nope"}, {**SPEC, "networks": ["theirs"]},
        {**SPEC, "networks": ["lan", "lan"]}, {**SPEC, "colour": "blue"},
    ]
    for spec in specs:
        quoted = await client.post("/v1/orders/quote", json={"image": "debian", **spec})
        created = await client.post("/v1/vms", json={"name": "web", "image": "debian", **spec})
        assert quoted.status_code == created.status_code == 400, (spec, quoted.text)
        assert quoted.json() == created.json(), spec
    assert await gw.last_seq() == before
    edge = {**SPEC, "cpu": 1024, "hdd": "1T", "image": "debian", "networks": ["lan"]}
    assert (await client.post("/v1/orders/quote", json=edge)).status_code == 200
    made = await client.post("/v1/vms", json={**edge, "name": "web"})
    assert made.status_code == 202, made.text


async def test_the_cli_quotes_orders_and_shows_orders(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = setup.gw
    monkeypatch.setenv("UCLOUD_URL", gw.url)
    monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(tmp_path / "home"))

    async def ucloud(user: User, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setenv("UCLOUD_TOKEN", user.token)
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await ucloud(setup.alice, "order", "quote", "--cpu", "2", "--ram", "2G",
                                  "--ssd", "10")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["ITEM", "QUANTITY", "UNIT", "PRICE", "PER", "MINUTE"]
    assert "per minute:   CHF 0.00310" in out and "per 30 days:  CHF 133.92" in out
    code, out, _ = await ucloud(setup.alice, "order", "quote", "--cpu", "2", "--ram", "2G",
                                "--ssd", "10", "--hdd", "1", "-o", "json")
    assert code == 0 and json.loads(out)["per_30_days"] == "133.92"  # HDD costs nothing here
    code, _, err = await ucloud(setup.alice, "order", "quote", "--cpu", "2", "--ram", "2G",
                                "--ssd", "10", "--image", "nope")
    assert code == 2 and err.startswith("ucloud: image: ")  # the gateway: 400

    code, out, err = await ucloud(setup.alice, "vm", "create", "web", "--image", "debian",
                                  "--cpu", "2", "--ram", "2G", "--ssd", "10", "--order")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("ordered at CHF 0.00310 per minute (CHF 133.92 per 30 days)")
    order_id = first.rsplit(" ", 1)[1]
    code, out, _ = await ucloud(setup.alice, "order", "list", "-o", "json")
    listed = json.loads(out)
    assert code == 0 and [o["id"] for o in listed] == [order_id]
    code, out, _ = await ucloud(setup.alice, "order", "list")
    assert out.splitlines()[1].split()[:4] == [order_id, listed[0]["vm"], "alice", "CHF"]
    code, out, _ = await ucloud(setup.alice, "order", "show", order_id)
    assert code == 0 and "per 30 days:  CHF 133.92" in out and "ram_gib" in out
    code, _, err = await ucloud(setup.bob, "order", "show", order_id)
    assert code == 3 and err.startswith("ucloud: id: ")
    code, out, _ = await ucloud(setup.alice, "vm", "events", "web", "-o", "json")
    assert [line["type"] for line in json.loads(out)] == ["vm.requested"]
