"""Events of the ``order`` aggregate: a user's agreement to a VM at a price.

An order fixes the per-minute price lines quoted for a VM spec when it was placed;
billing charges the VM at these prices (``VmRequested.order`` names the order), not at
whatever the price table says later.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import msgspec

from ucloud.events.base import Event
from ucloud.events.types import Resources


class PriceLine(msgspec.Struct, frozen=True, kw_only=True):
    """One priced item: ``quantity`` units at ``unit_price`` each per running minute.

    Items: ``cpu`` (cores), ``ram_gib``, ``ssd_gib``, ``hdd_gib``, ``nic`` (NICs),
    ``image`` (one licensed image).
    """

    item: str
    quantity: Decimal
    unit_price: Decimal

    @property
    def per_minute(self) -> Decimal:
        return self.quantity * self.unit_price


class OrderEvent(Event, frozen=True, kw_only=True):
    order: str
    aggregate: ClassVar[str] = "order"


class OrderPlaced(OrderEvent, frozen=True, kw_only=True, tag="order.placed"):
    owner: str
    vm: str
    spec: Resources
    lines: tuple[PriceLine, ...]
    currency: str
    image: str = ""
    nics: int = 0
    # the price table's decimals: the 30-day price is rounded as the quote rounded it
    # (None: placed before orders recorded them; that price is shown exact)
    decimals: int | None = None


ORDER_EVENTS = (OrderPlaced,)
