"""The reader's pure parts: subject patterns, where filters run, header blocks, URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.logreader import matcher, server_filters
from ucloud.natswire import _redacted, cluster, header, headers_dict, status


@pytest.mark.parametrize(("patterns", "subject", "matches"), [
    (["ucloud.evt.>"], "ucloud.evt.vm.a.started", True),
    (["ucloud.evt.>"], "ucloud.evt", False),
    (["ucloud.evt.vm.*.requested"], "ucloud.evt.vm.a.requested", True),
    (["ucloud.evt.vm.*.requested"], "ucloud.evt.vm.a.b.requested", False),
    (["ucloud.evt.vm.*.requested"], "ucloud.evt.vmx.a.requested", False),
    (["ucloud.evt.vm.*.requested", "ucloud.evt.host.*.*"], "ucloud.evt.host.h.up", True),
    (["ucloud.evt.vm.a.*"], "ucloud.evt.vm.a.started", True),
    (["ucloud.evt.vm.a.*"], "ucloud.evt.vm.ab.started", False),
    (["ucloud.evt.vm.a+b.*"], "ucloud.evt.vm.aab.started", False),  # literal, not a regex
])
def test_matcher(patterns: list[str], subject: str, matches: bool) -> None:
    assert matcher(patterns)(subject) is matches


tokens = st.text(alphabet="abc-_01", min_size=1, max_size=4)


@given(st.lists(tokens, min_size=1, max_size=5), st.data())
def test_a_subject_matches_its_generalisations(parts: list[str], data: st.DataObject) -> None:
    wild = [data.draw(st.sampled_from([t, "*"])) for t in parts]
    cut = data.draw(st.integers(0, len(parts) - 1))
    subject = ".".join(parts)
    assert matcher([".".join(wild)])(subject)
    assert matcher([".".join([*parts[:cut], ">"])])(subject)


@pytest.mark.parametrize(("patterns", "filters"), [
    (["ucloud.evt.>"], []),
    (["ucloud.evt.vm.*.requested"], ["ucloud.evt.vm.*.requested"]),
    (["ucloud.evt.vm.a.*"], ["ucloud.evt.vm.a.*"]),
    (["ucloud.evt.vm.*.requested", "ucloud.evt.>"], []),
    (["ucloud.evt.vm.*.requested", "ucloud.evt.vm.*.started"], None),  # matched here
])
def test_which_filters_the_server_applies(patterns: list[str], filters: list[str] | None) -> None:
    assert server_filters(patterns, "ucloud.evt.>") == filters


BLOCK = b"NATS/1.0\r\nNats-Msg-Id: 7\r\nUcloud-Type:vm.requested\r\n\r\n"
TIMEOUT = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n"


def test_header_blocks() -> None:
    assert headers_dict(BLOCK) == {"Nats-Msg-Id": "7", "Ucloud-Type": "vm.requested"}
    assert headers_dict(b"") == {}
    assert status(TIMEOUT) == b"408" and status(BLOCK) == b""
    assert header(TIMEOUT, b"nats-pending-messages") == b"12"
    assert header(BLOCK, b"Nats-Pending-Messages") == b""


@pytest.mark.parametrize(("url", "shown"), [
    ("nats://alice:s3cret@h:4222", "nats://***@h:4222"),
    ("tls://token@h", "tls://***@h"),
    ("nats://h:4222", "nats://h:4222"),
])
def test_urls_in_messages_hide_credentials(url: str, shown: str) -> None:
    assert _redacted(url) == shown


def test_servers_learnt_from_info_keep_scheme_credentials_and_tls_name() -> None:
    assert cluster("tls://u:p@nats.example:4222", ["10.0.0.2:4222", "[2001:db8::3]:4222",
                                                    "n4.example:4222"]) == [
        ("tls://u:p@10.0.0.2:4222", "nats.example"),
        ("tls://u:p@[2001:db8::3]:4222", "nats.example"),
        ("tls://u:p@n4.example:4222", ""),
    ]
    assert cluster("127.0.0.1:4222", ["127.0.0.1:4223"]) == [("nats://127.0.0.1:4223", "")]
