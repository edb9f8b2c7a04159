"""What CONNECT carries for a credentials file and an NKey seed file (nonce signatures)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import nkeys
import pytest

from ucloud.errors import LogError
from ucloud.natswire import NatsAuth

JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln"


def seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def verifies(public_seed: bytes, nonce: str, sig: str) -> bool:
    pair = nkeys.from_seed(bytearray(public_seed))
    return bool(pair.verify(nonce.encode(), base64.b64decode(sig)))


def test_a_credentials_file_gives_its_jwt_and_signs_the_nonce(tmp_path: Path) -> None:
    user = seed()
    creds = tmp_path / "user.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.decode()}\n------END USER NKEY SEED------\n"
    )
    fields = NatsAuth(credentials=str(creds)).connect_fields("nonce-1")
    assert fields["jwt"] == JWT and "nkey" not in fields
    assert verifies(user, "nonce-1", fields["sig"])
    assert NatsAuth(credentials=str(creds)).nats_py_options() == {"user_credentials": str(creds)}


def test_an_nkey_seed_file_gives_its_public_key(tmp_path: Path) -> None:
    user = seed()
    (tmp_path / "user.nk").write_bytes(user + b"\n")
    fields = NatsAuth(nkey_seed=str(tmp_path / "user.nk")).connect_fields("abc")
    assert fields["nkey"] == nkeys.from_seed(bytearray(user)).public_key.decode()
    assert verifies(user, "abc", fields["sig"])


def test_without_a_nonce_or_identity_nothing_is_added(tmp_path: Path) -> None:
    (tmp_path / "user.nk").write_bytes(seed())
    assert NatsAuth(nkey_seed=str(tmp_path / "user.nk")).connect_fields("") == {}
    assert NatsAuth().connect_fields("abc") == {} and NatsAuth().nats_py_options() == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [("not a seed", "not a valid NKey seed"), ("", "not a valid NKey seed")],
)
def test_a_bad_seed_file_is_named_without_its_content(
    tmp_path: Path, text: str, reason: str
) -> None:
    (tmp_path / "bad.nk").write_text(text)
    with pytest.raises(LogError, match=reason) as raised:
        NatsAuth(nkey_seed=str(tmp_path / "bad.nk")).check()
    assert "bad.nk" in str(raised.value) and (not text or text not in str(raised.value))


def test_a_credentials_file_without_a_jwt_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text(f"-----BEGIN USER NKEY SEED-----\n{seed().decode()}\n")
    with pytest.raises(LogError, match="no nats user jwt"):
        NatsAuth(credentials=str(creds)).check()
