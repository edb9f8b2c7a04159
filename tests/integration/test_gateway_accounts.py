"""Accounts' lifecycle and quotas over real HTTP: disable on two gateways, delete with and
without cascade, TOTP rotation, and concurrent creates against a quota."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.integration.gateway_harness import (
    Running,
    User,
    gateway_config,
    running_gateway,
    system,
)
from tests.unit.gateway.test_sshkeys import ED25519
from ucloud import events as ev
from ucloud.config import Config, QuotasConfig
from ucloud.gateway import login
from ucloud.gateway.service import run as run_gateway
from ucloud.services import ServiceContext

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

VM = {"cpu": 1, "ram": 1, "ssd": 1, "image": "debian"}


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


@contextlib.asynccontextmanager
async def another_gateway(gw: Running) -> AsyncIterator[str]:
    """A second gateway on the same log and store (its own mirror of the projection)."""
    context = ServiceContext(config=gw.config, log=gw.log, store=gw.store, name="gateway")
    task = asyncio.create_task(run_gateway(context))
    try:
        deadline = time.monotonic() + 20
        while not context.shared.gateway_url:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "the second gateway did not start"
            await asyncio.sleep(0.02)
        yield str(context.shared.gateway_url)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def refused_within(client: httpx.AsyncClient, seconds: float) -> float:
    """How long until ``GET /v1/me`` is a 401 (fails past ``seconds``)."""
    start = time.monotonic()
    while (await client.get("/v1/me")).status_code != 401:
        assert time.monotonic() - start < seconds, "the token is still accepted"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_disabled_users_token_is_refused_on_every_gateway(gw: Running) -> None:
    alice = await gw.new_user("alice")
    await gw.image("alice", "debian")
    as_alice = gw.client(alice)
    vm = (await as_alice.post("/v1/vms", json={"name": "web", **VM})).json()
    async with another_gateway(gw) as url:
        other = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {alice.token}"}, timeout=20
        )
        try:
            assert (await other.get("/v1/me")).status_code == 200
            assert (await as_alice.get("/v1/me")).status_code == 200
            admin = gw.client(gw.admin)
            answer = await admin.post("/v1/users/alice/disable")
            assert answer.status_code == 200 and answer.json()["disabled"] is True
            assert await refused_within(other, 1.0) < 1.0
            assert await refused_within(as_alice, 1.0) < 1.0
            refused = await other.get("/v1/vms")
            assert refused.json() == {"error": "user alice is disabled", "field": "token"}
            # no new token either, and the VM is still there
            otp = login.otp_at(alice.secret, time.time() + 30)
            again = await gw.client().post(
                "/v1/auth/token", json={"name": "alice", "realm": "users", "otp": otp}
            )
            assert again.status_code == 401
            assert (await admin.get(f"/v1/vms/{vm['id']}")).json()["status"] == "requested"
            shown = (await admin.get("/v1/users/alice")).json()
            assert shown["user"]["disabled"] and shown["owns"]["vms"] == ["web"]
            # enabled again: the same token works on both gateways
            assert (await admin.post("/v1/users/alice/enable")).status_code == 200
            deadline = time.monotonic() + 1
            while (await other.get("/v1/me")).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert (await as_alice.get("/v1/me")).status_code == 200
            assert (await admin.post("/v1/users/admin/disable")).status_code == 409
        finally:
            await other.aclose()


async def play_the_services(gw: Running) -> None:
    """What hostd, netalloc and imagescan do once a deletion is asked: append it done."""
    done: set[str] = set()
    mirror = gw.gateway.mirror
    while True:
        for entry in list(mirror.vms.all()):
            if entry.view.status == "deleting" and entry.view.id not in done:
                done.add(entry.view.id)
                await gw.log.append(ev.VmDeleted(**system(), vm=entry.view.id))
        for net in list(mirror.nets.all()):
            if net.view.status == "deleting" and net.view.id not in done:
                done.add(net.view.id)
                await gw.log.append(ev.NetDeleted(**system(), net=net.view.id))
        for image in list(mirror.images.all()):
            if image.view.status == "deleting" and image.view.id not in done:
                done.add(image.view.id)
                await gw.log.append(ev.ImageDeleted(**system(), image=image.view.id))
        await asyncio.wait_for(mirror.changed(), 1.0)


async def test_delete_is_refused_while_owning_and_cascade_deletes_it_all(gw: Running) -> None:
    bob = await gw.new_user("bob")
    await gw.image("bob", "debian")
    net = await gw.network("bob", "lan")
    as_bob, admin = gw.client(bob), gw.client(gw.admin)
    await as_bob.post("/v1/keys", json={"name": "k", "public_key": ED25519})
    vms = []
    for name in ("a", "b"):
        made = await as_bob.post("/v1/vms", json={"name": name, **VM, "networks": [net]})
        assert made.status_code == 202, made.text
        vms.append(made.json()["id"])
    before = await gw.last_seq()
    refused = await admin.delete("/v1/users/bob")
    assert refused.status_code == 409 and refused.json()["field"] == "name"
    assert "2 VM(s): a, b" in refused.json()["error"]
    assert "1 network(s): lan" in refused.json()["error"] and "image" in refused.json()["error"]
    assert await gw.last_seq() == before
    services = asyncio.create_task(play_the_services(gw))
    try:
        gone = await admin.delete("/v1/users/bob", params={"cascade": "true"})
        assert gone.status_code == 204, gone.text
    finally:
        services.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await services
    mirror = gw.gateway.mirror
    assert not list(mirror.vms.of_owner("bob")) and not list(mirror.nets.of_owner("bob"))
    assert not list(mirror.images.of_owner("bob")) and mirror.users.get("bob") is None
    assert await gw.gateway.credentials.get("bob") is None
    assert (await as_bob.get("/v1/me")).status_code == 401
    # in order: VMs, then the network, then the image, then the key, then the user
    records = await gw.log.records("ucloud.evt.>")
    kinds = [r.subject.split(".")[2] + "." + r.subject.split(".")[4] for r in records
             if r.seq > before]
    order = [k for k in kinds if k.endswith("delete_requested") or k.startswith("user.")]
    assert order == ["vm.delete_requested"] * 2 + [
        "net.delete_requested", "image.delete_requested", "user.key_removed", "user.deleted"
    ]
    # the name taken again: a new user that sees nothing of the old one
    new_bob = await gw.new_user("bob")
    as_new = gw.client(new_bob)
    assert (await as_new.get("/v1/vms")).json() == []
    assert (await as_new.get("/v1/keys")).json() == []
    assert (await as_new.get("/v1/networks")).json() == []
    assert (await as_new.get("/v1/orders")).json() == []
    assert (await as_new.get(f"/v1/vms/{vms[0]}/events")).status_code == 404  # old audit
    assert (await admin.get(f"/v1/vms/{vms[0]}/events")).status_code == 200
    assert (await as_bob.get("/v1/me")).status_code == 401  # the old token stays refused
    # a user owning nothing is deleted without cascade
    assert (await admin.delete("/v1/users/bob")).status_code == 204
    assert (await admin.get("/v1/users/bob")).status_code == 404


async def test_a_user_rotates_her_totp_secret(gw: Running) -> None:
    made = await gw.client(gw.admin).post("/v1/users", json={"name": "carol", "realm": "users"})
    carol = User(name="carol", realm="users",
                 secret=made.json()["otpauth_uri"].split("secret=")[1].split("&")[0])
    anonymous = gw.client()
    body = {"name": "carol", "realm": "users"}
    # three logins' worth of steps: the one before now (drift), now, and the next one
    first = await anonymous.post(
        "/v1/auth/token", json={**body, "otp": login.otp_at(carol.secret, time.time() - 30)}
    )
    carol.token = first.json()["token"]
    client = gw.client(carol)
    wrong = await client.post("/v1/me/totp", json={"otp": "000000"})
    assert wrong.status_code == 401
    current = login.otp_at(carol.secret, time.time())
    rotated = await client.post("/v1/me/totp", json={"otp": current})
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["otpauth_uri"].split("secret=")[1].split("&")[0]
    assert secret != carol.secret
    # the old secret no longer logs in, the new one does
    old = login.otp_at(carol.secret, time.time() + 30)
    assert (await anonymous.post("/v1/auth/token", json={**body, "otp": old})).status_code == 401
    fresh = User(name="carol", realm="users", secret=secret, steps_used=1)
    assert (await gw.login(fresh)).token
    assert "user.carol.totp_rotated" in [r.subject[len("ucloud.evt."):] for r in
                                         await gw.log.records("ucloud.evt.>")]
    for record in await gw.log.records("ucloud.evt.>"):
        assert secret.encode() not in record.data


async def test_concurrent_creates_leave_exactly_the_quota_in_use(
    config: Config, tmp_path: Path
) -> None:
    quotas = QuotasConfig(vms=0, cores=7)
    settings = msgspec.structs.replace(gateway_config(config, tmp_path), quotas=quotas)
    async with running_gateway(settings) as gw:
        dave = await gw.new_user("dave")
        await gw.image("dave", "debian")
        admin = gw.client(gw.admin)
        limits = await admin.put("/v1/quotas/dave", json={"vms": 5})
        assert limits.status_code == 200, limits.text
        assert limits.json()["limits"]["vms"] == 5 and limits.json()["limits"]["cores"] == 7
        client = gw.client(dave)
        answers = await asyncio.gather(*(
            client.post("/v1/vms", json={"name": f"vm{n}", **VM}) for n in range(20)
        ))
        made = [a for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code != 202]
        assert len(made) == 5, [a.text for a in refused]
        for answer in refused:
            assert answer.status_code == 409, answer.text
            assert answer.json()["field"] == "vms"
            assert answer.json()["error"].startswith("quota vms exceeded: limit 5, in use 5")
        assert len(list(gw.gateway.mirror.vms.of_owner("dave"))) == 5
        shown = (await client.get("/v1/quotas/dave")).json()
        assert shown["used"]["vms"] == 5 and shown["used"]["cores"] == 5
        # cores: 5 used of 7, a 3-core VM does not fit, and the answer names the limit
        await admin.put("/v1/quotas/dave", json={"vms": -1})
        big = await client.post("/v1/vms", json={"name": "big", **VM, "cpu": 3})
        assert big.status_code == 409 and big.json()["field"] == "cores"
        assert (await client.get("/v1/quotas/dave")).json()["limits"]["vms"] == 0
        assert (await client.get("/v1/quotas/admin")).status_code == 404
        assert (await client.put("/v1/quotas/dave", json={"vms": 9})).status_code == 403
