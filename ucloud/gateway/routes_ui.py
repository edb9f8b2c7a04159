"""The web dashboard: the built front-end (``ucloud/gateway/ui/dist``), served at ``/ui``.

The dashboard is a static single page that talks to the same REST API as the CLI, with
the same bearer tokens; nothing here knows a user. ``/`` and ``/ui`` redirect to
``/ui/``; ``/ui/assets/<name>`` are the bundle's files, whose names carry a hash of their
content, so they are cached for a year; every other path under ``/ui/`` is the page
itself (its routes live in the URL's fragment), never cached, so a new bundle is seen on
the next load. The page loads nothing from anywhere else: the content security policy
allows this origin only (and its WebSockets, for the consoles).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

DIST = Path(__file__).parent / "ui" / "dist"
_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".map": "application/json",
    ".woff2": "font/woff2",
}


def content_type(name: str) -> str:
    suffix = Path(name).suffix
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def asset_path(root: Path, name: str) -> Path | None:
    """The file of ``/ui/assets/<name>`` under ``root``, or None (missing, or outside)."""
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        return None
    path = root / "assets" / name
    return path if path.is_file() else None


def routes(root: Path = DIST) -> list[Route]:
    async def to_ui(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    async def page(request: Request) -> Response:
        index = root / "index.html"
        if not index.is_file():
            return Response(
                "the dashboard is not built (see README: Development)", status_code=404,
                media_type="text/plain",
            )
        headers = {**_SECURITY, "Cache-Control": "no-cache"}
        return FileResponse(index, media_type=content_type("index.html"), headers=headers)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = asset_path(root, name)
        if path is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        headers = {**_SECURITY, "Cache-Control": "public, max-age=31536000, immutable"}
        return FileResponse(path, media_type=content_type(name), headers=headers)

    return [
        Route("/", to_ui, methods=["GET", "HEAD"]),
        Route("/ui", to_ui, methods=["GET", "HEAD"]),
        Route("/ui/assets/{name}", asset, methods=["GET", "HEAD"]),
        Route("/ui/{rest:path}", page, methods=["GET", "HEAD"]),
    ]
