"""SSH keys and VMs over real HTTP: create, list, show, lifecycle, bad input, audit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway, system
from tests.unit.gateway.test_sshkeys import ED25519, P256
from ucloud import events as ev
from ucloud.config import Config

pytestmark = pytest.mark.servers

MAC = re.compile(r"^02(:[0-9a-f]{2}){5}$")


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


@pytest.fixture
async def alice(gw: Running) -> User:
    return await gw.new_user("alice")


def vm_body(**changes: Any) -> dict[str, Any]:
    return {"name": "web", "cpu": 2, "ram": "2G", "ssd": 10, "image": "debian", **changes}


async def test_keys_add_list_delete(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    answer = await client.post("/v1/keys", json={"name": "laptop", "public_key": ED25519 + "\n"})
    assert answer.status_code == 201, answer.text
    key = answer.json()
    assert key["name"] == "laptop" and key["public_key"] == ED25519 and key["id"]
    second = (await client.post("/v1/keys", json={"name": "desk", "public_key": P256})).json()
    listed = (await client.get("/v1/keys")).json()
    assert listed == [key, second]
    before = await gw.last_seq()
    for body, status, field in [
        ({"name": "laptop", "public_key": P256.replace("test", "x")}, 409, "name"),
        ({"name": "again", "public_key": ED25519.replace("alice@laptop", "")}, 409, "public_key"),
        ({"name": "bad", "public_key": "ssh-ed25519 AAAA"}, 400, "public_key"),
        ({"name": "bad", "public_key": "ssh-dss AAAAB3NzaC1kc3M="}, 400, "public_key"),
        ({"name": "no spaces", "public_key": P256}, 400, "name"),
        ({"name": "k", "public_key": P256, "type": "ed"}, 400, "type"),
        ({"public_key": P256}, 400, "name"),
    ]:
        answer = await client.post("/v1/keys", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["field"] == field
    assert await gw.last_seq() == before
    assert (await client.delete(f"/v1/keys/{key['id']}")).status_code == 204
    assert (await client.delete(f"/v1/keys/{key['id']}")).status_code == 404
    assert (await client.delete("/v1/keys/desk")).status_code == 204
    assert (await client.get("/v1/keys")).json() == []


async def test_vm_lifecycle(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    await gw.image("alice", "debian")
    answer = await client.post("/v1/vms", json=vm_body(hdd="512M", restart="never"))
    assert answer.status_code == 202, answer.text
    vm = answer.json()
    assert vm["status"] == "requested" and vm["owner"] == "alice" and vm["restart"] == "never"
    assert vm["spec"] == {"cpu": 2, "ram_mib": 2048, "ssd_mib": 10240, "hdd_mib": 512}
    assert (await client.get(f"/v1/vms/{vm['id']}")).json() == vm
    assert (await client.get("/v1/vms/web")).json() == vm
    assert (await client.get("/v1/vms")).json() == [vm]
    refused = await client.post("/v1/vms/web/start")
    assert refused.status_code == 409 and refused.json()["field"] == "status"
    # what the scheduler and hostd would append
    await gw.append(ev.VmScheduled(**system(), vm=vm["id"], host="h1"),
                    ev.VmStarted(**system(), vm=vm["id"], host="h1"))
    assert (await client.get("/v1/vms/web")).json()["status"] == "running"
    before = await gw.last_seq()
    assert (await client.post("/v1/vms/web/start")).status_code == 409
    assert await gw.last_seq() == before
    stopping = await client.post(f"/v1/vms/{vm['id']}/stop")
    assert stopping.status_code == 202 and stopping.json()["status"] == "stopping"
    assert (await client.post("/v1/vms/web/stop")).status_code == 409
    await gw.append(ev.VmStopped(**system(), vm=vm["id"], host="h1"))
    starting = await client.post("/v1/vms/web/start")
    assert starting.status_code == 202 and starting.json()["status"] == "starting"
    deleting = await client.delete("/v1/vms/web")
    assert deleting.status_code == 202 and deleting.json()["status"] == "deleting"
    assert (await client.delete("/v1/vms/web")).status_code == 409
    lines = (await client.get("/v1/vms/web/events")).json()
    assert [line["type"] for line in lines] == [
        "vm.requested", "vm.scheduled", "vm.started", "vm.stop_requested", "vm.stopped",
        "vm.start_requested", "vm.delete_requested",
    ]
    assert lines[0]["actor"] == "alice" and lines[0]["correlation"] == lines[0]["causation"]
    assert "name=web" in lines[0]["summary"]
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)
    await gw.append(ev.VmDeleted(**system(), vm=vm["id"], host="h1"))
    assert (await client.get(f"/v1/vms/{vm['id']}")).status_code == 404
    assert (await client.get("/v1/vms")).json() == []
    # the name is free again
    assert (await client.post("/v1/vms", json=vm_body())).status_code == 202


async def test_vm_with_networks_keys_and_a_public_image(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    await gw.image("root", "ubuntu", public=True)
    lan = await gw.network("alice", "lan")
    wan = await gw.network("alice", "wan")
    laptop = (await client.post("/v1/keys", json={"name": "laptop", "public_key": ED25519})).json()
    desk = (await client.post("/v1/keys", json={"name": "desk", "public_key": P256})).json()
    answer = await client.post("/v1/vms", json=vm_body(image="ubuntu", networks=[lan, "wan"]))
    assert answer.status_code == 202, answer.text
    vm = answer.json()
    assert [nic["network"] for nic in vm["nics"]] == [lan, wan]
    macs = [nic["mac"] for nic in vm["nics"]]
    assert all(MAC.match(mac) for mac in macs) and len(set(macs)) == 2
    assert vm["keys"] == [laptop["id"], desk["id"]]
    for mac in macs:
        assert await gw.store.get(f"{gw.config.etcd.prefix}idx/mac/{mac}") == vm["id"].encode()
    chosen = await client.post("/v1/vms", json=vm_body(name="db", image="ubuntu", keys=["desk"]))
    assert chosen.json()["keys"] == [desk["id"]] and chosen.json()["nics"] == []


async def test_bad_vm_input_names_the_field_and_appends_nothing(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    await gw.image("alice", "debian")
    await gw.image("alice", "pending", created=False)
    await gw.image("bob", "private")
    await gw.network("alice", "half", created=False)
    await gw.network("bob", "theirs")
    assert (await client.post("/v1/vms", json=vm_body(name="taken"))).status_code == 202
    cases: list[tuple[dict[str, Any], int, str]] = [
        (vm_body(name="has space"), 400, "name"),
        (vm_body(name="01a1fcc3-332a-7817-92ff-b6c26b86a603"), 400, "name"),
        (vm_body(name="taken"), 409, "name"),
        (vm_body(cpu=0), 400, "cpu"),
        (vm_body(cpu="2"), 400, "cpu"),
        (vm_body(ram="12K"), 400, "ram"),
        (vm_body(ram=0), 400, "ram"),
        (vm_body(ssd="1.00001G"), 400, "ssd"),
        (vm_body(hdd=-1), 400, "hdd"),
        (vm_body(image="nope"), 400, "image"),
        (vm_body(image="private"), 400, "image"),
        (vm_body(image="pending"), 409, "image"),
        (vm_body(networks=["nope"]), 400, "networks[0]"),
        (vm_body(networks=["theirs"]), 400, "networks[0]"),
        (vm_body(networks=["half"]), 409, "networks[0]"),
        (vm_body(networks=[1]), 400, "networks[0]"),
        (vm_body(keys=["ghost"]), 400, "keys[0]"),
        (vm_body(restart="sometimes"), 400, "restart"),
        (vm_body(colour="blue"), 400, "colour"),
        ({"cpu": 1, "ram": 1, "ssd": 1, "image": "debian"}, 400, "name"),
    ]
    before = await gw.last_seq()
    for body, status, field in cases:
        answer = await client.post("/v1/vms", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["field"] == field, (body, answer.text)
        assert answer.json()["error"]
    not_json = await client.post("/v1/vms", content=b"{not json")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    huge = await client.post("/v1/vms", content=b" " * (2 << 20))
    assert huge.status_code == 413
    assert await gw.last_seq() == before


async def test_migrate(gw: Running, alice: User) -> None:
    client = gw.client(alice)
    await gw.image("alice", "debian")
    vm = (await client.post("/v1/vms", json=vm_body())).json()
    assert (await client.post("/v1/vms/web/migrate")).status_code == 409
    await gw.append(ev.HostRegistered(**system(), host="h1", capacity=ev.Resources(
        cpu=8, ram_mib=8192, ssd_mib=100_000)))
    await gw.append(ev.VmScheduled(**system(), vm=vm["id"], host="h1"),
                    ev.VmStarted(**system(), vm=vm["id"], host="h1"))
    named = await client.post("/v1/vms/web/migrate", json={"host": "h1"})
    assert named.status_code == 403 and named.json()["field"] == "host"
    admin = gw.client(gw.admin)
    unknown = await admin.post(f"/v1/vms/{vm['id']}/migrate", json={"host": "h9"})
    assert unknown.status_code == 400 and unknown.json()["field"] == "host"
    same = await admin.post(f"/v1/vms/{vm['id']}/migrate", json={"host": "h1"})
    assert same.status_code == 409 and same.json()["field"] == "host"
    before = await gw.last_seq()
    local = await client.post("/v1/vms/web/migrate")  # its disk is one host's local storage
    assert local.status_code == 409 and local.json()["field"] == "disk", local.text
    assert await gw.last_seq() == before


async def test_an_answer_the_projection_does_not_reach_in_time_is_504(
    config: Config, tmp_path: Path
) -> None:
    async with running_gateway(gateway_config(config, tmp_path, read_your_writes_s=0.5)) as gw:
        alice = await gw.new_user("alice")
        await gw.image("alice", "debian")
        await gw.stop_projector()
        before = await gw.last_seq()
        answer = await gw.client(alice).post("/v1/vms", json=vm_body())
        assert answer.status_code == 504
        assert "accepted" in answer.json()["error"]
        assert await gw.last_seq() == before + 1  # the request was taken: it is in the log
