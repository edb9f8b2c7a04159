"""The pure parts of idempotency keys: the verdict, scoping, fingerprints, derived ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Call
from ucloud.gateway.idempotency import (
    STALE_MS,
    Record,
    check_key,
    fingerprint,
    judge,
    record_key,
    replayed,
)
from ucloud.gateway.schemas import KeyCreate
from ucloud.ids import id_time_ms, new_id

NOW = 1_800_000_000_000


def record(**changes: object) -> Record:
    fields: dict[str, object] = {"fingerprint": "f", "seed": new_id(), "started_ms": NOW}
    return Record(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stored", "print_", "now", "verdict"),
    [
        (None, "f", NOW, "run"),
        (record(), "g", NOW, "mismatch"),
        (record(status=202, body=b"{}"), "g", NOW, "mismatch"),
        (record(status=202, body=b"{}"), "f", NOW, "replay"),
        (record(status=202), "f", NOW + 10 * STALE_MS, "replay"),  # answers outlive claims
        (record(), "f", NOW, "wait"),
        (record(), "f", NOW + STALE_MS, "wait"),
        (record(), "f", NOW + STALE_MS + 1, "run"),  # its gateway died: take it over
        (record(started_ms=0), "f", NOW, "run"),  # open: failed without an answer
    ],
)
def test_judge(stored: Record | None, print_: str, now: int, verdict: str) -> None:
    assert judge(stored, print_, now) == verdict


def test_keys_are_scoped_by_user_method_and_path() -> None:
    base = record_key("/s/", "alice", "POST", "/v1/vms", "k")
    assert base.startswith("/s/idempotency/alice/")
    others = {
        record_key("/s/", "bob", "POST", "/v1/vms", "k"),
        record_key("/s/", "alice", "POST", "/v1/networks", "k"),
        record_key("/s/", "alice", "PUT", "/v1/vms", "k"),
        record_key("/s/", "alice", "POST", "/v1/vms", "k2"),
    }
    assert base not in others and len(others) == 4
    assert record_key("/s/", "alice", "POST", "/v1/vms", "k") == base


@pytest.mark.parametrize("value", ["", " ", "a b", "é", "x" * 256, "tab\there"])
def test_bad_keys_are_refused_naming_the_header(value: str) -> None:
    with pytest.raises(InputError) as caught:
        check_key(value)
    assert caught.value.field == "Idempotency-Key"


@pytest.mark.parametrize("value", ["k", new_id(), "x" * 255, "a:b/c=d"])
def test_good_keys(value: str) -> None:
    check_key(value)


def test_fingerprint_reads_the_decoded_body() -> None:
    one = KeyCreate(name="laptop", public_key="ssh-ed25519 AAAA")
    assert fingerprint(one) == fingerprint(KeyCreate(name="laptop", public_key="ssh-ed25519 AAAA"))
    assert fingerprint(one) != fingerprint(KeyCreate(name="desk", public_key="ssh-ed25519 AAAA"))
    assert fingerprint(None) != fingerprint(one)


def test_a_replayed_answer_says_so() -> None:
    answer = replayed(record(status=201, body=b'{"id":"x"}', headers={"Location": "/x"}))
    assert answer.status == 201 and bytes(answer.body) == b'{"id":"x"}'
    assert answer.headers == {"Location": "/x", "Idempotent-Replayed": "true"}
    assert replayed(record(status=204)).body is None


def call(seed: str) -> Call:
    return Call(principal=Principal(name="a", realm="r"), params={}, body=None,
                request=None, seed=seed)  # type: ignore[arg-type]


@given(st.sampled_from(["vm", "request", "order", "net"]))
def test_ids_derive_from_the_seed(purpose: str) -> None:
    seed = new_id()
    assert call(seed).new_id(purpose) == call(seed).new_id(purpose)
    assert call(seed).new_id(purpose) != call(seed).new_id(purpose + "!")
    assert id_time_ms(call(seed).new_id(purpose)) == id_time_ms(seed)  # sorts by the request
    assert call("").new_id(purpose) != call("").new_id(purpose)  # no key: fresh ids
