"""OpenSSH public key validation: real keys pass, anything malformed names the problem."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError
from ucloud.gateway.sshkeys import parse_public_key

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII3xtCULp5leN1aYiWHq5c4sjzIXR7rv4ynABpSyyYiA alice@laptop"
)
RSA = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDOA3SOEfpQ7M3qtZ9xnlLFMC0SMZvf5I8x/En6QKb6OIAu2K8aAuOVl"
    "jx/crdP5qFhkaRHODhaGlcdDQE1AKg3KYHzD05V0npAOyKh72h/t9/PB4jv49NXNoaOwXhXYgjqLAAJPH7/Sr1sxMgQ6sf"
    "LFGofznaQBIqxJ2kNZFY62abaoskfCvk+uesD7WBqdIflg8hKM8cbWCSaWbn8dPUz/CNdBrwNUzshykRPulAqpXRwNfPP+"
    "5N2AZEnH2Y8dElayGci2o5OXYj1pSLgnQGd+EEVe4PXXe4SDgLIuiiGObXU2hVonOtxc/pas6i17ABRm+Jrc+tX9oMR59F"
    "+y4jx test"
)
P256 = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJNv6ezpQgKFJQ7LM1/XCu"
    "dTbbEnjljyQPX9mjHPi84lxdaO5x9B/U1LJR4lVSCC8XsrFrng3GNvJrb6+qYjc8M= test"
)
P384 = (
    "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBHsXrjF1H+GV5e7OMrXgNq"
    "Lhwy/Qx7y//GTZh2XjFgyodOWecNLEns137SPYZMkeLwAV1o2eDiO1dbcoJ8kP/PqCupVfKLxfnISdf0s0ElPTGKtGCsck"
    "nZL+yS/7Iyu7Pg== root@vm"
)
P521 = (
    "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAGF6ywSwKbW3iabZkoJCX"
    "/nZJarfiiaRSO1NOxAYMEPdpDWvBxBh77un4ZMGXlOkLSCWnPqSwR7UvxvXRHvKLStagCwcIdbhE749LtRoif7R98LBtha"
    "wQjuaXwKY4pLP0yVb81gVAk3O/egMRthQJsqSMyw0kKmwHAwsuGK0b8eQ2CqJQ== test"
)


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def line(*fields: bytes, key_type: str | None = None, comment: str = "") -> str:
    blob = b"".join(ssh_string(f) for f in fields)
    kind = key_type or fields[0].decode()
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".rstrip()


SK_ED25519 = line(b"sk-ssh-ed25519@openssh.com", os.urandom(32), b"ssh:")
SK_ECDSA = line(
    b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"\x04" + os.urandom(64), b"ssh:"
)


@pytest.mark.parametrize("key", [ED25519, RSA, P256, P384, P521, SK_ED25519, SK_ECDSA])
def test_real_keys_are_accepted_and_normalised(key: str) -> None:
    parsed = parse_public_key(f"  {key}\n")
    assert parsed.line() == key
    assert parsed.type == key.split()[0]


def test_comment_is_optional_and_may_hold_spaces() -> None:
    bare = " ".join(ED25519.split()[:2])
    assert parse_public_key(bare).comment == ""
    assert parse_public_key(bare + " my  laptop key").comment == "my  laptop key"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("ssh-dss AAAAB3NzaC1kc3M= old", "unknown key type"),
        ('from="10.0.0.1" ' + ED25519, "unknown key type"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-rsa " + ED25519.split()[1], "of type 'ssh-ed25519', not 'ssh-rsa'"),
        (line(b"ssh-ed25519", os.urandom(31)), "32 bytes"),
        (line(b"ssh-ed25519", os.urandom(32), b"extra"), "trailing bytes"),
        ("ssh-ed25519 " + base64.b64encode(ssh_string(b"ssh-ed25519") + b"\0\0").decode(),
         "truncated"),
        (line(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + os.urandom(128)), "at least 2048"),
        (line(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" + os.urandom(64)), "curve nistp256"),
        (line(b"ecdsa-sha2-nistp256", b"nistp256", b"\x02" + os.urandom(32)), "uncompressed"),
        (ED25519 + "\nssh-ed25519 AAAA", "single line"),
        (ED25519 + " bell\x07", "control characters"),
        ("ssh-ed25519 " + "A" * 20000, "longer than"),
    ],
)
def test_malformed_keys_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_public_key(text)
    assert caught.value.field == "public_key"
    assert reason in caught.value.reason


@given(st.text(max_size=300))
def test_arbitrary_text_is_a_key_or_an_input_error(text: str) -> None:
    try:
        parsed = parse_public_key(text)
    except InputError as exc:
        assert exc.field == "public_key"
    else:
        assert parse_public_key(parsed.line()) == parsed
