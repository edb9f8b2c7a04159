"""A real gateway for tests: uvicorn on a free loopback port, with the projector running.

Both services run as tasks in the test's event loop against the session's nats-server and
etcd, on the test's own stream, subject root, projection prefix and secrets prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.gateway import login
from ucloud.gateway.service import run as run_gateway
from ucloud.gateway.state import Gateway
from ucloud.ids import new_id
from ucloud.projections.projector import run as run_projector
from ucloud.services import ServiceContext
from ucloud.store import Store


def gateway_config(config: Config, tmp_path: Path, **gateway: Any) -> Config:
    """The test's config with its own secrets prefix, a free port and an admin file."""
    etcd = msgspec.structs.replace(
        config.etcd, secrets_prefix=config.etcd.prefix.replace("/v1/", "/secret/")
    )
    settings = {
        "listen": "127.0.0.1:0",
        "bootstrap_admin_file": str(tmp_path / "admin.otp"),
        "read_your_writes_s": 10.0,
        **gateway,
    }
    return msgspec.structs.replace(
        config, etcd=etcd, gateway=msgspec.structs.replace(config.gateway, **settings)
    )


@dataclass
class User:
    name: str
    realm: str
    secret: str
    token: str = ""
    steps_used: int = 0

    def next_otp(self) -> str:
        """An OTP not used yet: this step's, then the next one's (the drift window)."""
        if self.steps_used > 1:
            raise AssertionError("only two logins per 30 s step window in a test")
        value = login.otp_at(self.secret, time.time() + 30 * self.steps_used)
        self.steps_used += 1
        return value


@dataclass
class Running:
    url: str
    config: Config
    log: EventLog
    store: Store
    admin: User
    gateway: Gateway
    projector: asyncio.Task[None]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def stop_projector(self) -> None:
        self.projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.projector

    def client(self, user: User | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {user.token}"} if user and user.token else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20, **kwargs)
        self.clients.append(client)
        return client

    async def login(self, user: User) -> User:
        answer = await self.client().post(
            "/v1/auth/token", json={"name": user.name, "realm": user.realm, "otp": user.next_otp()}
        )
        assert answer.status_code == 200, answer.text
        user.token = answer.json()["token"]
        return user

    async def new_user(self, name: str | None = None, realm: str = "users") -> User:
        name = name or "u" + new_id()[-12:]
        answer = await self.client(self.admin).post(
            "/v1/users", json={"name": name, "realm": realm}
        )
        assert answer.status_code == 201, answer.text
        secret = answer.json()["otpauth_uri"].split("secret=")[1].split("&")[0]
        return await self.login(User(name=name, realm=realm, secret=secret))

    async def last_seq(self) -> int:
        return await self.log.last_sequence()

    async def settle(self, seq: int) -> None:
        """Wait until the gateway's mirror of the projection has applied ``seq``."""
        assert await self.gateway.mirror.caught_up(seq, 10)

    async def append(self, *events: ev.Event) -> int:
        seq = 0
        for event in events:
            seq = await self.log.append(event)
        await self.settle(seq)
        return seq

    async def image(self, owner: str, name: str, public: bool = False, created: bool = True) -> str:
        """An image view, made the way the image service will: requested, then created."""
        image = new_id()
        events: list[ev.Event] = [
            ev.ImageRequested(**system(), image=image, owner=owner, name=name, file=new_id(),
                              public=public)
        ]
        if created:
            events.append(ev.ImageCreated(**system(), image=image, size=1 << 20, checksum="0"))
        await self.append(*events)
        return image

    async def network(self, owner: str, name: str, created: bool = True) -> str:
        net = new_id()
        events: list[ev.Event] = [ev.NetRequested(**system(), net=net, owner=owner, name=name)]
        if created:
            events.append(ev.NetCreated(**system(), net=net, vni=4096 + int(net[-4:], 16)))
        await self.append(*events)
        return net


def system() -> dict[str, Any]:
    return {"id": new_id(), "at": datetime.now(UTC), "actor": "system:test"}


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[Running]:
    log = await EventLog.connect(config.nats)
    await log.ensure_stream()
    store = await Store.open(config.etcd)
    contexts = {
        name: ServiceContext(config=config, log=log, store=store, name=name)
        for name in ("projector", "gateway")
    }
    projector = asyncio.create_task(run_projector(contexts["projector"]))
    gateway = asyncio.create_task(run_gateway(contexts["gateway"]))
    running: Running | None = None
    try:
        deadline = time.monotonic() + 20
        while not contexts["gateway"].shared.gateway_url:
            if gateway.done():
                gateway.result()
            assert time.monotonic() < deadline, "gateway did not start"
            await asyncio.sleep(0.02)
        url = str(contexts["gateway"].shared.gateway_url)
        secret = Path(config.gateway.bootstrap_admin_file).read_text().strip()
        admin = User(name="admin", realm="admin", secret=secret)
        gw = contexts["gateway"].shared.gateway
        assert isinstance(gw, Gateway)
        running = Running(url, config, log, store, admin, gw, projector)
        await running.settle(await log.last_sequence())  # the bootstrap's user.created
        await running.login(running.admin)
        yield running
    finally:
        if running is not None:
            for client in running.clients:
                await client.aclose()
        for task in (gateway, projector):
            task.cancel()
        for task in (gateway, projector):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()
        await log.close()
