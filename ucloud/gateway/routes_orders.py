"""Orders: what a VM costs, and the price a VM was ordered at.

``POST /v1/orders/quote`` prices a VM spec at the price table (``[billing] prices``) as
the file reads at that moment; nothing is appended. ``POST /v1/vms`` with ``order: true``
turns the same quote into an ``order.<id>.placed`` (owner, VM id, spec, the agreed price
lines, currency): ``draft_order`` prices it before anything is written, the VM route
appends it and only then the VM's ``vm.requested`` naming the order, so that billing,
which reads the log in order, knows the agreed price before the VM exists. Billing then
charges the VM at these lines, whatever the table says later.

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
from ucloud.errors import InputError, NotFound
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, raw_list
from ucloud.gateway.lookup import own_networks, visible_image
from ucloud.gateway.schemas import QuoteAnswer, QuoteLine, QuoteRequest
from ucloud.gateway.sizes import parse_positive_size, parse_size
from ucloud.gateway.state import Gateway
from ucloud.ids import new_id
from ucloud.projections.mirror import Mirror
from ucloud.projections.views import OrderView
from ucloud.replay.prices import PriceTable, Quote, load_prices, plain, quote

MAX_CPU = 1024  # as many as a VM may have (``routes_vms.MAX_CPU``; a test holds them equal)


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    async def quote_spec(call: Call) -> Answer:
        body: QuoteRequest = call.body
        principal = call.principal
        spec = vm_spec(body.cpu, body.ram, body.ssd, body.hdd)
        image = ""
        if body.image:
            view = visible_image(mirror, principal, body.image)
            if view is None:
                raise InputError("image", f"no image {body.image} visible to you")
            image = view.name
        nics = count_networks(mirror, principal, body.networks)
        return Answer(200, quote_answer(quote(spec, prices(gw), image=image, nics=nics)))

    async def list_orders(call: Call) -> Answer:
        principal = call.principal
        entries = mirror.orders.all() if principal.admin else mirror.orders.of_owner(principal.name)
        return Answer(200, raw_list([e.raw for e in sorted(entries, key=lambda e: e.view.id)]))

    async def show(call: Call) -> Answer:
        ident = call.params["id"]
        entry = mirror.orders.get(ident)
        if entry is None or not call.principal.sees(entry.view.owner):
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
    gw: Gateway, head: dict[str, Any], *, vm: str, spec: ev.Resources, image: str, nics: int
) -> ev.OrderPlaced:
    """The ``order.placed`` of a VM about to be requested, priced at today's table.

    ``head`` is the request's envelope (its actor is the owner); ``image`` the image id.
    Nothing is appended: the caller appends the order, then the VM's ``vm.requested``.
    """
    entry = gw.mirror.images.get(image)
    name = entry.view.name if entry is not None else ""
    priced = quote(spec, prices(gw), image=name, nics=nics)
    return ev.OrderPlaced(
        **head, order=new_id(), owner=head["actor"], vm=vm, spec=spec, lines=priced.lines,
        currency=priced.currency, image=name, nics=nics,
    )


def prices(gw: Gateway) -> PriceTable:
    """The price table as the file reads now (ConfigError when it is missing or wrong)."""
    return load_prices(Path(gw.config.billing.prices))


def vm_spec(cpu: int, ram: int | str, ssd: int | str, hdd: int | str) -> ev.Resources:
    """A VM's resources from sizes as users write them; InputError names the field."""
    if not 0 < cpu <= MAX_CPU:
        raise InputError("cpu", f"must be between 1 and {MAX_CPU}")
    return ev.Resources(
        cpu=cpu,
        ram_mib=parse_positive_size(ram, "ram"),
        ssd_mib=parse_positive_size(ssd, "ssd"),
        hdd_mib=parse_size(hdd, "hdd"),
    )


def count_networks(mirror: Mirror, principal: Principal, idents: list[str]) -> int:
    """How many NICs the networks ``idents`` (yours, each once) give a VM."""
    return len(own_networks(mirror, principal, idents, created=False))


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

