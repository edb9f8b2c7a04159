"""Listen settings, their sockets and URLs (the gateway's and the console endpoint's)."""

from __future__ import annotations

import socket

import pytest

from ucloud.errors import ConfigError
from ucloud.gateway.service import bind
from ucloud.listen import parse_listen, url_of


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("[::1]:8080", "::1", 8080), ("127.0.0.1:0", "127.0.0.1", 0), ("[::]:80", "::", 80)],
)
def test_parse_listen(listen: str, host: str, port: int) -> None:
    assert parse_listen(listen, "gateway.listen") == (host, port)


@pytest.mark.parametrize("listen", ["localhost:8080", "[::1]", "127.0.0.1:http", "1.2.3.4:70000"])
def test_bad_listen_names_the_key(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(listen, "host.console_listen")
    assert caught.value.key == "host.console_listen"


def test_the_socket_says_tcp_so_asyncio_sets_nodelay() -> None:
    sock = bind("127.0.0.1:0")
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert url_of(sock).startswith("http://127.0.0.1:")
    finally:
        sock.close()
