"""The Starlette application: REST under ``/v1``, health, metrics, the OpenAPI document and
its page (``/docs``)."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from ucloud.errors import UcloudError
from ucloud.gateway import (
    docs,
    openapi,
    routes_accounts,
    routes_auth,
    routes_console,
    routes_dns,
    routes_files,
    routes_hosts,
    routes_images,
    routes_invoice,
    routes_networks,
    routes_orders,
    routes_quotas,
    routes_stream,
    routes_ui,
    routes_users,
    routes_vms,
)
from ucloud.gateway.http import Endpoint, adapt_stream, json_response, path_route, routes
from ucloud.gateway.metrics import MetricsMiddleware
from ucloud.gateway.state import Gateway
from ucloud.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)
_HEALTHY = b'{"status":"ok"}'


def endpoints(gw: Gateway) -> list[Endpoint]:
    return [
        *routes_auth.endpoints(gw),
        *routes_users.endpoints(gw),
        *routes_accounts.endpoints(gw),
        *routes_quotas.endpoints(gw),
        *routes_vms.endpoints(gw),
        *routes_dns.endpoints(gw),
        *routes_console.endpoints(gw),
        *routes_networks.endpoints(gw),
        *routes_hosts.endpoints(gw),
        *routes_files.endpoints(gw),
        *routes_images.endpoints(gw),
        *routes_orders.endpoints(gw),
        *routes_invoice.endpoints(gw),
        *routes_stream.endpoints(gw),
    ]


def build_app(gw: Gateway) -> ASGIApp:
    """The ASGI app of the gateway ``gw`` (already opened)."""
    declared = endpoints(gw)
    document = msgspec.json.encode(openapi.document(declared, _version()))
    limit = gw.config.gateway.max_request_bytes

    async def healthz(request: Request) -> Response:
        return Response(_HEALTHY, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(await gw.process.render(), media_type=CONTENT_TYPE)

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "no such path", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return json_response(exc.status_code, {"error": reason, "field": ""}, exc.headers)

    async def crash(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        reason = str(exc) if isinstance(exc, UcloudError) else "internal error"
        return json_response(500, {"error": reason, "field": ""})

    served: list[BaseRoute] = [*routes(declared, gw.auth.authenticate, limit)]
    served += [adapt_stream(e) for e in declared if e.stream is not None]
    served += [
        path_route("/healthz", {"GET": healthz}),
        path_route("/metrics", {"GET": metrics}),
        path_route("/openapi.json", {"GET": openapi_json}),
        *(path_route(path, {"GET": page}) for path, page in docs.pages().items()),
        *routes_ui.routes(),
    ]
    app = Starlette(
        routes=served, exception_handlers={HTTPException: http_error, Exception: crash}
    )
    return MetricsMiddleware(app, gw.metrics)


def _version() -> str:
    try:
        return version("ucloud")
    except PackageNotFoundError:
        return "0"
