"""The gateway over HTTP: requests out, values or errors back.

Every answer becomes either decoded JSON or one of the ``ClientError``s: the gateway's
``{"error", "field"}`` body as ``ApiError``, a rejected token as ``NotLoggedIn``, a refused
or silent connection as ``Unreachable`` naming the URL. The token goes only into the
``Authorization`` header; it is in no message, log line or repr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from ucloud.errors import ApiError, NotLoggedIn, Unreachable

DEFAULT_TIMEOUT_S = 30.0


def path(*parts: str) -> str:
    """A URL path from segments, each quoted (a VM name may hold any character)."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


def api_error(status: int, body: bytes) -> ApiError:
    """The error a 4xx/5xx answer stands for; a body not in the contract's shape still says
    what the gateway (or a proxy in front of it) answered."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        field = data.get("field")
        return ApiError(status, field if isinstance(field, str) else "", data["error"])
    text = body.decode("utf-8", "replace").strip().splitlines()
    detail = f": {text[0][:200]}" if text else ""
    return ApiError(status, "", f"HTTP {status}{detail}")


class GatewayClient:
    """A synchronous client of one gateway; use it as a context manager."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "ucloud-cli"}
        self._authenticated = token is not None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"GatewayClient({self.url!r})"

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, url_path: str) -> Any:
        return self.request("GET", url_path)

    def post(self, url_path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", url_path, body if body is not None else {})

    def delete(self, url_path: str) -> Any:
        return self.request("DELETE", url_path)

    def request(
        self,
        method: str,
        url_path: str,
        body: dict[str, Any] | None = None,
        *,
        content: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Decoded JSON of a 2xx answer (None for an empty one); raises ClientError otherwise.

        ``content`` sends raw bytes (streamed from an iterable) instead of a JSON body."""
        try:
            if content is not None:
                response = self._http.request(method, url_path, content=content, headers=headers)
            else:
                response = self._http.request(method, url_path, json=body, headers=headers)
        except httpx.ConnectError as exc:
            raise Unreachable(self.url, _connect_detail(exc)) from exc
        except httpx.TimeoutException as exc:
            raise Unreachable(self.url, f"no answer within {self.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from exc
        if response.status_code >= 400:
            error = api_error(response.status_code, response.content)
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code == 429 and retry_after.isdigit():
                error = ApiError(429, error.field, f"{error.reason} (retry in {retry_after}s)")
            if response.status_code == 401 and self._authenticated:
                raise NotLoggedIn(f"the gateway rejected the token ({error})") from error
            raise error
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "", f"the gateway answered {method} {url_path} with non-JSON"
            ) from exc


def quiet_http_logging() -> None:
    """httpx logs every request at INFO; the CLI shows them only with ``-v``."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _connect_detail(exc: httpx.ConnectError) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused (is the gateway running? set --url or UCLOUD_URL)"
    return text or "cannot connect"
