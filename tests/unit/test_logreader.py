"""The reader's pure parts: subject patterns, where filters run, header blocks, URLs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.logreader import STALL_HEARTBEATS, LogReader, _Lost, matcher, server_filters
from ucloud.natswire import Frame, cluster, header, headers_dict, redacted, status


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
    assert redacted(url) == shown


def test_servers_learnt_from_info_keep_scheme_credentials_and_tls_name() -> None:
    assert cluster("tls://u:p@nats.example:4222", ["10.0.0.2:4222", "[2001:db8::3]:4222",
                                                    "n4.example:4222"]) == [
        ("tls://u:p@10.0.0.2:4222", "nats.example"),
        ("tls://u:p@[2001:db8::3]:4222", "nats.example"),
        ("tls://u:p@n4.example:4222", ""),
    ]
    assert cluster("127.0.0.1:4222", ["127.0.0.1:4223"]) == [("nats://127.0.0.1:4223", "")]


# --- folding frames: the reader's decisions, fed frames as the server sends them ----------


def reader(**options: object) -> LogReader[int]:
    made: LogReader[int] = LogReader(
        "nats://127.0.0.1:1", "S", lambda seq, *_: seq, patterns=["r.>"], everything="r.>",
        **options,  # type: ignore[arg-type]
    )
    made._consumer, made._inbox, made._requested = b"C", "_INBOX.x.pull.1", 100
    return made


def message(sseq: int, dseq: int, pending: int, *, consumer: str = "C", new: bool = False) -> Frame:
    ack = (f"$JS.ACK.hub.ACC.S.{consumer}.1.{sseq}.{dseq}.1700000000000000000.{pending}.tok"
           if new else f"$JS.ACK.S.{consumer}.1.{sseq}.{dseq}.1700000000000000000.{pending}")
    return (f"r.vm.{sseq}.x", ack.encode(), b"", b"{}")


def status_frame(code: str, extra: str = "") -> Frame:
    return ("_INBOX.x.pull.1", b"", f"NATS/1.0 {code}\r\n{extra}\r\n".encode(), b"")


@pytest.mark.parametrize("new", [False, True])
def test_messages_in_order_are_taken(new: bool) -> None:
    r = reader(follow=True)
    r._take([message(5, 1, 2, new=new), message(6, 2, 1, new=new), message(7, 3, 0, new=new)])
    assert (r._items, r.next_seq, r._requested, r._done) == ([5, 6, 7], 8, 97, False)


def test_a_gap_in_the_delivery_sequence_is_lost_after_what_came_before_it() -> None:
    r = reader(follow=True)
    with pytest.raises(_Lost, match="gap"):
        r._take([message(5, 1, 9), message(7, 3, 7)])
    assert r._items == [5] and r.next_seq == 6  # read again from 6: nothing twice, no hole


def test_messages_of_a_dropped_consumer_and_old_pulls_are_ignored() -> None:
    r = reader(follow=True)
    stale = ("_INBOX.x.pull.0", b"", b"NATS/1.0 409 Consumer Deleted\r\n\r\n", b"")
    r._take([message(5, 1, 0, consumer="OLD"), stale, message(5, 1, 0)])
    assert r._items == [5]


def test_an_expired_pull_is_nothing_yet_and_asked_for_again() -> None:
    r = reader(follow=True)
    r._take([status_frame("408 Request Timeout", "Nats-Pending-Messages: 40\r\n"),
             status_frame("100 Idle Heartbeat")])
    assert r._requested == 60 and not r._items and not r._done


@pytest.mark.parametrize("code", ["409 Consumer Deleted", "409 Leadership Change", "503"])
def test_a_consumer_gone_is_lost(code: str) -> None:
    with pytest.raises(_Lost):
        reader(follow=True)._take([status_frame(code)])


def test_only_heartbeats_from_a_consumer_that_holds_more_is_a_stall() -> None:
    r = reader(follow=True)
    r._take([message(5, 1, 3)])
    r._take([status_frame("100 Idle Heartbeat")] * (STALL_HEARTBEATS - 1) + [message(6, 2, 2)])
    r._take([status_frame("100 Idle Heartbeat")] * (STALL_HEARTBEATS - 1))  # not yet
    with pytest.raises(_Lost, match="holds 2 more"):
        r._take([status_frame("100 Idle Heartbeat")])
    caught_up = reader(follow=True)
    caught_up._take([message(5, 1, 0)])
    caught_up._take([status_frame("100 Idle Heartbeat")] * 50)  # nothing more: no stall


def test_a_snapshot_ends_at_its_end_or_when_nothing_is_pending() -> None:
    at_end = reader(end=6)
    at_end._take([message(5, 1, 5), message(6, 2, 4), message(7, 3, 3)])
    assert at_end._items == [5, 6] and at_end._done
    past_end = reader(end=6)
    past_end._take([message(5, 1, 5), message(9, 2, 4)])  # a server-side filter skips 6
    assert past_end._items == [5] and past_end._done
    drained = reader(end=100)
    drained._take([message(5, 1, 0)])
    assert drained._items == [5] and drained._done
    following = reader(follow=True, end=100)
    following._take([message(5, 1, 0)])
    assert not following._done  # follow mode waits for ``stop``


def test_a_read_from_a_time_leaves_out_what_precedes_start() -> None:
    r = reader(start=6, start_time=datetime(2026, 1, 1, tzinfo=UTC), end=10)
    r._take([message(4, 1, 6), message(5, 2, 5), message(6, 3, 4)])
    assert r._items == [6] and r.next_seq == 7
