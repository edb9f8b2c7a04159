"""The quota rules: limits from defaults and overrides, use from views and admissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud import quotas
from ucloud.config import QuotasConfig
from ucloud.events.types import Resources

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SMALL = Resources(cpu=2, ram_mib=1024, ssd_mib=10240)


def env(n: int) -> dict[str, Any]:
    return {"id": f"e{n}", "at": T0 + timedelta(seconds=n), "actor": "admin"}


def admitted(n: int, resource: str, kind: ev.AdmittedKind = "vm") -> ev.UserAdmitted:
    return ev.UserAdmitted(**env(n), user="u", kind=kind, resource=resource,
                           spec=SMALL if kind == "vm" else None)


def test_limits_take_each_override_else_the_default() -> None:
    defaults = QuotasConfig(vms=10, cores=20)
    limit = quotas.limits(defaults, ev.QuotaLimits(vms=3, networks=0))
    assert (limit.vms, limit.cores, limit.networks, limit.ram_mib) == (3, 20, 0, 0)


def test_merge_keeps_unset_fields_and_minus_one_resets() -> None:
    current = ev.QuotaLimits(vms=3, cores=8)
    assert quotas.merge(current, ev.QuotaLimits(cores=-1, networks=2)) == ev.QuotaLimits(
        vms=3, networks=2
    )


def test_fold_starts_afresh_at_every_user_created() -> None:
    history = [
        ev.UserCreated(**env(0), user="u", realm="users"),
        ev.UserQuotaSet(**env(1), user="u", limits=ev.QuotaLimits(vms=1)),
        admitted(2, "v1"),
        ev.UserDeleted(**env(3), user="u"),
        ev.UserCreated(**env(4), user="u", realm="users"),
        admitted(5, "n1", "net"),
    ]
    ledger = quotas.fold(history)
    assert ledger.overrides == ev.QuotaLimits() and list(ledger.admitted) == ["n1"]


CASES = [  # views, admissions, now offset (s), expected vms and cores
    ("views only", [("v1", SMALL)], [], 0, (1, 2)),
    ("an admission not shown yet counts", [], [admitted(1, "v1")], 10, (1, 2)),
    ("an admission shown counts once", [("v1", SMALL)], [admitted(1, "v1")], 10, (1, 2)),
    ("an old admission without a view is gone", [], [admitted(1, "v1")], 400, (0, 0)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_use(case: Any) -> None:
    _, vms, history, later, expected = case
    used = quotas.use(vms, [], quotas.fold(history), T0 + timedelta(seconds=later))
    assert (used.vms, used.cores) == expected


def test_exceeded_names_the_first_limit_passed_and_zero_is_unlimited() -> None:
    limit = quotas.Amounts(vms=2, cores=3)
    vm = quotas.of_vm(SMALL)
    assert quotas.exceeded(limit, quotas.Amounts(), vm) is None
    assert quotas.exceeded(limit, quotas.Amounts(vms=1, cores=2), vm) == "cores"
    assert quotas.exceeded(limit, quotas.Amounts(vms=2), vm) == "vms"
    assert quotas.exceeded(quotas.Amounts(), quotas.Amounts(vms=99), vm) is None
    assert quotas.exceeded(quotas.Amounts(ipv4=1), quotas.Amounts(ipv4=5),
                           quotas.Amounts(ipv4=1)) is None  # not enforced yet


@given(st.lists(st.integers(min_value=1, max_value=8), max_size=30),
       st.integers(min_value=1, max_value=20))
def test_admitting_one_by_one_never_passes_the_limit(cpus: list[int], cap: int) -> None:
    limit, used = quotas.Amounts(cores=cap), quotas.Amounts()
    for cpu in cpus:
        adding = quotas.of_vm(Resources(cpu=cpu, ram_mib=1, ssd_mib=1))
        if quotas.exceeded(limit, used, adding) is None:
            used = used + adding
    assert used.cores <= cap
