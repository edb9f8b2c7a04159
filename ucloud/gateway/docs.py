"""The API page at ``/docs``: Swagger UI reading ``/openapi.json``, served from the package.

The page and its assets come from the installed Swagger UI distribution (the
``swagger-ui-bundle-v2`` package), never from another site, so the page works where the
gateway has no way out. Like the document, it needs no token: "Authorize" takes one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

ASSETS = {  # the files the page loads, with their media types
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>ucloud API</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  </head>
  <body>
    <div id="api"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script>
      window.ui = SwaggerUIBundle({
        url: "/openapi.json",
        dom_id: "#api",
        validatorUrl: null,
        deepLinking: true,
        persistAuthorization: false,
      });
    </script>
  </body>
</html>
"""


Page = Callable[[Request], Awaitable[Response]]


def pages() -> dict[str, Page]:
    """The page and each asset by path, for ``http.path_route``."""

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    def asset(name: str, media: str) -> Page:
        path = swagger_ui_path / name

        async def serve(request: Request) -> Response:
            return FileResponse(
                str(path), media_type=media, headers={"Cache-Control": "public, max-age=3600"}
            )

        return serve

    served: dict[str, Page] = {"/docs": page}
    served.update({f"/docs/{name}": asset(name, media) for name, media in ASSETS.items()})
    return served
