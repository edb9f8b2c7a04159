"""The current month's invoice, and its cost day by day, as ``ucloud replay billing`` bills.

``GET /v1/invoice`` replays the billed events of the log (``replay.billing``) into the
window from the first of this month (UTC) to now: the caller's VMs (admin: everyone's)
with their running minutes and charges at their orders' prices, the totals per currency,
and ``days``: what each day of the window cost, for the dashboard's plot of usage over
time. Nothing is appended; the log is read from the start, as any replay reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from ucloud.events import subject
from ucloud.gateway.http import Answer, Call, Endpoint
from ucloud.gateway.state import Gateway
from ucloud.replay.billing import BILLED_TAGS, Invoice, UsageFold
from ucloud.replay.prices import load_prices, plain
from ucloud.replay.reader import scan_events

_BILLED = tuple(
    subject(agg, "*", event) for agg, _, event in (t.partition(".") for t in BILLED_TAGS)
)


class InvoiceVm(msgspec.Struct, kw_only=True):
    vm: str
    name: str
    owner: str
    minutes: int
    currency: str
    total: str


class InvoiceDay(msgspec.Struct, kw_only=True):
    day: str  # YYYY-MM-DD (UTC)
    minutes: int
    totals: dict[str, str]  # currency -> what that day cost


class InvoiceAnswer(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    vms: list[InvoiceVm]
    totals: dict[str, str]
    days: list[InvoiceDay]


def month_window(now: datetime) -> tuple[datetime, list[tuple[datetime, datetime]]]:
    """The first of ``now``'s month (UTC), and the days from it to ``now`` as windows (the
    last one ends at ``now``)."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = []
    day = start
    while day < now:
        days.append((day, min(day + timedelta(days=1), now)))
        day += timedelta(days=1)
    return start, days


def answer(month: Invoice, days: list[tuple[datetime, Invoice]]) -> InvoiceAnswer:
    return InvoiceAnswer(
        start=month.start, end=month.end,
        vms=[
            InvoiceVm(vm=b.vm, name=b.name, owner=b.owner, minutes=b.minutes,
                      currency=b.currency, total=plain(b.total))
            for owner in month.owners for b in owner.vms
        ],
        totals={c: plain(a) for c, a in month.totals.items()},
        days=[
            InvoiceDay(
                day=day.date().isoformat(),
                minutes=sum(b.minutes for o in bill.owners for b in o.vms),
                totals={c: plain(a) for c, a in bill.totals.items()},
            )
            for day, bill in days
        ],
    )


def endpoints(gw: Gateway) -> list[Endpoint]:
    async def current(call: Call) -> Answer:
        now = datetime.now(UTC)
        owner = None if call.principal.admin else call.principal.name
        prices = load_prices(Path(gw.config.billing.prices))
        start, days = month_window(now)
        month = UsageFold(start, now, owner=owner)
        folds = [UsageFold(a, b, owner=owner) for a, b in days]
        async for batch in scan_events(gw.log, subjects=_BILLED):
            for _, event in batch:
                month.apply(event)
                for fold in folds:
                    fold.apply(event)
        daily = [(fold.start, fold.invoice(prices)) for fold in folds]
        return Answer(200, answer(month.invoice(prices), daily))

    return [
        Endpoint(
            "GET", "/v1/invoice", current,
            "This month's invoice so far (admin: every owner), with the cost of each day",
            answer=InvoiceAnswer, errors=(401,),
        ),
    ]
