"""The event catalog: tags, subjects, round trips, forward compatibility, schema drift."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.errors import DecodeError, InputError
from ucloud.events.codec import schema_drift
from ucloud.ids import derive_id, id_time_ms, new_id

AT = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def test_every_tag_is_explicit_unique_and_names_its_aggregate() -> None:
    tags = [cls.tag() for cls in ev.EVENT_TYPES]
    assert len(tags) == len(set(tags))
    for cls in ev.EVENT_TYPES:
        aggregate, name = cls.tag().split(".", 1)
        assert aggregate == cls.aggregate
        assert aggregate in ev.AGGREGATES
        assert name.islower() and " " not in name
        assert cls.__struct_config__.frozen


def test_subject_of_an_event() -> None:
    event = ev.VmStarted(id=new_id(), at=AT, actor="system:hostd", vm="v1", host="h1")
    assert event.subject == "ucloud.evt.vm.v1.started"
    assert ev.parse_subject(event.subject) == ("vm", "v1", "started")


def test_subject_refuses_tokens_that_would_break_the_subject_space() -> None:
    for bad in ("a.b", "a b", "a*", "", ">x"):
        with pytest.raises(InputError):
            ev.subject("vm", bad)


def test_round_trip_and_unknown_fields_are_ignored() -> None:
    event = ev.VmRequested(
        id=new_id(), at=AT, actor="alice", vm="v1", owner="alice", name="web",
        spec=ev.Resources(cpu=2, ram_mib=2048, ssd_mib=10240),
        image="debian-12", nics=(ev.Nic(network="n1", mac="02:00:00:00:00:01"),),
    )
    assert ev.decode(ev.encode(event)) == event
    raw = msgspec.json.decode(ev.encode(event))
    raw["added_in_a_later_version"] = {"x": 1}
    assert ev.decode(msgspec.json.encode(raw)) == event


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"type": "vm.exploded", "id": "x"}',
        b'{"type": "vm.started", "id": "x", "at": "2026-01-01T00:00:00Z", "actor": "a"}',
        b'{"type": "vm.started", "id": 5, "at": "2026-01-01T00:00:00Z", "actor": "a",'
        b' "vm": "v", "host": "h"}',
    ],
)
def test_bad_bytes_are_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        ev.decode(data)


def test_schemas_match_the_code() -> None:
    assert schema_drift(SCHEMAS) == []


def test_reaction_envelope_is_derived_from_the_cause() -> None:
    cause = ev.VmRequested(
        id=new_id(), at=AT, actor="alice", vm="v1", owner="alice", name="web",
        spec=ev.Resources(cpu=1, ram_mib=1, ssd_mib=1), image="i", correlation="",
    )
    env = ev.Cause.of(cause, "system:scheduler", AT).envelope("scheduled")
    assert env["causation"] == cause.id
    assert env["correlation"] == cause.id
    assert env["id"] == derive_id(cause.id, "scheduled")
    assert env["id"] != derive_id(cause.id, "placed")


@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_uuid7_keeps_its_timestamp_and_derived_ids_sort_with_their_cause(ms: int) -> None:
    parent = new_id(ms)
    assert id_time_ms(parent) == ms
    assert id_time_ms(derive_id(parent, "x")) == ms
    assert derive_id(parent, "x") == derive_id(parent, "x")


def test_new_ids_are_time_ordered() -> None:
    ids = [new_id(ms) for ms in range(1_700_000_000_000, 1_700_000_000_100)]
    assert ids == sorted(ids)
