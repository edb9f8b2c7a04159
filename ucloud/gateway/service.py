"""``ucloud serve gateway``: the HTTP API on ``gateway.listen``, inside the service task.

The gateway binds its socket itself (``127.0.0.1:0`` picks a free port), so a busy port is
an ordinary error for the supervisor rather than uvicorn's ``sys.exit``, and it leaves
signals to the supervisor. Once it listens, ``ctx.shared.gateway_url`` holds its URL
(``ctx.shared.gateway`` is the ``Gateway`` itself, for tests and the metrics page).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

import uvicorn

from ucloud.config import Config
from ucloud.errors import Refused
from ucloud.gateway import login
from ucloud.gateway.app import build_app
from ucloud.gateway.auth import ADMIN_REALM
from ucloud.gateway.routes_users import create_user
from ucloud.gateway.state import Gateway
from ucloud.listen import Server, url_of
from ucloud.listen import bind as listen_socket
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)
ADMIN = "admin"
_STOP_S = 5


def bind(listen: str) -> socket.socket:
    sock = listen_socket(listen, "gateway.listen")
    sock.set_inheritable(True)
    return sock



async def bootstrap_admin(gw: Gateway, path: str) -> bool:
    """Create user ``admin`` (realm admin) when missing; its secret goes to ``path`` (0600)."""
    if not path:
        return False
    events, _ = await gw.log.load("user", ADMIN)
    if events:
        return False
    secret = login.new_secret()
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret + "\n")
    try:
        # no waiting for the projection: the file must not be lost if it is slow
        await create_user(gw, ADMIN, ADMIN_REALM, "system:gateway", secret, settle=False)
    except Refused:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(target)
    log.info("created user admin; its TOTP secret is in %s", target)
    return True


async def serve(gw: Gateway, sock: socket.socket, ctx: ServiceContext | None = None) -> None:
    """Serve the gateway's app on ``sock`` until cancelled."""
    config = uvicorn.Config(
        build_app(gw), log_config=None, access_log=False, lifespan="off", server_header=False,
        timeout_graceful_shutdown=_STOP_S,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-uvicorn")
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            url = url_of(sock)
            log.info("gateway listening on %s", url)
            if ctx is not None:
                ctx.shared.gateway_url = url
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, _STOP_S * 2)
        raise
    finally:
        if not task.done():
            task.cancel()


async def run(ctx: ServiceContext) -> None:
    """The gateway service: open, bootstrap the admin if configured, serve until cancelled."""
    config: Config = ctx.config
    sock = bind(config.gateway.listen)
    try:
        gw = await Gateway.open(config, ctx.log, ctx.store, ctx.metrics)
        ctx.shared.gateway = gw
        try:
            await bootstrap_admin(gw, config.gateway.bootstrap_admin_file)
            await serve(gw, sock, ctx)
        finally:
            await gw.close()
    finally:
        sock.close()
