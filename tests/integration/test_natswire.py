"""Reads over TLS, from a nats-server that requires it, with the system's trust store."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.capabilities import missing
from ucloud import events as ev
from ucloud.config import NatsConfig
from ucloud.errors import LogError
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.servers import find_binary, free_port

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A nats-server (JetStream) that requires TLS, with a self-signed certificate for
    localhost; yields its port and the certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl is not installed: no certificate for a TLS server")
    directory = tmp_path_factory.mktemp("tls-nats")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    port, ports = free_port(), directory / "run"
    ports.mkdir()
    (directory / "nats.conf").write_text(
        f'listen: "127.0.0.1:{port}"\nports_file_dir: "{ports}"\n'
        f'jetstream {{ store_dir: "{directory / "js"}" }}\n'
        f'tls {{ cert_file: "{cert}"\nkey_file: "{key}" }}\n'
    )
    with (directory / "nats.log").open("wb") as output:
        process = subprocess.Popen([find_binary("nats-server"), "-c", str(directory / "nats.conf")],
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not any(ports.glob("*.ports")):
            assert process.poll() is None, (directory / "nats.log").read_text()
            assert time.monotonic() < deadline, "the TLS nats-server did not start"
            time.sleep(0.01)
        yield port, cert
    finally:
        process.terminate()
        process.wait(15)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("scheme", ["tls", "nats"])
async def test_reads_over_tls(
    tls_server: tuple[int, Path], scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's trust store, as configured
    stream = f"TLS{scheme.upper()}"
    log = await EventLog.connect(NatsConfig(url=f"{scheme}://localhost:{port}", stream=stream,
                                            subject_root=f"{stream.lower()}.evt"))
    try:
        await log.ensure_stream()
        host = new_id()
        seqs = [await log.append(ev.HostUp(id=new_id(), at=datetime.now(UTC), actor="t",
                                           host=host)) for _ in range(3)]
        read = [r.seq async for batch in log.read(seqs[0]) for r in batch]
        assert read == seqs
        follow = log.read(seqs[0], filter_subject=ev.subject("host", host), follow=True)
        assert [r.event().aggregate_id for r in await anext(follow)] == [host] * 3
        await follow.aclose()
    finally:
        await log.close()


async def test_an_untrusted_certificate_is_an_error(
    tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    log = await EventLog.connect(NatsConfig(url=f"tls://localhost:{port}", stream="TLSTLS",
                                            subject_root="tlstls.evt"))
    try:
        await log.ensure_stream()
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # trust no more
        with pytest.raises(LogError, match="certificate verify failed"):
            [r async for r in log.read(1)]
    finally:
        await log.close()
