"""``ucloud order quote|list|show``: what a VM costs, and the prices VMs were ordered at.

``quote`` asks the gateway to price a spec at today's price table (nothing is recorded);
``ucloud vm create --order`` places a VM at that price, which its bills then use.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ucloud.client.args import add_client_options, emit, open_gateway, size_arg
from ucloud.client.http import path
from ucloud.client.output import NONE, Layout, column, derived, fields, size, table, when


def register(sub: Any) -> None:
    parser = sub.add_parser("order", help="price quotes and the orders of your VMs")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    quote = verbs.add_parser("quote", help="the price of a VM spec (per minute, per 30 days)")
    quote.add_argument("--cpu", required=True, type=_positive, help="virtual CPUs")
    quote.add_argument("--ram", required=True, type=size_arg, help="RAM: GiB, or 512M, 2G")
    quote.add_argument("--ssd", required=True, type=size_arg, help="SSD disk: GiB, or 20G, 1T")
    quote.add_argument("--hdd", type=size_arg, help="HDD disk: GiB, or 100G, 2T")
    quote.add_argument("--image", help="image id or name (licensed images cost extra)")
    quote.add_argument(
        "--net", action="append", default=[], metavar="NAME", help="network (repeatable)"
    )
    add_client_options(quote)
    quote.set_defaults(func=_quote)

    listing = verbs.add_parser("list", help="list your orders (an admin sees all)")
    add_client_options(listing)
    listing.set_defaults(func=_list)

    show = verbs.add_parser("show", help="show one order and its agreed price lines")
    show.add_argument("id", help="order id")
    add_client_options(show)
    show.set_defaults(func=_show)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _quote(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"cpu": args.cpu, "ram": args.ram, "ssd": args.ssd}
    if args.hdd is not None:
        body["hdd"] = args.hdd
    if args.image:
        body["image"] = args.image
    if args.net:
        body["networks"] = args.net
    with open_gateway(args) as gateway:
        emit(args, gateway.post("/v1/orders/quote", body), render_quote)
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/orders"), ORDER)
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "orders", args.id)), ORDER)
    return 0


def agreed_price(order: Mapping[str, Any]) -> str:
    """One line for ``vm create --order``: the price the VM is billed at."""
    currency = order.get("currency", "")
    return (
        f"ordered at {currency} {order.get('per_minute', NONE)} per minute "
        f"({currency} {order.get('per_30_days', NONE)} per 30 days), order {order.get('id')}"
    )


def render_quote(quote: Mapping[str, Any]) -> str:
    currency = str(quote.get("currency", ""))
    return "\n".join([
        _lines(quote.get("lines") or ()),
        "",
        fields([
            ("per minute", f"{currency} {quote.get('per_minute', NONE)}"),
            ("per 30 days", f"{currency} {quote.get('per_30_days', NONE)}"),
        ]),
    ])


def _priced(key: str) -> Any:
    return lambda order: f"{order.get('currency', '')} {order.get(key, NONE)}"


ORDER = Layout(
    (
        column("id"), column("vm"), column("owner"),
        derived("per_minute", _priced("per_minute")),
        derived("per_30_days", _priced("per_30_days")),
        column("currency"),
        column("placed", "placed_at", when),
        column("cpu", "spec.cpu"), column("ram", "spec.ram_mib", size),
        column("ssd", "spec.ssd_mib", size), column("hdd", "spec.hdd_mib", size),
        column("image"), column("nics", fmt=lambda nics: str(nics or 0)),
    ),
    listed=("id", "vm", "owner", "per_minute", "placed"),
    after=lambda order: _lines(order.get("lines") or ()),
)


def render_order(order: Mapping[str, Any]) -> str:
    return ORDER.one(order)


def render_orders(orders: Sequence[Mapping[str, Any]]) -> str:
    return ORDER.many(orders)


def _lines(lines: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ("ITEM", "QUANTITY", "UNIT PRICE", "PER MINUTE"),
        (
            (str(line.get("item", NONE)), str(line.get("quantity", NONE)),
             str(line.get("unit_price", NONE)), str(line.get("per_minute", NONE)))
            for line in lines
        ),
    )
