"""Quotas: each user's limits and use, the admin's overrides, and admitting a create.

``admit`` is what a create of a VM or a network calls before it appends the resource's
request: it decides on the user aggregate (``quotas``: the limits, the use, whether the new
one fits) and appends ``user.admitted`` expecting the aggregate's last sequence. Of
concurrent creates each decides on the admissions of those appended before it, so exactly
as many as the quota has room for get through; the others are a 409 naming the limit.
A user without a limit for the kind appends no admission.

``GET /v1/quotas`` (yours; admin: everyone's) and ``GET /v1/quotas/{user}`` answer limits
and use, counted from the log; ``PUT /v1/quotas/{user}`` (admin) appends ``user.quota_set``.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from ucloud import events as ev
from ucloud import quotas
from ucloud.errors import ConflictError, NotFound, Refused
from ucloud.events.stored import Stored
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.http import Answer, Call, Endpoint
from ucloud.gateway.routes_users import alive
from ucloud.gateway.schemas import Request, UserName
from ucloud.gateway.state import Gateway, envelope

_BUSY = ("quota", "your quota kept changing; try again")
# Many creates of one user at once: each conflict means another one got through, so a
# create retries as long as there are others ahead of it (well past a burst's size).
_ADMIT_RETRIES = 64
# a whole number (JSON Schema's integer takes 5.0 as well as 5)
_Setting = Annotated[float, msgspec.Meta(ge=-1, le=1 << 40, multiple_of=1)] | UnsetType


class QuotaChange(Request, kw_only=True):
    """The limits to change; a field left out stays, 0 is unlimited, -1 the default."""

    vms: _Setting = UNSET
    cores: _Setting = UNSET
    ram_mib: _Setting = UNSET
    ssd_mib: _Setting = UNSET
    hdd_mib: _Setting = UNSET
    networks: _Setting = UNSET
    ipv4: _Setting = UNSET
    dns_names: _Setting = UNSET


class QuotaAnswer(msgspec.Struct, kw_only=True):
    user: str
    limits: quotas.Amounts  # 0: unlimited
    used: quotas.Amounts
    overrides: ev.QuotaLimits  # what the admin set; the rest are the configured defaults
    enforced: tuple[str, ...] = quotas.ENFORCED  # the others have no resource counting yet


class QuotaPath(msgspec.Struct, kw_only=True):
    user: UserName


def used(gw: Gateway, user: str, ledger: quotas.Ledger, now: datetime) -> quotas.Amounts:
    vms = [(e.view.id, e.view.spec) for e in gw.mirror.vms.of_owner(user)]
    nets = [e.view.id for e in gw.mirror.nets.of_owner(user)]
    return quotas.use(vms, nets, ledger, now)


def answer(gw: Gateway, user: str, events: list[Stored]) -> QuotaAnswer:
    ledger = quotas.fold(s.event for s in events)
    return QuotaAnswer(
        user=user, limits=quotas.limits(gw.config.quotas, ledger.overrides),
        used=used(gw, user, ledger, datetime.now(UTC)), overrides=ledger.overrides,
    )


async def admit(
    gw: Gateway, user: str, kind: ev.AdmittedKind, resource: str, spec: ev.Resources | None,
    request: str,
) -> datetime:
    """Count ``resource`` against ``user``'s quota, or refuse (409 naming the limit).

    Returns when it was admitted: the caller appends the resource's request only while the
    admission still counts (``quotas.ADMISSION_S``)."""
    adding = quotas.NETWORK if kind == "net" else quotas.of_vm(spec or ev.NOTHING)

    def decide(events: list[Stored]) -> Decision[datetime]:
        now = datetime.now(UTC)
        ledger = quotas.fold(s.event for s in events)
        if resource in ledger.admitted:  # a retry of a request admitted before
            return Decision(None, ledger.admitted[resource].at)
        limit = quotas.limits(gw.config.quotas, ledger.overrides)
        if not any(getattr(limit, n) and getattr(adding, n) for n in quotas.ENFORCED):
            return Decision(None, now)
        use = used(gw, user, ledger, now)
        over = quotas.exceeded(limit, use, adding)
        if over is not None:
            raise Refused(over, quotas.refusal(over, limit, use, adding))
        event = ev.UserAdmitted(
            **{**envelope(user, request), "at": now}, user=user, kind=kind, resource=resource,
            spec=spec if kind == "vm" else None,
        )
        return Decision(event, now)

    for attempt in range(_ADMIT_RETRIES):
        events, last = await gw.log.load("user", user)
        decided = decide(events)
        if decided.event is None:
            return decided.outcome
        try:
            await gw.log.append(decided.event, expected=last)
        except ConflictError:  # another create of this user's won: decide again on it
            await asyncio.sleep(random.uniform(0, 0.005 * min(attempt + 1, 10)))
            continue
        return decided.outcome
    raise Refused(*_BUSY)


def check_admission(at: datetime) -> None:
    """Refused when an admission is too old to count still (a create stalled that long)."""
    if (datetime.now(UTC) - at).total_seconds() > quotas.ADMISSION_S / 2:
        raise Refused("quota", "this request took too long since it was admitted; try again")


def endpoints(gw: Gateway) -> list[Endpoint]:
    async def list_quotas(call: Call) -> Answer:
        principal = call.principal
        names = sorted(e.view.name for e in gw.mirror.users.all())
        if not principal.admin:
            names = [principal.name]
        found = []
        for name in names:
            events, _ = await gw.log.load("user", name)
            found.append(answer(gw, name, events))
        return Answer(200, found)

    async def show(call: Call) -> Answer:
        user = call.params["user"]
        if not call.principal.sees(user):
            raise NotFound("user", f"no user {user}")
        events, _ = await gw.log.load("user", user)
        if not alive(events):
            raise NotFound("user", f"no user {user}")
        return Answer(200, answer(gw, user, events))

    async def set_quota(call: Call) -> Answer:
        user = call.params["user"]
        body: QuotaChange = call.body
        given = {
            k: int(v) for k, v in msgspec.structs.asdict(body).items() if v is not UNSET
        }
        changes = ev.QuotaLimits(**given)

        def decide(events: list[Stored]) -> Decision[None]:
            if not alive(events):
                raise NotFound("user", f"no user {user}")
            current = quotas.fold(s.event for s in events).overrides
            merged = quotas.merge(current, changes)
            if merged == current:
                return Decision(None, None)
            head = envelope(call.principal, call.new_id("request"))
            return Decision(ev.UserQuotaSet(**head, user=user, limits=merged), None)

        await decide_and_append(gw, "user", user, decide, busy=_BUSY, settle=None)
        events, _ = await gw.log.load("user", user)
        return Answer(200, answer(gw, user, events))

    return [
        Endpoint(
            "GET", "/v1/quotas", list_quotas, "Your quota: limits and use (admin: everyone's)",
            answer=list[QuotaAnswer], errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/quotas/{user}", show, "A user's limits and use (yours, or admin: any)",
            answer=QuotaAnswer, errors=(400, 401, 404), params=QuotaPath,
        ),
        Endpoint(
            "PUT", "/v1/quotas/{user}", set_quota,
            "Override a user's limits (0: unlimited, -1: back to the configured default)",
            body=QuotaChange, answer=QuotaAnswer, access="admin", errors=(400, 401, 403, 404),
            params=QuotaPath,
            description="IPv4 addresses and DNS names are limits without a resource that"
            " counts against them yet: they are kept and shown, not enforced.",
        ),
    ]
