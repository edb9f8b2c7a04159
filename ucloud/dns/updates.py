"""The authoritative server as the ``dns`` service sees it: zone transfers in, RFC 2136
updates out, both signed with the TSIG key (any server that speaks them will do: knotd,
BIND, PowerDNS).

The key lives in a file (``<name> <base64 secret>``, mode 0600), never in the log:
``tsig_key`` reads it and writes a new random one the first time.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone

from ucloud.dns.records import Rr
from ucloud.errors import ServerError
from ucloud.servers import TsigKey

KEY_NAME = "ucloud-update"
TIMEOUT_S = 10.0
_TYPES = ("AAAA", "PTR", "NS")


def tsig_key(path: Path) -> TsigKey:
    """The key of ``path``; a new one (256 random bits) when the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{KEY_NAME} {secret}\n")
    name, secret = path.read_text().split()
    return TsigKey(name=name, secret=secret)


def split_listen(listen: str) -> tuple[str, int]:
    """``[::1]:5353`` -> ("::1", 5353)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class ZoneServer:
    """One authoritative server, reached at ``host``/``port`` with ``key``."""

    def __init__(self, host: str, port: int, key: TsigKey) -> None:
        self.host, self.port = host, port
        self.keyring = dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})
        self.keyname = dns.name.from_text(key.name)

    async def records(self, zone: str) -> frozenset[Rr]:
        """The zone's AAAA, PTR and NS records below its apex (one AXFR)."""
        origin = dns.name.from_text(zone)
        query = dns.message.make_query(origin, dns.rdatatype.AXFR)
        query.use_tsig(self.keyring, self.keyname)
        found = dns.zone.Zone(origin)
        try:
            await dns.asyncquery.inbound_xfr(self.host, found, query, port=self.port,
                                             timeout=TIMEOUT_S)
        except (OSError, TimeoutError, dns.exception.DNSException) as exc:
            raise ServerError(f"zone transfer of {zone} from {self.host}: {exc}") from exc
        out = set()
        for name, node in found.nodes.items():
            absolute = name.derelativize(origin)
            for rdataset in node.rdatasets:
                kind = dns.rdatatype.to_text(rdataset.rdtype)
                if kind not in _TYPES or absolute == origin:
                    continue
                for rdata in rdataset:
                    data = rdata.to_text(origin=origin, relativize=False)
                    out.add(Rr(absolute.to_text(), kind, data))  # type: ignore[arg-type]
        return frozenset(out)

    async def change(self, zone: str, add: Iterable[Rr], remove: Iterable[Rr], ttl: int) -> None:
        """One update of ``zone``: ``remove`` goes, ``add`` comes (RFC 2136, TSIG-signed)."""
        update = dns.update.Update(zone, keyring=self.keyring, keyname=self.keyname)
        for rr in sorted(remove):
            update.delete(rr.name, rr.type, rr.data)
        for rr in sorted(add):
            update.add(rr.name, ttl, rr.type, rr.data)
        try:
            answer = await dns.asyncquery.tcp(update, self.host, port=self.port,
                                              timeout=TIMEOUT_S)
        except (OSError, TimeoutError, dns.exception.DNSException) as exc:
            raise ServerError(f"update of {zone} at {self.host}: {exc}") from exc
        if answer.rcode() != dns.rcode.NOERROR:
            raise ServerError(f"update of {zone}: {dns.rcode.to_text(answer.rcode())}")
