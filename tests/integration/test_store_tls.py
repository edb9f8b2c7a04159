"""etcd over TLS (the test's own CA, client certificates required) with authentication
on: the store reaches it by name, IPv4 and IPv6 address with every setting, and fails
with a StoreError that says why without one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tls import Pki, SecureEtcd
from ucloud.config import EtcdConfig
from ucloud.errors import StoreError
from ucloud.ids import new_id
from ucloud.store import Access, Store

pytestmark = pytest.mark.servers

PASSWORD = "correct horse battery staple"


@dataclasses.dataclass(frozen=True)
class Secured:
    server: SecureEtcd
    access: Access  # every setting this server needs


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("secure-etcd")
    pki = Pki.create(directory / "pki")
    client = pki.issue("ucloud-client")  # a certificate name that is no etcd user
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    with SecureEtcd(directory / "server", pki) as server:
        server.enable_auth(pki, pki.issue("root"), PASSWORD)
        yield Secured(server, Access(
            ca_file=str(pki.ca), cert_file=str(client.cert), key_file=str(client.key),
            user="root", password_file=str(password_file),
        ))


async def round_trip(store: Store) -> None:
    key = f"/t/{new_id()}"
    await store.put(key, b"v")
    assert await store.get(key) == b"v"
    assert [k for k, _ in await store.get_prefix(key)] == [key]


@pytest.mark.parametrize("hosts", [["localhost"], ["127.0.0.1"], ["::1"], ["::1", "localhost"]])
async def test_every_kind_of_endpoint_with_every_setting(
    secured: Secured, hosts: list[str]
) -> None:
    store = await Store.connect([secured.server.endpoint(h) for h in hosts], secured.access)
    try:
        await round_trip(store)
    finally:
        await store.close()


async def test_the_config_section_carries_the_settings(secured: Secured) -> None:
    a = secured.access
    config = EtcdConfig(endpoints=[f"https://{secured.server.endpoint()}"], ca_file=a.ca_file,
                        cert_file=a.cert_file, key_file=a.key_file, user=a.user,
                        password_file=a.password_file)
    store = await Store.open(config)
    try:
        await round_trip(store)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ({"user": "", "password_file": ""}, "(?i)permission denied|user name"),
        ({"cert_file": "", "key_file": ""}, "(?i)handshake|certificate"),
        ({"ca_file": ""}, "(?i)certificate verify failed|handshake"),
        ({"server_name": "etcd.example.net"}, "(?i)hostname|verification"),
    ],
)
async def test_without_a_setting_a_request_is_a_clear_error(
    secured: Secured, missing: dict[str, str], reason: str
) -> None:
    access = dataclasses.replace(secured.access, **missing)
    try:
        store = await Store.connect([secured.server.endpoint()], access)
    except StoreError as exc:  # signing in is the first request when there is a user
        raised = exc
    else:
        try:
            with pytest.raises(StoreError) as caught:
                await store.get("/t/x")
            raised = caught.value
        finally:
            await store.close()
    assert __import__("re").search(reason, str(raised)), raised
    assert PASSWORD not in str(raised)


async def test_a_wrong_password_names_the_user_not_the_password(
    secured: Secured, tmp_path: Path
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not it\n")
    access = dataclasses.replace(secured.access, password_file=str(wrong))
    with pytest.raises(StoreError, match="user root cannot sign in") as raised:
        await Store.connect([secured.server.endpoint()], access)
    assert "not it" not in str(raised.value)


async def test_a_plain_client_of_a_tls_server_fails(secured: Secured) -> None:
    store = await Store.connect([secured.server.endpoint("127.0.0.1")])
    try:
        with pytest.raises(StoreError, match="UNAVAILABLE"):
            await store.get("/t/x")
    finally:
        await store.close()
