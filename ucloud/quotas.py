"""Per-user quotas: the limits, the use, and whether a create fits; pure (``now`` passed in).

Theory of operation. A user's limits are the configured defaults (``[quotas]``, 0 meaning
unlimited) overridden by the last ``user.quota_set`` of the user's aggregate since its last
``user.created``. A user's use is counted from the log, in two parts:

- what the projection shows the user owns: its VMs (any status; a VM being deleted counts
  until it is gone) and its networks;
- what the user aggregate admitted (``user.admitted``) that the projection does not show
  yet: a create in flight, admitted a moment ago, whose request the projection has not
  applied. An admission older than ``ADMISSION_S`` that still has no view is a VM or
  network deleted since (or a create that died between admitting and requesting, which
  the gateway never completes after that long): it no longer counts.

A create is decided on the user aggregate and its ``user.admitted`` appended with OCC on
that aggregate's last sequence, before the resource's own request. Of concurrent creates,
each decides on the admissions of all that won before it, so no more are admitted than
the limits allow. ``ipv4`` and ``dns_names`` are limits without a resource yet: they are
shown, not enforced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from ucloud import events as ev
from ucloud.config import QuotasConfig
from ucloud.events.types import Resources

ADMISSION_S = 300.0  # how long an admission without a view counts as a create in flight
LIMITS = ("vms", "cores", "ram_mib", "ssd_mib", "hdd_mib", "networks", "ipv4", "dns_names")


class Amounts(msgspec.Struct, frozen=True, kw_only=True):
    """A count of each limited thing: limits (0: unlimited) or use."""

    vms: int = 0
    cores: int = 0
    ram_mib: int = 0
    ssd_mib: int = 0
    hdd_mib: int = 0
    networks: int = 0
    ipv4: int = 0
    dns_names: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(**{name: getattr(self, name) + getattr(other, name) for name in LIMITS})


def of_vm(spec: Resources) -> Amounts:
    return Amounts(
        vms=1, cores=spec.cpu, ram_mib=spec.ram_mib, ssd_mib=spec.ssd_mib, hdd_mib=spec.hdd_mib
    )


NETWORK = Amounts(networks=1)


def limits(defaults: QuotasConfig, overrides: ev.QuotaLimits) -> Amounts:
    """The user's limits: each override, else the configured default."""
    values = {}
    for name in LIMITS:
        chosen = getattr(overrides, name)
        values[name] = getattr(defaults, name) if chosen is None else chosen
    return Amounts(**values)


def merge(current: ev.QuotaLimits, changes: ev.QuotaLimits) -> ev.QuotaLimits:
    """``current`` with each field ``changes`` sets (-1: back to the default)."""
    values = {}
    for name in LIMITS:
        change = getattr(changes, name)
        if change is None:
            values[name] = getattr(current, name)
        else:
            values[name] = None if change < 0 else change
    return ev.QuotaLimits(**values)


@dataclass(frozen=True)
class Admission:
    kind: ev.AdmittedKind
    amounts: Amounts
    at: datetime


@dataclass
class Ledger:
    """The quota part of one user aggregate, folded since its last ``user.created``."""

    overrides: ev.QuotaLimits = field(default_factory=ev.QuotaLimits)
    admitted: dict[str, Admission] = field(default_factory=dict)


def fold(events: Iterable[ev.Event]) -> Ledger:
    ledger = Ledger()
    for event in events:
        if isinstance(event, ev.UserCreated | ev.UserDeleted):
            ledger = Ledger()
        elif isinstance(event, ev.UserQuotaSet):
            ledger.overrides = event.limits
        elif isinstance(event, ev.UserAdmitted):
            if event.kind == "net":
                amounts = NETWORK
            else:
                amounts = of_vm(event.spec) if event.spec else Amounts(vms=1)
            ledger.admitted[event.resource] = Admission(event.kind, amounts, event.at)
    return ledger


def use(
    vms: Sequence[tuple[str, Resources]],
    nets: Sequence[str],
    ledger: Ledger,
    now: datetime,
) -> Amounts:
    """What the user uses: ``vms`` (id, allocation) and ``nets`` (ids) the projection shows,
    and the admissions it does not show yet that are recent enough to be in flight."""
    total = Amounts()
    shown = set()
    for vm, spec in vms:
        shown.add(vm)
        total = total + of_vm(spec)
    for net in nets:
        shown.add(net)
        total = total + NETWORK
    fresh = now - timedelta(seconds=ADMISSION_S)
    for ident, admission in ledger.admitted.items():
        if ident not in shown and admission.at > fresh:
            total = total + admission.amounts
    return total


# The limits a create can exceed: ipv4 and dns_names have no resource that counts yet.
ENFORCED = ("vms", "cores", "ram_mib", "ssd_mib", "hdd_mib", "networks")


def exceeded(limit: Amounts, used: Amounts, adding: Amounts) -> str | None:
    """The first limit that ``adding`` to ``used`` would pass, or None when it fits."""
    for name in ENFORCED:
        cap, more = getattr(limit, name), getattr(adding, name)
        if cap and more and getattr(used, name) + more > cap:
            return name
    return None


def refusal(name: str, limit: Amounts, used: Amounts, adding: Amounts) -> str:
    return (
        f"quota {name} exceeded: limit {getattr(limit, name)}, in use {getattr(used, name)},"
        f" this needs {getattr(adding, name)}"
    )
