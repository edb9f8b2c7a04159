"""The chaos benchmark's invariants, on hand-made logs: each finding counted once where it
happens, and a clean log (placements released and made again, a migration) finds none."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.invariants import audit
from ucloud.events import (
    Event,
    HostRegistered,
    HostVmPlaced,
    HostVmReleased,
    Resources,
    VmRequested,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SMALL = Resources(cpu=1, ram_mib=128, ssd_mib=1024)
HOST = Resources(cpu=2, ram_mib=4096, ssd_mib=10240)
_ids = iter(range(1, 10_000))


def _env(ident: str | None = None) -> dict[str, object]:
    return {"id": ident or f"e{next(_ids)}", "at": AT, "actor": "test"}


def registered(host: str) -> Event:
    return HostRegistered(**_env(), host=host, capacity=HOST)  # type: ignore[arg-type]


def placed(host: str, vm: str, migration: bool = False) -> Event:
    return HostVmPlaced(**_env(), host=host, vm=vm, resources=SMALL,  # type: ignore[arg-type]
                        migration=migration)  # fmt: skip


def released(host: str, vm: str) -> Event:
    return HostVmReleased(**_env(), host=host, vm=vm)  # type: ignore[arg-type]


def requested(vm: str, name: str, ident: str | None = None) -> Event:
    return VmRequested(**_env(ident), vm=vm, owner="admin", name=name,  # type: ignore[arg-type]
                       spec=SMALL, image="tiny")  # fmt: skip


CASES = {
    "clean": ([registered("a"), registered("b"), requested("v1", "c1"), placed("a", "v1"),
               released("a", "v1"), placed("b", "v1"), placed("a", "v2", ),
               placed("b", "v2", migration=True), released("a", "v2")], (0, 0, 0, 0)),
    "an event id twice": ([requested("v1", "c1", "x"), requested("v1", "c1", "x")],
                          (1, 0, 0, 1)),
    "placed on two hosts": ([registered("a"), registered("b"), placed("a", "v1"),
                             placed("b", "v1")], (0, 1, 0, 1)),
    "placed twice on one host": ([registered("a"), placed("a", "v1"), placed("a", "v1")],
                                 (0, 1, 0, 1)),
    "one name, two VMs": ([requested("v1", "c1"), requested("v2", "c1")], (0, 0, 0, 1)),
    "overbooked, then released": ([registered("a"), placed("a", "v1"), placed("a", "v2"),
                                   placed("a", "v3"), released("a", "v3")], (0, 0, 1, 0)),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_audit(case: str) -> None:
    events, (ids, twice, overbooked, duplicated) = CASES[case]
    found = audit(enumerate(events, 1))
    assert (found.duplicated_ids, found.placed_twice, found.overbooked,
            found.duplicated) == (ids, twice, overbooked, duplicated)  # fmt: skip
