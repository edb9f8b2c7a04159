"""Per-minute billing: the running minutes of every VM in a window, priced, per owner.

Theory of operation:

- A VM runs from ``vm.started`` until ``vm.stopped``, ``vm.crashed``, ``vm.lost``,
  ``vm.evacuated`` or ``vm.deleted``. A ``vm.started`` while it runs changes nothing
  (after a crash, ``vm.crashed`` ends the interval and the restart's ``vm.started``
  opens the next). After ``vm.deleted`` nothing counts. Times are the events' ``at``.
- Running time is clipped to the window ``[start, end)``: a VM running at ``end`` is
  billed up to ``end``, one running at ``start`` from ``start``. Each VM's running time
  in the window is summed and rounded up to whole minutes once, so a VM that crashes
  and restarts within a minute is not billed a minute per restart.
- A VM is priced at the lines of its order (``VmRequested.order`` names an
  ``order.placed``) and otherwise at the price table's lines for its spec, NICs and
  image. The table names licensed images by name, ``VmRequested.image`` is an image id:
  the fold learns each id's name from its ``image.requested`` (a replay reads the log
  from sequence 1, so images requested long before the window are named too; an id
  with no ``image.requested`` is looked up as it is). A charge is ``minutes x quantity x
  unit price`` rounded half up to the table's decimals; totals are sums of rounded
  charges, per currency.
- Pure: events in, invoice out. No clock (``now`` is passed in), no I/O, and it never
  appends anything. The fold keeps one small record per VM.
- ``host.down`` ends nothing: VMs outlive hostd, so a VM on a host that went down runs,
  for billing, until ``vm.crashed``, ``vm.lost`` or ``vm.evacuated`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec

from ucloud.errors import InputError
from ucloud.events import (
    Event,
    ImageRequested,
    Resources,
    VmCrashed,
    VmDeleted,
    VmEvacuated,
    VmLost,
    VmRequested,
    VmStarted,
    VmStopped,
)
from ucloud.events.order import OrderPlaced, PriceLine
from ucloud.replay.prices import PriceTable, price_lines

# The events billing folds; everything else in the log is skipped unread.
BILLED_TAGS: tuple[str, ...] = (
    "vm.requested",
    "vm.started",
    "vm.stopped",
    "vm.crashed",
    "vm.lost",
    "vm.evacuated",
    "vm.deleted",
    "order.placed",
    "image.requested",
)
_MINUTE_US = 60_000_000
_MICROSECOND = timedelta(microseconds=1)


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    item: str
    quantity: Decimal
    unit_price: Decimal
    minutes: int
    amount: Decimal


class VmBill(msgspec.Struct, frozen=True, kw_only=True):
    vm: str
    name: str
    owner: str
    minutes: int
    spec: Resources
    image: str
    nics: int
    order: str  # the order whose prices apply; "" when priced by the table
    currency: str
    charges: tuple[Charge, ...]
    total: Decimal


class OwnerBill(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    vms: tuple[VmBill, ...]
    totals: dict[str, Decimal]  # currency -> amount


class Invoice(msgspec.Struct, frozen=True, kw_only=True):
    start: datetime
    end: datetime
    owners: tuple[OwnerBill, ...]
    totals: dict[str, Decimal]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What a VM used in the window: its running time and what it was allocated."""

    requested: VmRequested
    running: timedelta

    @property
    def minutes(self) -> int:
        return -(-(self.running // _MICROSECOND) // _MINUTE_US)


def check_window(start: datetime, end: datetime, now: datetime) -> None:
    """A billing window must be ``start < end <= now``, with time zones."""
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise InputError(name, f"{value.isoformat()} has no time zone")
    if end > now:
        raise InputError("to", f"{end.isoformat()} is in the future (now is {now.isoformat()})")
    if start >= end:
        raise InputError("from", f"{start.isoformat()} is not before {end.isoformat()}")


@dataclass(slots=True)
class _Vm:
    requested: VmRequested
    running_since: datetime | None = None
    running: timedelta = timedelta(0)
    deleted: bool = False


class UsageFold:
    """Folds events, in log order, into each VM's running time within ``[start, end)``."""

    def __init__(self, start: datetime, end: datetime, *, owner: str | None = None) -> None:
        self.start = start
        self.end = end
        self.owner = owner
        self.vms: dict[str, _Vm] = {}
        self.orders: dict[str, OrderPlaced] = {}
        self.images: dict[str, str] = {}  # image id -> name
        self._apply: dict[type[Event], Callable[[Event], None]] = {
            VmRequested: self._requested,  # type: ignore[dict-item]
            VmStarted: self._started,
            VmStopped: self._ended,
            VmCrashed: self._ended,
            VmLost: self._ended,
            VmEvacuated: self._ended,
            VmDeleted: self._deleted,
            OrderPlaced: self._order,  # type: ignore[dict-item]
            ImageRequested: self._image,  # type: ignore[dict-item]
        }

    def apply(self, event: Event) -> None:
        step = self._apply.get(type(event))
        if step is not None:
            step(event)

    def apply_all(self, events: Iterable[Event]) -> UsageFold:
        for event in events:
            self.apply(event)
        return self

    def usage(self) -> list[Usage]:
        """Every VM of the window that ran in it, VMs still running billed up to ``end``."""
        out = []
        for vm in self.vms.values():
            running = vm.running
            if vm.running_since is not None:
                running += self._overlap(vm.running_since, self.end)
            if running > timedelta(0):
                out.append(Usage(requested=vm.requested, running=running))
        return out

    def invoice(self, prices: PriceTable) -> Invoice:
        return invoice(self.usage(), self.orders, prices, start=self.start, end=self.end,
                       images=self.images)

    def _requested(self, event: VmRequested) -> None:
        if self.owner is None or event.owner == self.owner:
            self.vms.setdefault(event.vm, _Vm(event))

    def _started(self, event: Event) -> None:
        vm = self.vms.get(event.aggregate_id)
        if vm is not None and not vm.deleted and vm.running_since is None:
            vm.running_since = event.at

    def _ended(self, event: Event) -> None:
        vm = self.vms.get(event.aggregate_id)
        if vm is not None and vm.running_since is not None:
            vm.running += self._overlap(vm.running_since, event.at)
            vm.running_since = None

    def _deleted(self, event: Event) -> None:
        self._ended(event)
        vm = self.vms.get(event.aggregate_id)
        if vm is not None:
            vm.deleted = True

    def _order(self, event: OrderPlaced) -> None:
        self.orders[event.order] = event

    def _image(self, event: ImageRequested) -> None:
        self.images[event.image] = event.name

    def _overlap(self, since: datetime, until: datetime) -> timedelta:
        overlap = min(until, self.end) - max(since, self.start)
        return overlap if overlap > timedelta(0) else timedelta(0)


def bill(
    events: Iterable[Event],
    prices: PriceTable,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    owner: str | None = None,
) -> Invoice:
    """The invoice of ``[start, end)`` from the log's events (optionally one owner's)."""
    check_window(start, end, now)
    return UsageFold(start, end, owner=owner).apply_all(events).invoice(prices)


def invoice(
    usages: Iterable[Usage],
    orders: dict[str, OrderPlaced],
    prices: PriceTable,
    *,
    start: datetime,
    end: datetime,
    images: Mapping[str, str] | None = None,
) -> Invoice:
    """Price each VM's minutes at its order's lines, else at the table's (``images``:
    image id -> name, as the table names images)."""
    by_owner: dict[str, list[VmBill]] = {}
    for usage in usages:
        vm_bill = _vm_bill(usage, orders, prices, images or {})
        by_owner.setdefault(vm_bill.owner, []).append(vm_bill)
    owners = tuple(
        OwnerBill(
            owner=owner,
            vms=tuple(sorted(bills, key=lambda b: b.vm)),
            totals=_sum_by_currency((b.currency, b.total) for b in bills),
        )
        for owner, bills in sorted(by_owner.items())
    )
    totals = _sum_by_currency(
        (currency, amount) for o in owners for currency, amount in o.totals.items()
    )
    return Invoice(start=start, end=end, owners=owners, totals=totals)


def _vm_bill(
    usage: Usage, orders: dict[str, OrderPlaced], prices: PriceTable, images: Mapping[str, str]
) -> VmBill:
    requested = usage.requested
    order = orders.get(requested.order) if requested.order else None
    lines: tuple[PriceLine, ...]
    if order is not None:
        lines, currency = order.lines, order.currency
    else:
        image = images.get(requested.image, requested.image)
        lines = price_lines(requested.spec, prices, image=image, nics=len(requested.nics))
        currency = prices.currency
    minutes = usage.minutes
    charges = tuple(
        Charge(
            item=line.item,
            quantity=line.quantity,
            unit_price=line.unit_price,
            minutes=minutes,
            amount=prices.round(minutes * line.per_minute),
        )
        for line in lines
    )
    return VmBill(
        vm=requested.vm,
        name=requested.name,
        owner=requested.owner,
        minutes=minutes,
        spec=requested.spec,
        image=requested.image,
        nics=len(requested.nics),
        order=order.order if order is not None else "",
        currency=currency,
        charges=charges,
        total=sum((c.amount for c in charges), prices.round(Decimal(0))),
    )


def _sum_by_currency(amounts: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for currency, amount in amounts:
        totals[currency] = totals[currency] + amount if currency in totals else amount
    return dict(sorted(totals.items()))
