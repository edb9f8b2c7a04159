"""The pure DNS fold: names, their rules, and the records of the zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ucloud import events as ev
from ucloud.dns.records import Rr, Zones, check_add, diff, fold, records, reverse_zone
from ucloud.errors import InputError, Refused

ZONES = Zones.of(["vm.test", "example.net"], "vm.test", "fd75:636c:6f75::/48")
NET = "n1"
PREFIX = "fd75:636c:6f75:1::/64"
ADDRESS = "fd75:636c:6f75:1:0:ff:fe00:1"
PTR = "1.0.0.0.0.0.e.f.f.f.0.0.0.0.0.0.1.0.0.0.5.7.f.6.c.6.3.6.5.7.d.f.ip6.arpa."


def env() -> dict[str, object]:
    return {"id": "e", "at": datetime(2026, 12, 2, tzinfo=UTC), "actor": "t"}


def vm(ident: str, owner: str, name: str, mac: str = "02:00:00:00:00:01") -> ev.Event:
    return ev.VmRequested(
        **env(), vm=ident, owner=owner, name=name, image="i",
        spec=ev.Resources(cpu=1, ram_mib=1, ssd_mib=1), nics=(ev.Nic(network=NET, mac=mac),),
    )


BASE = [ev.NetCreated(**env(), net=NET, vni=1, prefix=PREFIX), vm("v1", "alice", "web")]


def test_reverse_zone_rounds_to_a_nibble() -> None:
    assert reverse_zone("fd75:636c:6f75::/48") == "5.7.f.6.c.6.3.6.5.7.d.f.ip6.arpa"
    assert reverse_zone("2001:db8::/30") == "b.d.0.1.0.0.2.ip6.arpa"  # the /28 holding it


def test_a_vm_without_a_name_has_the_generated_ptr() -> None:
    zones = records(fold(BASE), ZONES)
    assert zones["vm.test"] == frozenset()
    assert zones[ZONES.reverse[0]] == {Rr(PTR, "PTR", "web.alice.vm.test.")}


def test_names_give_aaaa_and_the_first_is_the_ptr_until_the_owner_sets_one() -> None:
    events = [
        *BASE,
        ev.VmDnsNameAdded(**env(), vm="v1", name="www.example.net", zone="example.net"),
        ev.VmDnsNameAdded(**env(), vm="v1", name="web.alice.vm.test", zone="vm.test"),
    ]
    zones = records(fold(events), ZONES)
    assert zones["example.net"] == {Rr("www.example.net.", "AAAA", ADDRESS)}
    assert zones["vm.test"] == {Rr("web.alice.vm.test.", "AAAA", ADDRESS)}
    assert zones[ZONES.reverse[0]] == {Rr(PTR, "PTR", "www.example.net.")}
    events.append(ev.VmPtrSet(**env(), vm="v1", address=ADDRESS, name="mail.example.org"))
    assert records(fold(events), ZONES)[ZONES.reverse[0]] == {Rr(PTR, "PTR", "mail.example.org.")}
    events.append(ev.VmPtrSet(**env(), vm="v1", address=ADDRESS))
    assert records(fold(events), ZONES)[ZONES.reverse[0]] == {Rr(PTR, "PTR", "www.example.net.")}


def test_delete_frees_the_names_and_a_held_name_is_not_taken_twice() -> None:
    events = [
        *BASE, vm("v2", "bob", "db", "02:00:00:00:00:02"),
        ev.VmDnsNameAdded(**env(), vm="v1", name="www.vm.test", zone="vm.test"),
        ev.VmDnsNameAdded(**env(), vm="v2", name="www.vm.test", zone="vm.test"),
    ]
    state = fold(events)
    assert state.holders == {"www.vm.test": "v1"}
    assert {r.data for r in records(state, ZONES)["vm.test"]} == {ADDRESS}
    state.apply(ev.VmDeleted(**env(), vm="v1"))
    assert state.holders == {} and records(state, ZONES)["vm.test"] == frozenset()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("www.vm.test", None),
        ("WWW.VM.TEST.", None),
        ("api.alice.vm.test", None),
        ("vm.test", InputError),  # the zone itself
        ("x.other.org", InputError),  # no zone offered
        ("db.bob.vm.test", InputError),  # bob's part of the default zone
        ("bad_label.vm.test", InputError),
        ("taken.vm.test", Refused),
    ],
)
def test_check_add(name: str, error: type[Exception] | None) -> None:
    state = fold([
        *BASE, vm("v2", "bob", "db", "02:00:00:00:00:02"),
        ev.VmDnsNameAdded(**env(), vm="v2", name="taken.vm.test", zone="vm.test"),
    ])
    if error is None:
        assert check_add(state, "v1", name, ZONES, 5)[0] == name.lower().rstrip(".")
    else:
        with pytest.raises(error):
            check_add(state, "v1", name, ZONES, 5)


def test_the_limit_counts_the_owners_names() -> None:
    state = fold([*BASE, ev.VmDnsNameAdded(**env(), vm="v1", name="a.vm.test", zone="vm.test")])
    assert check_add(state, "v1", "a.vm.test", ZONES, 1) == ("a.vm.test", "vm.test")  # held
    with pytest.raises(Refused, match="max_names_per_user"):
        check_add(state, "v1", "b.vm.test", ZONES, 1)


def test_diff_adds_and_removes_only_what_differs() -> None:
    a, b = Rr("a.", "AAAA", "::1"), Rr("b.", "AAAA", "::2")
    assert diff({"z": frozenset({a})}, {"z": frozenset({b}), "y": frozenset()}) == {
        "z": (frozenset({b}), frozenset({a}))
    }
