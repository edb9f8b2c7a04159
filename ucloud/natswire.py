"""A NATS protocol connection of its own, for reading the event log fast.

nats-py spends tens of microseconds on every message it delivers (a message object, a
header dict, a callback or a queue); a replay of millions of events cannot afford that.
Measured (``python -m bench.replay --count 500000``, the whole stream read, each record's
stream sequence taken and its event decoded with msgspec, best of 2, nats-server 2.15,
nats-py 2.16, a busy 2-core machine): this reader 55,700 records/s (165,000 per CPU
second of the client), nats-py's ordered push consumer 32,900/s (72,000 per CPU second),
its pull consumer with ``fetch(5000)`` 5,800/s (25,000): 2.3x and 6.5x less client CPU
per record, 1.7x and 9.6x by the wall clock. Kept for that margin; the ordered consumer
did not stall in those runs.
``Wire`` speaks the protocol directly: one subscription on an inbox of its own, frames
parsed out of one buffer, pull requests and JetStream API requests published on it.

It connects the way nats-py does from a URL alone (the event log's configuration is a
URL): ``nats://`` or ``tls://`` schemes, a comma-separated list of servers tried in
turn (and the cluster's other servers, learnt from the first INFO, on a reconnect),
``user:password@`` or ``token@`` in the URL, and TLS when the scheme is ``tls`` or the
server requires it. ``NatsAuth`` holds the rest of the configuration that both clients
apply (nats-py's through ``nats_py_options``, this one's in its CONNECT): a credentials
file (user JWT and NKey seed: ``jwt`` and the server's nonce signed, ``sig``), an NKey
seed file (``nkey`` and ``sig``), the CA file that TLS verifies servers with (the system's
trust store, which honours ``SSL_CERT_FILE``, when none is set) and a client certificate.
No secret it reads is ever put in a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ucloud.errors import LogError

TIMEOUT_S = 10.0  # to connect, and for a JetStream API answer
READ_BYTES = 1 << 22  # at most this much is read (and buffered by asyncio) at once

# (subject, reply, header block, payload) of one MSG or HMSG frame
Frame = tuple[str, bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Who a NATS client is and whom it trusts: file paths, "" for unset.

    ``credentials`` is a ``.creds`` file (a user JWT and its NKey seed), ``nkey_seed`` a
    file holding one seed (``SU...``); at most one of them. ``ca_file`` verifies servers
    (""): the system's trust store); ``cert_file`` and ``key_file`` are a client
    certificate for servers that verify clients (``key_file`` "" when the key is in the
    certificate file).
    """

    credentials: str = ""
    nkey_seed: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def check(self) -> None:
        """Read every file once, so a wrong path or a bad file is an error at connect."""
        self.ssl_context()
        if self.credentials:
            self._signer()
            self._jwt()
        elif self.nkey_seed:
            self._signer()

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise LogError(f"NATS CA file {self.ca_file}: {_reason(exc)}") from exc
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise LogError(f"NATS client certificate {self.cert_file}: {_reason(exc)}") from exc
        return context

    def connect_fields(self, nonce: str) -> dict[str, str]:
        """What CONNECT carries to prove the identity: ``jwt`` or ``nkey``, and ``sig``."""
        if not (self.credentials or self.nkey_seed) or not nonce:
            return {}
        signer = self._signer()
        try:
            fields = {"sig": base64.b64encode(signer.sign(nonce.encode())).decode()}
            if self.credentials:
                fields["jwt"] = self._jwt()
            else:
                fields["nkey"] = signer.public_key.decode()
        finally:
            signer.wipe()
        return fields

    def nats_py_options(self) -> dict[str, Any]:
        """The same settings as keyword arguments of ``nats.connect``."""
        options: dict[str, Any] = {}
        if self.credentials:
            options["user_credentials"] = self.credentials
        elif self.nkey_seed:
            options["nkeys_seed"] = self.nkey_seed
        if self.ca_file or self.cert_file:
            options["tls"] = self.ssl_context()
        return options

    def _signer(self) -> Any:
        import nkeys

        path = self.credentials or self.nkey_seed
        text = _read(path, "credentials file" if self.credentials else "NKey seed file")
        seed = _section(text, "USER NKEY SEED") if self.credentials else text.strip()
        try:
            return nkeys.from_seed(bytearray(seed.encode()))
        except (nkeys.NkeysError, ValueError) as exc:
            raise LogError(f"NATS {path}: not a valid NKey seed") from exc

    def _jwt(self) -> str:
        return _section(_read(self.credentials, "credentials file"), "NATS USER JWT")


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LogError(f"NATS {what} {path}: {_reason(exc)}") from exc


def _section(text: str, title: str) -> str:
    """The body of one ``-----BEGIN <title>-----`` block of a credentials file."""
    lines = iter(text.splitlines())
    for line in lines:
        if f"BEGIN {title}" in line:
            body = next(lines, "").strip()
            if body:
                return body
    raise LogError(f"NATS credentials file: no {title.lower()} in it")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Wire:
    """One plain NATS protocol connection with a single inbox subscription (``inbox.>``)."""

    def __init__(
        self, url: str, *, name: str = "ucloud-read", auth: NatsAuth | None = None
    ) -> None:
        self.urls = [u.strip() for u in url.split(",") if u.strip()]
        if not self.urls:
            raise LogError(f"no NATS server in {url!r}")
        # (url, name to verify a TLS certificate against when the URL holds an address)
        self.servers: list[tuple[str, str]] = [(u, "") for u in self.urls]
        self.name = name
        self.auth = auth or NatsAuth()
        self.inbox = f"_INBOX.{os.urandom(10).hex()}"
        self.url = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = b""
        self._requests = 0

    @property
    def where(self) -> str:
        """The servers, without credentials (for messages)."""
        return ",".join(redacted(u) for u in self.urls)

    async def open(self) -> None:
        """Connect to the first server that answers; LogError naming every failure."""
        failures = []
        for url, tls_name in list(self.servers):
            try:
                await self._open(url, tls_name)
            except (OSError, EOFError, TimeoutError, ValueError, LogError) as exc:
                await self.close()
                failures.append(f"{redacted(url)}: {exc or type(exc).__name__}")
                continue
            self.url = url
            return
        raise LogError(f"cannot connect to NATS at {'; '.join(failures)}")

    async def _open(self, url: str, tls_name: str) -> None:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.scheme not in ("nats", "tls"):
            raise LogError(f"unsupported scheme {parts.scheme!r} (nats:// or tls://)")
        host = parts.hostname or "127.0.0.1"
        self._buffer = b""
        async with asyncio.timeout(TIMEOUT_S):
            self._reader, self._writer = await asyncio.open_connection(
                host, parts.port or 4222, limit=READ_BYTES
            )
            info = json.loads((await self._reader.readuntil(b"\r\n")).removeprefix(b"INFO"))
            if parts.scheme == "tls" or info.get("tls_required"):
                context = self.auth.ssl_context()
                await self._writer.start_tls(context, server_hostname=tls_name or host)
        known = {u for u, _ in self.servers}
        learnt = cluster(url, info.get("connect_urls") or [])
        self.servers += [server for server in learnt if server[0] not in known]
        options: dict[str, Any] = {
            "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
            "protocol": 1, "lang": "python", "version": "ucloud", "name": self.name,
        }
        if parts.username and parts.password is not None:
            options["user"], options["pass"] = unquote(parts.username), unquote(parts.password)
        elif parts.username:
            options["auth_token"] = unquote(parts.username)
        options.update(self.auth.connect_fields(info.get("nonce", "")))
        self._write(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        self._write(f"SUB {self.inbox}.> 1\r\n".encode())
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                line = await self._reader.readuntil(b"\r\n")
                if line.startswith(b"PONG"):
                    return
                if line.startswith(b"-ERR"):
                    raise LogError(f"refused: {line.decode().strip()}")

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue a PUB (sent on ``flush`` or when the transport gets to it)."""
        head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else (
            f"PUB {subject} {len(payload)}\r\n"
        )
        self._write(head.encode() + payload + b"\r\n")

    async def flush(self) -> None:
        if self._writer is None:
            raise LogError(f"NATS at {redacted(self.url)}: not connected")
        try:
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise LogError(f"NATS at {redacted(self.url)}: {exc}") from exc

    async def request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JetStream API request and its JSON answer; LogError with the server's reason.

        Frames that arrive meanwhile for other subjects are dropped: call it only when no
        pull of this connection is still wanted.
        """
        self._requests += 1
        reply = f"{self.inbox}.api.{self._requests}"
        self.publish(subject, json.dumps(body).encode(), reply)
        await self.flush()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    for to, _, headers, payload in await self.frames():
                        if to == reply:
                            return _answer(subject, headers, payload)
        except TimeoutError as exc:
            raise LogError(f"{subject}: no answer within {TIMEOUT_S:g}s") from exc

    async def frames(self, timeout: float | None = None) -> list[Frame]:
        """The whole frames the next read completes (at least one).

        TimeoutError after ``timeout`` seconds without one; LogError when the connection
        closes or the server reports an error.
        """
        out: list[Frame] = []
        while not out:
            data = await self._read(timeout)
            buf, pos = self._buffer + data if self._buffer else data, 0
            find = buf.find
            while True:
                nl = find(b"\r\n", pos)
                if nl < 0:
                    break
                op = buf[pos : pos + 4]
                if op == b"HMSG" or op[:3] == b"MSG":
                    parts = buf[pos:nl].split(b" ")
                    total = int(parts[-1])
                    body = nl + 2
                    end = body + total + 2
                    if end > len(buf):
                        break
                    if op == b"HMSG":
                        head = int(parts[-2])
                        reply = parts[3] if len(parts) == 6 else b""
                    else:
                        head = 0
                        reply = parts[3] if len(parts) == 5 else b""
                    out.append((parts[1].decode(), reply, buf[body : body + head],
                                buf[body + head : body + total]))
                    pos = end
                    continue
                if op == b"PING":
                    self._write(b"PONG\r\n")
                elif op == b"-ERR":
                    raise LogError(f"NATS at {redacted(self.url)}: {buf[pos:nl].decode()}")
                pos = nl + 2
            self._buffer = buf[pos:]
        return out

    async def _read(self, timeout: float | None) -> bytes:
        if self._reader is None:
            raise LogError(f"NATS at {redacted(self.url)}: not connected")
        try:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_BYTES)
        except TimeoutError:
            raise
        except (OSError, ConnectionError, ssl.SSLError) as exc:
            raise LogError(f"NATS at {redacted(self.url)}: {exc}") from exc
        if not data:
            raise LogError(f"NATS at {redacted(self.url)} closed the connection")
        return data

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise LogError(f"NATS at {redacted(self.url)}: not connected")
        self._writer.write(data)


def cluster(url: str, connect_urls: list[str]) -> list[tuple[str, str]]:
    """The servers a server's INFO names (``host:port``), as URLs like ``url`` (scheme and
    credentials), each with the name to verify TLS against when it is an address."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    userinfo = parts.netloc.rpartition("@")[0]
    out = []
    name = parts.hostname if parts.hostname and not _is_address(parts.hostname) else ""
    for address in connect_urls:
        named = name if _is_address(address.rsplit(":", 1)[0].strip("[]")) else ""
        out.append((f"{parts.scheme}://{userinfo + '@' if userinfo else ''}{address}", named))
    return out


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host


def _answer(subject: str, headers: bytes, payload: bytes) -> dict[str, Any]:
    if status(headers) == b"503":
        raise LogError(f"{subject}: no JetStream responder")
    answer: dict[str, Any] = json.loads(payload)
    error = answer.get("error")
    if error:
        raise LogError(f"{subject}: {error.get('description', error)}")
    return answer


def status(headers: bytes) -> bytes:
    """The status code of a status message (``NATS/1.0 408 ...``), b"" when none."""
    return headers[9:12] if headers.startswith(b"NATS/1.0 ") else b""


def header(headers: bytes, name: bytes) -> bytes:
    """One header's value from a raw header block (b"" when absent)."""
    for line in headers.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return b""


def headers_dict(raw: bytes) -> dict[str, str]:
    """A header block (the ``NATS/1.0`` line, then ``Name: value`` lines) as a dict."""
    if not raw:
        return {}
    out = {}
    for line in raw.decode().split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def redacted(url: str) -> str:
    """``url`` without its password or token."""
    scheme, sep, rest = url.rpartition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
