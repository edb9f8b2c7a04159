"""NATS with TLS (the test's own CA, client certificates verified) and NKey users: the
event log's connection and the log reader's both use the configured identity."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from tests.tls import NkeyUser, Pki, SecureNats, nkey_user
from ucloud import events as ev
from ucloud.config import NatsConfig
from ucloud.errors import LogError
from ucloud.eventlog import EventLog, nats_auth, record_of
from ucloud.ids import new_id
from ucloud.logreader import LogReader

pytestmark = pytest.mark.servers


@dataclasses.dataclass(frozen=True)
class Secured:
    server: SecureNats
    user: NkeyUser
    config: NatsConfig  # every setting this server needs


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("secure-nats")
    pki = Pki.create(directory / "pki")
    user = nkey_user(directory)
    client = pki.issue("ucloud-client")
    with SecureNats(directory / "server", pki, users=[user], verify_clients=True) as server:
        yield Secured(server, user, NatsConfig(
            url=server.url(), stream="AUTHED", subject_root="authed.evt",
            nkey_seed=str(user.seed_file), ca_file=str(pki.ca),
            cert_file=str(client.cert), key_file=str(client.key),
        ))


def host_up() -> ev.HostUp:
    return ev.HostUp(id=new_id(), at=datetime.now(UTC), actor="t", host=new_id())


async def test_append_load_and_read_with_every_setting(secured: Secured) -> None:
    log = await EventLog.connect(secured.config)
    try:
        await log.ensure_stream()
        event = host_up()
        seq = await log.append(event)
        events, last = await log.load("host", event.host)
        assert (last, [e.event for e in events]) == (seq, [event])
        read = [r.seq async for batch in log.read(seq) for r in batch]
        assert read == [seq]
    finally:
        await log.close()


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ({"nkey_seed": ""}, "Authorization Violation"),
        ({"ca_file": ""}, "certificate verify failed"),
    ],
)
async def test_without_a_setting_connecting_is_a_clear_error(
    secured: Secured, missing: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # no system trust either
    with pytest.raises(LogError, match=f"(?i){reason}") as raised:
        await EventLog.connect(msgspec.structs.replace(secured.config, **missing))
    assert secured.user.seed_file.read_text().strip() not in str(raised.value)


async def test_a_server_verifying_clients_refuses_one_without_a_certificate(
    secured: Secured,
) -> None:
    config = msgspec.structs.replace(secured.config, cert_file="", key_file="")
    with pytest.raises(LogError, match="cannot connect to NATS"):
        await EventLog.connect(config)


async def test_the_log_reader_signs_in_like_the_event_log(secured: Secured) -> None:
    log = await EventLog.connect(secured.config)
    try:
        await log.ensure_stream()
        seq = await log.append(host_up())
    finally:
        await log.close()

    def reader(config: NatsConfig) -> LogReader[int]:
        return LogReader(
            config.url, config.stream, lambda s, *_: record_of(s, *_).seq,
            patterns=["authed.evt.>"], everything="authed.evt.>", start=seq, end=seq,
            auth=nats_auth(config),
        )

    assert [s async for batch in reader(secured.config).batches() for s in batch] == [seq]
    no_seed = msgspec.structs.replace(secured.config, nkey_seed="")
    with pytest.raises(LogError, match="Authorization Violation") as raised:
        [s async for batch in reader(no_seed).batches() for s in batch]
    assert "localhost" in str(raised.value)


async def test_a_missing_seed_file_is_named(secured: Secured, tmp_path: Path) -> None:
    config = msgspec.structs.replace(secured.config, nkey_seed=str(tmp_path / "absent.nk"))
    with pytest.raises(LogError, match=r"NKey seed file .*absent\.nk: No such file"):
        await EventLog.connect(config)
