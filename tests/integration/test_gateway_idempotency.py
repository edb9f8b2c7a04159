"""Retries with an Idempotency-Key against the real gateway: one VM, however often asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway
from ucloud import events as ev
from ucloud.config import Config
from ucloud.gateway.idempotency import Record, record_key
from ucloud.ids import new_id

pytestmark = pytest.mark.servers


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


@pytest.fixture
async def alice(gw: Running) -> User:
    user = await gw.new_user("alice")
    await gw.image("alice", "debian")
    return user


def vm_body(**changes: Any) -> dict[str, Any]:
    return {"name": "web", "cpu": 1, "ram": "1G", "ssd": 10, "image": "debian", **changes}


async def vm_requests(gw: Running, owner: str) -> list[dict[str, Any]]:
    records = await gw.log.records("ucloud.evt.vm.*.requested")
    found = [json.loads(r.data) for r in records]
    return [e for e in found if e["owner"] == owner]


async def send_and_hang_up(gw: Running, user: User, body: dict[str, Any], key: str) -> None:
    """POST a create over a raw socket and close it before reading a byte of the answer."""
    where = urlsplit(gw.url)
    assert where.hostname is not None and where.port is not None
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/vms HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {user.token}\r\nIdempotency-Key: {key}\r\n".encode()
        + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.timeout(60)
async def test_a_retry_after_a_cut_connection_finds_one_vm(gw: Running, alice: User) -> None:
    key = new_id()
    await send_and_hang_up(gw, alice, vm_body(), key)
    while not await vm_requests(gw, "alice"):  # the gateway went on without its client
        await asyncio.sleep(0.05)
    first = (await vm_requests(gw, "alice"))[0]["vm"]
    client = gw.client(alice)
    retry = await client.post("/v1/vms", json=vm_body(), headers={"Idempotency-Key": key})
    assert retry.status_code == 202, retry.text
    vm = retry.json()
    assert vm["id"] == first
    again = await client.post("/v1/vms", json=vm_body(), headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json() == vm
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [v["id"] for v in (await client.get("/v1/vms")).json()] == [vm["id"]]
    assert [e["vm"] for e in await vm_requests(gw, "alice")] == [vm["id"]]


@pytest.mark.timeout(60)
async def test_the_key_is_the_users_own(gw: Running, alice: User) -> None:
    bob = await gw.new_user("bob")
    await gw.image("bob", "debian")
    key = new_id()
    mine = await gw.client(alice).post("/v1/vms", json=vm_body(), headers={"Idempotency-Key": key})
    theirs = await gw.client(bob).post("/v1/vms", json=vm_body(), headers={"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 202, (mine.text, theirs.text)
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["owner"] == "bob" and "Idempotent-Replayed" not in theirs.headers


@pytest.mark.timeout(60)
async def test_the_same_key_with_another_body_is_refused(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    key = {"Idempotency-Key": new_id()}
    assert (await client.post("/v1/vms", json=vm_body(), headers=key)).status_code == 202
    before = await gw.last_seq()
    other = await client.post("/v1/vms", json=vm_body(name="db"), headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["field"] == "Idempotency-Key"
    # the same key on another path is another request
    net = await client.post("/v1/networks", json={"name": "lan"}, headers=key)
    assert net.status_code == 202, net.text
    assert await gw.last_seq() == before + 1
    bad = await client.post("/v1/vms", json=vm_body(name="x"), headers={"Idempotency-Key": ""})
    assert bad.status_code == 400 and bad.json()["field"] == "Idempotency-Key"


@pytest.mark.timeout(60)
async def test_concurrent_requests_with_one_key_make_one_vm(gw: Running, alice: User) -> None:
    key = {"Idempotency-Key": new_id()}
    clients = [gw.client(alice) for _ in range(4)]
    answers = await asyncio.gather(
        *(c.post("/v1/vms", json=vm_body(), headers=key) for c in clients)
    )
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await vm_requests(gw, "alice")) == 1
    assert len((await clients[0].get("/v1/vms")).json()) == 1


@pytest.mark.timeout(60)
async def test_a_refusal_is_not_kept(gw: Running, alice: User) -> None:
    """A refused request appended nothing: its retry runs again (with the same ids)."""
    client = gw.client(alice)
    key = {"Idempotency-Key": new_id()}
    refused = await client.post("/v1/vms", json=vm_body(image="ubuntu"), headers=key)
    assert refused.status_code == 400 and refused.json()["field"] == "image"
    await gw.image("alice", "ubuntu")
    made = await client.post("/v1/vms", json=vm_body(image="ubuntu"), headers=key)
    assert made.status_code == 202, made.text
    assert "Idempotent-Replayed" not in made.headers


@pytest.mark.timeout(60)
async def test_the_document_names_the_header(gw: Running) -> None:
    document = (await gw.client().get("/openapi.json")).json()
    create = document["paths"]["/v1/vms"]["post"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= create["parameters"][0].items()
    assert "422" in create["responses"]
    assert "parameters" not in document["paths"]["/v1/vms"]["get"]


@pytest.mark.timeout(60)
async def test_a_request_run_again_appends_nothing_new(gw: Running, alice: User) -> None:
    """A gateway that appended and died before keeping the answer leaves its claim open:
    the retry runs the request again with the same seed, so with the same ids."""
    client = gw.client(alice)
    key = new_id()
    body = vm_body()
    first = await client.post("/v1/vms", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    where = record_key(gw.config.etcd.secrets_prefix, "alice", "POST", "/v1/vms", key)
    raw = await gw.store.get(where)
    assert raw is not None
    stored = msgspec.json.decode(raw, type=Record)
    await gw.store.put(where, msgspec.json.encode(
        msgspec.structs.replace(stored, started_ms=0, status=0, body=b"")
    ))
    before = await gw.last_seq()
    again = await client.post("/v1/vms", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and "Idempotent-Replayed" not in again.headers
    assert await gw.last_seq() == before
    # what a run again appends has the first run's ids, and the log keeps one copy
    events, last = await gw.log.load("vm", first.json()["id"])
    requested = events[0].event
    assert isinstance(requested, ev.VmRequested)
    assert await gw.log.append(requested, expected=0) == events[0].seq
    assert (await gw.log.load("vm", first.json()["id"]))[1] == last
