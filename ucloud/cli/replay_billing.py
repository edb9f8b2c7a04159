"""``ucloud replay billing``: per owner and VM, the running minutes of a window, priced.

    ucloud replay billing --from T --to T [--owner U] [--prices FILE] [-o table|json|csv]

Reads the VM lifecycle and order events from the start of the log (a VM started long
before ``--from`` is billed from ``--from``), folds them (``ucloud.replay.billing``) and
prints the invoice. ``--to`` in the future is refused: minutes that have not happened
cannot be billed. Prices come from ``--prices`` or ``[billing] prices`` in the config;
a VM ordered at an agreed price is billed at that price.

CSV has one row per charge, then one ``total`` row per owner and currency and one per
currency for the whole invoice (with an empty owner).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from ucloud.cli.events_cmd import reachable
from ucloud.cli.main import run_async
from ucloud.cli.replay_audit import parse_time, table, warn_skipped
from ucloud.cli.replay_names import check_user
from ucloud.client.locate import add_server_options, find_servers
from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import subject
from ucloud.replay.billing import BILLED_TAGS, Invoice, UsageFold, check_window
from ucloud.replay.prices import load_prices, plain
from ucloud.replay.reader import scan_events

BILLED_SUBJECTS = tuple(subject(tag.split(".")[0], "*", tag.split(".")[1]) for tag in BILLED_TAGS)


def register(verbs: Any) -> None:
    parser = verbs.add_parser("billing", help="per-minute billing of a time window")
    parser.add_argument("--from", dest="start", required=True, help="start (ISO 8601)")
    parser.add_argument("--to", dest="end", required=True, help="end (ISO 8601 or now)")
    parser.add_argument("--owner", help="only this user's VMs")
    parser.add_argument("--prices", type=Path, help="price table (default: [billing] prices)")
    parser.add_argument("-o", "--output", choices=("table", "json", "csv"), default="table")
    add_server_options(parser)
    parser.set_defaults(func=run_async(_billing))


async def _billing(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    start, end = parse_time(args.start, "--from", now), parse_time(args.end, "--to", now)
    assert start is not None and end is not None
    try:
        check_window(start, end, now)
    except InputError as exc:
        raise InputError(f"--{exc.field}", exc.reason) from exc
    config = find_servers(args)
    prices = load_prices(args.prices or Path(config.billing.prices))
    fold = UsageFold(start, end, owner=args.owner)
    skipped: list[int] = []
    await reachable(config.nats.url)
    log = await EventLog.connect(config.nats, name="ucloud-replay")
    try:
        if args.owner is not None:
            await check_user(log, args.owner, "--owner")
        async for events in scan_events(log, subjects=BILLED_SUBJECTS, skipped=skipped):
            for _, event in events:
                fold.apply(event)
    finally:
        await log.close()
    warn_skipped(skipped)
    sys.stdout.write(render(fold.invoice(prices), args.output))
    return 0


def render(invoice: Invoice, output: str) -> str:
    if output == "json":
        return msgspec.json.encode(_fixed_point(invoice)).decode() + "\n"
    if output == "csv":
        return _csv(invoice)
    rows = [("OWNER", "VM", "NAME", "MINUTES", "ITEM", "QUANTITY", "UNIT PRICE", "AMOUNT")]
    for owner in invoice.owners:
        for vm in owner.vms:
            for charge in vm.charges:
                rows.append((owner.owner, vm.vm, vm.name, str(charge.minutes), charge.item,
                             plain(charge.quantity), plain(charge.unit_price),
                             f"{vm.currency} {plain(charge.amount)}"))
        for currency, amount in owner.totals.items():
            rows.append((owner.owner, "", "", "", "total", "", "", f"{currency} {plain(amount)}"))
    head = f"invoice {invoice.start.isoformat()} .. {invoice.end.isoformat()}\n"
    totals = "".join(f"total {c} {plain(a)}\n" for c, a in invoice.totals.items())
    return head + table(rows) + (totals or "total 0\n")


def _csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["owner", "vm", "name", "order", "item", "quantity", "unit_price",
                     "minutes", "amount", "currency"])
    for owner in invoice.owners:
        for vm in owner.vms:
            for c in vm.charges:
                writer.writerow([owner.owner, vm.vm, vm.name, vm.order, c.item,
                                 plain(c.quantity), plain(c.unit_price), c.minutes,
                                 plain(c.amount), vm.currency])
        for currency, amount in owner.totals.items():
            writer.writerow([owner.owner, "", "", "", "total", "", "", "", plain(amount),
                             currency])
    for currency, amount in invoice.totals.items():
        writer.writerow(["", "", "", "", "total", "", "", "", plain(amount), currency])
    return out.getvalue()


def _fixed_point(invoice: Invoice) -> Any:
    """The invoice as JSON-ready data with every Decimal as fixed-point text (msgspec would
    write ``8E-7``)."""

    def fix(value: Any) -> Any:
        if isinstance(value, Decimal):
            return plain(value)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [fix(v) for v in value]
        return value

    return fix(msgspec.to_builtins(invoice, builtin_types=(Decimal, datetime)))
