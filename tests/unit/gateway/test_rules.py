"""Which intents a VM's or host's state allows."""

from __future__ import annotations

from typing import get_args

import pytest

from ucloud.errors import Refused
from ucloud.events import NOTHING, Resources
from ucloud.gateway.rules import ALLOWED, check_host, check_migration_target, check_vm
from ucloud.projections.views import HostView, VmStatus, VmView

SPEC = Resources(cpu=1, ram_mib=512, ssd_mib=1024)


def vm(status: VmStatus, host: str = "") -> VmView:
    return VmView(id="v", owner="o", name="n", spec=SPEC, image="i", status=status, host=host)


TABLE = [
    # (status, start, stop, migrate, delete)
    ("requested", False, False, False, True),
    ("scheduled", False, True, False, True),
    ("starting", False, True, False, True),
    ("running", False, True, True, True),
    ("stopping", False, False, False, True),
    ("stopped", True, False, False, True),
    ("crashed", True, True, False, True),
    ("deleting", False, False, False, False),
    ("failed", False, False, False, True),
    ("migrating", False, False, False, True),
    ("lost", False, False, False, True),
]


def test_the_table_covers_every_status() -> None:
    assert {row[0] for row in TABLE} == set(get_args(VmStatus))


@pytest.mark.parametrize(("status", "start", "stop", "migrate", "delete"), TABLE)
def test_vm_intents(status: VmStatus, start: bool, stop: bool, migrate: bool, delete: bool) -> None:
    for action, allowed in (("start", start), ("stop", stop), ("migrate", migrate),
                            ("delete", delete)):
        assert (status in ALLOWED[action]) == allowed  # type: ignore[index]
        if allowed:
            check_vm(vm(status), action)  # type: ignore[arg-type]
        else:
            with pytest.raises(Refused) as caught:
                check_vm(vm(status), action)  # type: ignore[arg-type]
            assert caught.value.field == "status" and status in caught.value.reason


def test_migration_to_the_current_host_is_refused() -> None:
    check_migration_target(vm("running", "h1"), "h2")
    check_migration_target(vm("running", "h1"), "")
    with pytest.raises(Refused, match="already runs on h1"):
        check_migration_target(vm("running", "h1"), "h1")


def test_drain_and_undrain() -> None:
    host = HostView(id="h", capacity=SPEC, used=NOTHING)
    drained = HostView(id="h", capacity=SPEC, used=NOTHING, drained=True)
    check_host(host, "drain")
    check_host(drained, "undrain")
    with pytest.raises(Refused, match="already drained"):
        check_host(drained, "drain")
    with pytest.raises(Refused, match="not drained"):
        check_host(host, "undrain")
