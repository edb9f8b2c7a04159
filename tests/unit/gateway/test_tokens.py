"""Bearer tokens: signed, expiring, and refused when forged, altered or expired."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import Unauthorized
from ucloud.gateway.tokens import Claims, sign, verify

KEY = b"k" * 32
CLAIMS = Claims(sub="alice", realm="users", iat=1000, exp=4600)


def test_round_trip() -> None:
    assert verify(KEY, sign(KEY, CLAIMS), now=2000) == CLAIMS


def test_expired() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        verify(KEY, sign(KEY, CLAIMS), now=4600)


def test_other_key_is_a_forgery() -> None:
    with pytest.raises(Unauthorized, match="signature"):
        verify(b"x" * 32, sign(KEY, CLAIMS), now=2000)


def test_altered_claims_are_a_forgery() -> None:
    version, _, signature = sign(KEY, CLAIMS).split(".")
    admin = sign(b"other", Claims(sub="alice", realm="admin", iat=1000, exp=4600))
    forged = f"{version}.{admin.split('.')[1]}.{signature}"
    with pytest.raises(Unauthorized, match="signature"):
        verify(KEY, forged, now=2000)


@pytest.mark.parametrize("token", ["", "v1", "v2.a.b", "v1.a.b.c", "v1.!!.??", "v1..", "v1.e30."])
def test_malformed(token: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(KEY, token, now=2000)
    assert caught.value.field == "token"


@given(st.text(max_size=200))
def test_arbitrary_text_is_never_accepted(token: str) -> None:
    with pytest.raises(Unauthorized):
        verify(KEY, token, now=2000)
