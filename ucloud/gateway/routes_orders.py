"""Orders: what a VM costs, and the price a VM was ordered at.

``POST /v1/orders/quote`` prices a VM spec at the price table (``[billing] prices``) as
the file reads at that moment; nothing is appended. ``POST /v1/vms`` with ``order: true``
reads its spec as the quote does (``spec.read_spec``) and turns the same quote (``price``)
into an ``order.<id>.placed`` (owner, VM id, spec, the agreed price lines, currency, the
table's decimals, so that the order's 30-day price is the quote's): ``draft_order``
prices it before anything is written, the VM route appends it and only then the VM's
``vm.requested`` naming the order, so that billing, which reads the log in order, knows
the agreed price before the VM exists. Billing then charges the VM at these lines,
whatever the table says later.

If the VM's append fails after the order's, the order stays in the log naming a VM that
never existed. It is harmless: billing charges only VMs that ran, at the order their own
``vm.requested`` names.

Orders are read from the projection (``order/<id>``): ``GET /v1/orders`` lists your own
(admin: all), ``GET /v1/orders/{id}`` shows one; another user's order does not exist for
you (404). Money goes out as fixed-point decimal strings (``"0.0000008"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ucloud import events as ev
from ucloud.errors import NotFound
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, raw_list
from ucloud.gateway.schemas import QuoteAnswer, QuoteLine, QuoteRequest
from ucloud.gateway.spec import VmSpec, read_spec
from ucloud.gateway.state import Gateway
from ucloud.ids import new_id
from ucloud.projections.views import OrderView
from ucloud.replay.prices import Quote, load_prices, plain, quote


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    async def quote_spec(call: Call) -> Answer:
        spec = read_spec(mirror, call.principal, call.body, ready=False)
        return Answer(200, quote_answer(price(gw, spec)))

    def yours(principal: Principal, order: OrderView) -> bool:
        """Admins see all; a user her orders, not those of a deleted user of her name."""
        if principal.admin:
            return True
        user = mirror.users.get(principal.name)
        since = user.view.created_at if user is not None else None
        placed = order.placed_at
        return order.owner == principal.name and (not since or not placed or placed >= since)

    async def list_orders(call: Call) -> Answer:
        principal = call.principal
        entries = mirror.orders.all() if principal.admin else mirror.orders.of_owner(principal.name)
        mine = [e for e in entries if yours(principal, e.view)]
        return Answer(200, raw_list([e.raw for e in sorted(mine, key=lambda e: e.view.id)]))

    async def show(call: Call) -> Answer:
        ident = call.params["id"]
        entry = mirror.orders.get(ident)
        if entry is None or not yours(call.principal, entry.view):
            raise NotFound("id", f"no order {ident}")
        return Answer(200, RawJson(entry.raw))

    return [
        Endpoint(
            "POST", "/v1/orders/quote", quote_spec,
            "The price of a VM spec per minute and per 30 days, from today's price table",
            body=QuoteRequest, answer=QuoteAnswer, errors=(400, 401),
        ),
        Endpoint(
            "GET", "/v1/orders", list_orders, "Your orders (admin: all)",
            answer=list[OrderView], errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/orders/{id}", show, "One order: the agreed price of a VM",
            answer=OrderView, errors=(401, 404),
        ),
    ]


def draft_order(
    gw: Gateway, head: dict[str, Any], *, vm: str, spec: VmSpec, order: str = ""
) -> ev.OrderPlaced:
    """The ``order.placed`` of a VM about to be requested, priced as its quote is.

    ``head`` is the request's envelope (its actor is the owner). Nothing is appended:
    the caller appends the order, then the VM's ``vm.requested``. ``order`` is the
    order's id (default: a fresh one).
    """
    priced = price(gw, spec)
    return ev.OrderPlaced(
        **head, order=order or new_id(), owner=head["actor"], vm=vm, spec=spec.resources,
        lines=priced.lines, currency=priced.currency, image=spec.image_name,
        nics=len(spec.networks), decimals=priced.decimals,
    )


def price(gw: Gateway, spec: VmSpec) -> Quote:
    """What ``spec`` costs at the price table as the file reads now (ConfigError when the
    table is missing or wrong): a quote's answer and an order's lines."""
    table = load_prices(Path(gw.config.billing.prices))
    return quote(spec.resources, table, image=spec.image_name, nics=len(spec.networks))


def quote_answer(priced: Quote) -> QuoteAnswer:
    return QuoteAnswer(
        currency=priced.currency,
        per_minute=plain(priced.per_minute),
        per_30_days=plain(priced.per_30_days),
        lines=[
            QuoteLine(
                item=line.item, quantity=plain(line.quantity),
                unit_price=plain(line.unit_price), per_minute=plain(line.per_minute),
            )
            for line in priced.lines
        ],
    )

