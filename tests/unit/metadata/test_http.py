"""The metadata service's HTTP/1.1 over a real loopback socket, and its pure link rules."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from ucloud.metadata import http
from ucloud.metadata.documents import TEXT, Reply
from ucloud.metadata.links import Bridge, Link, pktinfo_index, plan, vni_of

Seen = list[tuple[str, str, str, "int | None"]]


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Seen]]:
    seen: Seen = []

    def handle(method: str, path: str, source: str, arrival: int | None) -> Reply:
        seen.append((method, path, source, arrival))
        if path == "/boom":
            raise RuntimeError("boom")
        return Reply(200, TEXT, f"{path}\n".encode())

    sock = http.tcp_listener("::1", 0)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: http.MetadataProtocol(handle, http.fixed(42)), sock=sock
    )
    try:
        yield sock.getsockname()[1], seen
    finally:
        srv.close()
        await srv.wait_closed()


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("::1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_pipelined_requests_are_answered_in_order(server: tuple[int, Seen]) -> None:
    port, seen = server
    requests = b"".join(
        f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3)
    ) + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await exchange(port, requests)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 4
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"/0\n", b"/1\n", b"/2\n", b"/last\n"]
    assert [s[1] for s in seen] == ["/0", "/1", "/2", "/last"]
    assert {(s[2], s[3]) for s in seen} == {("::1", 42)}


async def test_head_has_no_body_and_http10_closes(server: tuple[int, Seen]) -> None:
    port, _ = server
    answer = await exchange(port, b"HEAD /x HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 3" in head and body == b""


@pytest.mark.parametrize(
    "request_bytes",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET /" + b"a" * (http.MAX_HEAD + 10) + b" HTTP/1.1\r\n"],
)
async def test_garbage_and_oversized_requests_get_400(
    server: tuple[int, Seen], request_bytes: bytes
) -> None:
    port, seen = server
    answer = await exchange(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer
    assert seen == []


async def test_a_failing_handler_is_a_500_and_the_connection_lives(
    server: tuple[int, Seen],
) -> None:
    port, _ = server
    answer = await exchange(
        port, b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 500 ") and b"HTTP/1.1 200 OK" in answer


def test_render() -> None:
    wire = http.render(Reply(404, TEXT, b"no\n"), close=True)
    assert wire == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nno\n"
    )


@pytest.mark.parametrize(
    ("name", "vni"),
    [("br7", 7), ("br16777215", 16777215), ("br", None), ("br07", None), ("brx", None),
     ("eth0", None), ("vxlan7", None)],
)
def test_vni_of(name: str, vni: int | None) -> None:
    assert vni_of(name) == vni


def test_plan_listens_on_known_vm_bridges_only() -> None:
    links = [
        Link("br7", 10, "bridge"), Link("br8", 11, "bridge"), Link("br9", 12, "veth"),
        Link("docker0", 13, "bridge"), Link("eth0", 2, ""),
    ]
    listening = {"br5": Bridge("br5", 5, 5), "br8": Bridge("br8", 3, 8)}
    decided = plan(links, {7, 8, 9, 5}, listening)
    # br8 came back with another index: renewed; br5 is gone; br9 is not a bridge
    assert decided.open == (Bridge("br7", 10, 7), Bridge("br8", 11, 8))
    assert set(decided.close) == {"br5", "br8"}
    assert plan(links, set(), {}).open == ()
    steady = {"br7": Bridge("br7", 10, 7)}
    assert plan(links, {7}, steady) == plan([], set(), {})


def test_pktinfo_index_reads_the_kernels_control_message() -> None:
    # what getsockopt(IPV6_2292PKTOPTIONS) returned for a SYN that came in on ifindex 2
    pktinfo = socket.inet_pton(socket.AF_INET6, "2001:db8:99::1") + struct.pack("@I", 2)
    cmsg = struct.pack("@Nii", 16 + len(pktinfo), socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
    hop = struct.pack("@Nii", 20, socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT) + b"\x40\0\0\0"
    assert pktinfo_index(cmsg + pktinfo + b"\0" * 4) == 2
    assert pktinfo_index(hop + b"\0" * 4 + cmsg + pktinfo) == 2
    assert pktinfo_index(b"") is None
    assert pktinfo_index(hop) is None
