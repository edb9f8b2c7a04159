"""Tenancy over every endpoint: another user's things do not exist for you; hosts are admin's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.gateway_harness import Running, gateway_config, running_gateway, system
from tests.unit.gateway.test_sshkeys import ED25519
from ucloud import events as ev
from ucloud.config import Config

pytestmark = pytest.mark.servers


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


async def test_cross_tenant_matrix(gw: Running) -> None:
    alice, bob = await gw.new_user("alice"), await gw.new_user("bob")
    as_alice, as_bob, as_admin = gw.client(alice), gw.client(bob), gw.client(gw.admin)
    await gw.image("alice", "debian")
    key = (await as_alice.post("/v1/keys", json={"name": "k", "public_key": ED25519})).json()
    vm = (await as_alice.post("/v1/vms", json={
        "name": "web", "cpu": 1, "ram": 1, "ssd": 1, "image": "debian"})).json()
    await gw.append(ev.VmScheduled(**system(), vm=vm["id"], host="h1"),
                    ev.VmStarted(**system(), vm=vm["id"], host="h1"))
    before = await gw.last_seq()
    for ident in (vm["id"], "web"):
        for method, path in [
            ("GET", f"/v1/vms/{ident}"),
            ("GET", f"/v1/vms/{ident}/events"),
            ("POST", f"/v1/vms/{ident}/start"),
            ("POST", f"/v1/vms/{ident}/stop"),
            ("POST", f"/v1/vms/{ident}/migrate"),
            ("DELETE", f"/v1/vms/{ident}"),
        ]:
            answer = await as_bob.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
            # exactly what a VM that never existed answers
            assert answer.json() == {"error": f"no VM {ident}", "field": "id"}
    for ident in (key["id"], "k"):
        assert (await as_bob.delete(f"/v1/keys/{ident}")).status_code == 404
    assert (await as_bob.get("/v1/vms")).json() == []
    assert (await as_bob.get("/v1/keys")).json() == []
    # bob cannot use alice's key or private image either
    bobs = await as_bob.post("/v1/vms", json={
        "name": "x", "cpu": 1, "ram": 1, "ssd": 1, "image": "debian", "keys": [key["id"]]})
    assert bobs.status_code == 400 and bobs.json()["field"] == "image"
    assert await gw.last_seq() == before
    # alice still has it all; the admin sees it too
    assert (await as_alice.get("/v1/vms/web")).status_code == 200
    assert [v["id"] for v in (await as_admin.get("/v1/vms")).json()] == [vm["id"]]
    assert (await as_admin.get(f"/v1/vms/{vm['id']}")).json()["owner"] == "alice"
    assert (await as_admin.get("/v1/vms/web")).status_code == 404  # names are per owner
    assert (await as_admin.get(f"/v1/vms/{vm['id']}/events")).status_code == 200
    # the same name is free for bob
    await gw.image("bob", "debian")
    mine = await as_bob.post("/v1/vms", json={
        "name": "web", "cpu": 1, "ram": 1, "ssd": 1, "image": "debian"})
    assert mine.status_code == 202 and mine.json()["id"] != vm["id"]
    assert [v["name"] for v in (await as_bob.get("/v1/vms")).json()] == ["web"]
    assert (await as_alice.get("/v1/vms/web")).json()["id"] == vm["id"]


async def test_hosts_are_for_the_admin_realm(gw: Running) -> None:
    alice = await gw.new_user("alice")
    as_alice, as_admin = gw.client(alice), gw.client(gw.admin)
    host = {"id": "h1", "cpu": 16, "ram": "64G", "ssd": "2T", "address": "2001:db8::1"}
    for method, path, body in [
        ("GET", "/v1/hosts", None),
        ("POST", "/v1/hosts", host),
        ("POST", "/v1/hosts/h1/drain", None),
        ("POST", "/v1/hosts/h1/undrain", None),
        ("GET", "/v1/users", None),
        ("POST", "/v1/users", {"name": "z", "realm": "users"}),
    ]:
        answer = await as_alice.request(method, path, json=body)
        assert answer.status_code == 403, (method, path)
        assert answer.json() == {"error": "only the admin realm may do this", "field": "realm"}
    made = await as_admin.post("/v1/hosts", json=host)
    assert made.status_code == 201, made.text
    view = made.json()
    assert view["id"] == "h1" and view["address"] == "2001:db8::1"
    assert view["capacity"] == {"cpu": 16, "ram_mib": 65536, "ssd_mib": 2 << 20, "hdd_mib": 0}
    assert view["used"]["cpu"] == 0 and view["drained"] is False
    before = await gw.last_seq()
    for body, status, field in [
        (host, 409, "id"),
        ({**host, "id": "h 2"}, 400, "id"),
        ({**host, "id": "h2", "cpu": 0}, 400, "cpu"),
        ({**host, "id": "h2", "ram": "1X"}, 400, "ram"),
        ({**host, "id": "h2", "address": "not-an-ip"}, 400, "address"),
        ({**host, "id": "h2", "rack": 4}, 400, "rack"),
    ]:
        answer = await as_admin.post("/v1/hosts", json=body)
        assert answer.status_code == status and answer.json()["field"] == field, body
    assert (await as_admin.post("/v1/hosts/h9/drain")).status_code == 404
    assert await gw.last_seq() == before
    drained = await as_admin.post("/v1/hosts/h1/drain")
    assert drained.status_code == 202 and drained.json()["drained"] is True
    assert (await as_admin.post("/v1/hosts/h1/drain")).status_code == 409
    undrained = await as_admin.post("/v1/hosts/h1/undrain")
    assert undrained.status_code == 202 and undrained.json()["drained"] is False
    assert [h["id"] for h in (await as_admin.get("/v1/hosts")).json()] == ["h1"]
