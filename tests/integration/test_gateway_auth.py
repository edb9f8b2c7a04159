"""Logins, tokens, users and the unauthenticated pages, over real HTTP with the projector."""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway
from ucloud.config import Config
from ucloud.gateway import login, tokens
from ucloud.gateway.service import bootstrap_admin

pytestmark = pytest.mark.servers


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


async def test_bootstrap_admin_and_secrets_stay_out_of_log_and_projection(
    gw: Running, tmp_path: Path
) -> None:
    path = tmp_path / "admin.otp"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    me = await gw.client(gw.admin).get("/v1/me")
    assert me.json() == {"name": "admin", "realm": "admin"}
    alice = await gw.new_user("alice")
    secrets = [gw.admin.secret, alice.secret]
    records = await gw.log.records("ucloud.evt.>")
    assert [r.subject for r in records] == [
        "ucloud.evt.user.admin.created", "ucloud.evt.user.alice.created"
    ]
    for record in records:
        assert not any(s.encode() in record.data for s in secrets)
    for _, value in await gw.store.get_prefix(gw.config.etcd.prefix):
        assert not any(s.encode() in value for s in secrets)
    assert gw.admin.token not in (await gw.client(gw.admin).get("/metrics")).text
    # a second start finds the admin and writes nothing
    again = tmp_path / "again.otp"
    assert not await bootstrap_admin(gw.gateway, str(again))
    assert not again.exists()


async def test_wrong_otp_realm_or_user_is_401(gw: Running) -> None:
    alice = await gw.new_user("alice")
    client = gw.client()
    good = login.otp_at(alice.secret, time.time())
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for body in (
        {"name": "alice", "realm": "users", "otp": wrong},
        {"name": "alice", "realm": "admin", "otp": good},
        {"name": "nobody", "realm": "users", "otp": good},
        {"name": "alice", "realm": "users", "otp": "abc"},
    ):
        answer = await client.post("/v1/auth/token", json=body)
        assert answer.status_code == 401, body
        assert answer.json()["field"] == "otp"
    answer = await client.post("/v1/auth/token", json={"name": "alice", "realm": "users"})
    assert answer.status_code == 400 and answer.json()["field"] == "otp"
    answer = await client.post(
        "/v1/auth/token", json={"name": "alice", "realm": "users", "otp": good, "x": 1}
    )
    assert answer.status_code == 400 and answer.json()["field"] == "x"


async def test_an_otp_is_accepted_once(gw: Running) -> None:
    alice = await gw.new_user("alice")  # used this step's OTP
    client = gw.client()
    now = time.time()
    replay = {"name": "alice", "realm": "users", "otp": login.otp_at(alice.secret, now)}
    answer = await client.post("/v1/auth/token", json=replay)
    assert answer.status_code == 401 and "already used" in answer.json()["error"]
    later = {"name": "alice", "realm": "users", "otp": login.otp_at(alice.secret, now + 30)}
    answer = await client.post("/v1/auth/token", json=later)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"].startswith("v1.") and body["expires_at"].endswith("Z")
    earlier = {"name": "alice", "realm": "users", "otp": login.otp_at(alice.secret, now - 30)}
    assert (await client.post("/v1/auth/token", json=earlier)).status_code == 401


async def test_expired_forged_and_unknown_tokens_are_401(gw: Running) -> None:
    key = await gw.store.get(gw.config.etcd.secrets_prefix + "token_key")
    assert key is not None
    now = int(time.time())
    cases = {
        "token expired": tokens.sign(key, tokens.Claims(sub="admin", realm="admin", iat=now - 7200,
                                                        exp=now - 3600)),
        "bad token signature": tokens.sign(b"f" * 32, tokens.Claims(sub="admin", realm="admin",
                                                                    iat=now, exp=now + 3600)),
        "unknown user": tokens.sign(key, tokens.Claims(sub="ghost", realm="admin", iat=now,
                                                       exp=now + 3600)),
        "malformed token": "v1.garbage",
    }
    for reason, token in cases.items():
        answer = await gw.client().get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.json()["error"] == reason
        assert answer.headers["www-authenticate"] == "Bearer"
    assert (await gw.client().get("/v1/me")).status_code == 401
    answer = await gw.client().get("/v1/me", headers={"Authorization": "Basic YWRtaW4="})
    assert answer.status_code == 401 and answer.json()["field"] == "authorization"
    valid = tokens.sign(key, tokens.Claims(sub="admin", realm="admin", iat=now, exp=now + 60))
    answer = await gw.client().get("/v1/me", headers={"Authorization": f"Bearer {valid}"})
    assert answer.status_code == 200


async def test_failed_logins_are_rate_limited_per_user_and_per_address(gw: Running) -> None:
    alice = await gw.new_user("alice")
    bob = User(name="bob", realm="users", secret="")
    local = gw.client()
    other = gw.client(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
    wrong = {"name": "alice", "realm": "users", "otp": "000000"}
    if login.matching_step(alice.secret, "000000", time.time()) is not None:
        wrong["otp"] = "999999"
    for _ in range(5):
        assert (await local.post("/v1/auth/token", json=wrong)).status_code == 401
    right = {"name": "alice", "realm": "users", "otp": alice.next_otp()}
    answer = await local.post("/v1/auth/token", json=right)
    assert answer.status_code == 429
    assert 0 < int(answer.headers["retry-after"]) <= 60
    # the user is limited from any address; the address for any user
    assert (await other.post("/v1/auth/token", json=right)).status_code == 429
    for_bob = {"name": bob.name, "realm": bob.realm, "otp": "123456"}
    assert (await local.post("/v1/auth/token", json=for_bob)).status_code == 429
    assert (await other.post("/v1/auth/token", json=for_bob)).status_code == 401
    # tokens already issued keep working
    assert (await gw.client(alice).get("/v1/me")).status_code == 200


async def test_users_are_made_by_admins_once(gw: Running) -> None:
    alice = await gw.new_user("alice")
    admin = gw.client(gw.admin)
    before = await gw.last_seq()
    answer = await admin.post("/v1/users", json={"name": "alice", "realm": "users"})
    assert answer.status_code == 409 and answer.json()["field"] == "name"
    answer = await admin.post("/v1/users", json={"name": "no spaces", "realm": "users"})
    assert answer.status_code == 400 and answer.json()["field"] == "name"
    answer = await admin.post("/v1/users", json={"name": "carol", "realm": "a.b"})
    assert answer.status_code == 400 and answer.json()["field"] == "realm"
    assert await gw.last_seq() == before
    as_alice = gw.client(alice)
    answer = await as_alice.post("/v1/users", json={"name": "dave", "realm": "users"})
    assert answer.status_code == 403 and answer.json()["field"] == "realm"
    assert (await as_alice.get("/v1/users")).status_code == 403
    users = (await admin.get("/v1/users")).json()
    assert [(u["name"], u["realm"]) for u in users] == [("admin", "admin"), ("alice", "users")]
    assert all("secret" not in str(u) for u in users)
    # the secret is shown once: a fresh user logs in with it
    made = await admin.post("/v1/users", json={"name": "erin", "realm": "admin"})
    uri = made.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/") and "issuer=ucloud" in uri
    erin = await gw.login(User("erin", "admin", uri.split("secret=")[1].split("&")[0]))
    assert (await gw.client(erin).get("/v1/users")).status_code == 200


async def test_health_metrics_and_openapi_need_no_token(gw: Running) -> None:
    client = gw.client()
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    await client.get("/v1/me")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'ucloud_http_requests_total{method="GET",route="/v1/me",status="401"} 1' in text
    assert "ucloud_gateway_lag_events " in text
    lag = next(line for line in text.splitlines() if line.startswith("ucloud_gateway_lag"))
    assert int(lag.split()[1]) >= 0
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, method in [
        ("/v1/auth/token", "post"), ("/v1/me", "get"), ("/v1/users", "post"),
        ("/v1/keys", "post"), ("/v1/keys/{id}", "delete"), ("/v1/vms", "post"),
        ("/v1/vms/{id}", "get"), ("/v1/vms/{id}/start", "post"), ("/v1/vms/{id}/events", "get"),
        ("/v1/hosts", "post"), ("/v1/hosts/{id}/drain", "post"), ("/healthz", "get"),
    ]:
        assert method in paths[path], (path, method)
    schemas = document["components"]["schemas"]
    assert {"VmCreate", "VmView", "HostView", "KeyView", "UserView", "ErrorBody"} <= set(schemas)
    assert schemas["VmCreate"]["additionalProperties"] is False
    post_vm = paths["/v1/vms"]["post"]
    assert post_vm["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VmCreate"
    }
    assert "202" in post_vm["responses"] and "400" in post_vm["responses"]
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["field"] == ""


async def test_docs_page_and_its_assets_are_served_from_the_package(gw: Running) -> None:
    client = gw.client()
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/openapi.json" in html
    assert not re.search(r"(?i)\b(https?:)?//[a-z0-9]", html), "the page names another site"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3, assets
    kinds = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
    for asset in assets:
        answer = await client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.headers["content-type"].startswith(kinds[Path(asset).suffix]), asset
        assert len(answer.content) > 500, asset
    assert (await client.get("/docs/index.html")).status_code == 404  # only what the page loads
    options = await client.options("/v1/vms/{id}".replace("{id}", "x"))
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, DELETE, HEAD, OPTIONS"
    patch = await client.patch("/v1/vms/x")
    assert patch.status_code == 405
    assert set(patch.headers["allow"].split(", ")) == {"GET", "DELETE", "HEAD", "OPTIONS"}
    head = await client.head("/docs")
    assert head.status_code == 200 and not head.content
