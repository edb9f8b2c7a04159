"""The dashboard's server side on a real gateway: the page and its assets with their
headers, the redirect, the VM stream (a snapshot, then a change without asking), its
tenancy and auth, the admin's log stream, and this month's invoice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_harness import Running, gateway_config, running_gateway
from ucloud.config import Config

pytestmark = pytest.mark.servers


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, line[6:]


async def test_the_page_and_its_assets(gw: Running) -> None:
    client = gw.client()
    root = await client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = page.text.split('src="')[1].split('"')[0]
    asset = await client.get(script)
    assert asset.status_code == 200
    assert asset.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "immutable" in asset.headers["cache-control"]
    outside = await client.get("/ui/assets/..%2Fbuild.json")  # the page, not the file
    assert "sources" not in outside.text


async def test_the_vm_stream_sends_a_snapshot_then_changes_of_her_vms_only(gw: Running) -> None:
    anne, bob = await gw.new_user(), await gw.new_user()
    image = await gw.image("admin", "img", public=True)
    assert (await gw.client().get("/v1/stream/vms")).status_code == 401
    async with gw.client(anne).stream("GET", "/v1/stream/vms") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = events(response)
        name, data = await anext(seen)
        assert (name, json.loads(data)) == ("snapshot", [])
        spec = {"image": image, "cpu": 1, "ram": "128M", "ssd": 1}
        theirs = await gw.client(bob).post("/v1/vms", json={"name": "b", **spec})
        mine = await gw.client(anne).post("/v1/vms", json={"name": "a", **spec})
        assert theirs.status_code == mine.status_code == 202
        async with asyncio.timeout(10):
            name, data = await anext(seen)
        assert name == "vm" and json.loads(data)["name"] == "a"


async def test_the_log_stream_is_the_admins(gw: Running) -> None:
    user = await gw.new_user()
    assert (await gw.client(user).get("/v1/stream/log")).status_code == 403
    await gw.login(gw.admin)
    async with gw.client(gw.admin).stream("GET", "/v1/stream/log?last=5") as response:
        async with asyncio.timeout(10):
            name, data = await anext(events(response))
        assert name == "event" and json.loads(data)["type"]
    bad = await gw.client(gw.admin).get("/v1/stream/log?last=x")
    assert bad.status_code == 400 and bad.json()["field"] == "last"


async def test_the_invoice_of_this_month(gw: Running) -> None:
    user = await gw.new_user()
    answer = await gw.client(user).get("/v1/invoice")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["vms"] == [] and body["totals"] == {}
    assert len(body["days"]) >= 1 and body["days"][0]["day"].endswith("-01")
