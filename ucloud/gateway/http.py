"""How an endpoint is declared, and the one place that turns requests into answers.

An ``Endpoint`` names its method, path, body type, answer type, status and who may call it;
routes and the OpenAPI document are both built from the same declarations. The adapter
authenticates, decodes the body with msgspec (unknown fields refused), calls the handler
and encodes its answer. Every error becomes ``{"error": reason, "field": field}`` with the
error's status; a failure of the log or the store is a 503, an answer whose projection
did not catch up in time a 504 (the request was accepted), anything unexpected a 500.

An endpoint with a ``stream`` is a WebSocket at its path (``adapt_stream``): the
declaration puts it in the OpenAPI document (status 101), the stream handler
authenticates and answers the upgrade itself, and a plain request gets the handler's
answer (a 400 asking for the upgrade).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ucloud.errors import (
    Forbidden,
    InputError,
    LogError,
    ProjectionBehind,
    StoreError,
    UcloudError,
)
from ucloud.gateway.auth import Principal
from ucloud.ids import derive_id, new_id

log = logging.getLogger(__name__)

Access = Literal["public", "user", "admin"]
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    principal: Principal
    params: dict[str, str]
    body: Any
    request: Request
    seed: str = ""  # set for a request with an Idempotency-Key (``idempotency``)
    query: Any = None  # the endpoint's query Struct, when it declares one

    def new_id(self, purpose: str) -> str:
        """A fresh id, or with an idempotency key one derived from the key's seed, so
        that a retry of the request appends events of the same ids (which the log drops)."""
        return derive_id(self.seed, purpose) if self.seed else new_id()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler returns: a status and a body (a Struct, a list, raw JSON, or None;
    a Starlette ``Response``, such as a stream of server-sent events, goes out as it is)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Answer]]
StreamHandler = Callable[[WebSocket], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    body: type | None = None
    answer: Any = None  # the answer's type, for the OpenAPI document
    access: Access = "user"
    errors: tuple[int, ...] = ()
    optional_body: bool = False  # an empty body means the body type's defaults
    idempotent: bool = False  # accepts an Idempotency-Key (``idempotency.idempotent``)
    params: type | None = None  # a Struct the path parameters must convert to
    query: type | None = None  # a Struct of the query parameters (``Call.query``)
    raw_body: str = ""  # the media type of a body the handler streams itself (bytes)
    description: str = ""  # more than the summary, for the document
    stream: StreamHandler | None = None  # a WebSocket at the same path (``adapt_stream``)


def deleted_later(what: str, by: str) -> str:
    """The description of a DELETE that another service carries out."""
    return (
        f"Accepted: the {what} is answered with status `deleting` until {by} has removed it;"
        " from then on it is a 404"
    )


class RawJson(bytes):
    """JSON already encoded (views as the projection stores them)."""


def raw_list(items: list[bytes]) -> RawJson:
    return RawJson(b"[" + b",".join(items) + b"]")


_encoder = msgspec.json.Encoder()
_ANONYMOUS = Principal(name="", realm="")


def encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return bytes(body)
    return _encoder.encode(body)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    content = b"" if body is None else encode(body)
    media = JSON if body is not None else None
    return Response(content, status_code=status, media_type=media, headers=headers)


def error_response(exc: InputError) -> Response:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:  # RateLimited, an idempotency key in progress
        headers["Retry-After"] = str(retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return json_response(exc.status, {"error": exc.reason, "field": exc.field}, headers)


def routes(
    endpoints: Sequence[Endpoint], authenticate: Callable[[str | None], Principal], max_body: int
) -> list[Route]:
    """One Starlette route per path, whatever its methods: a method the path does not have is
    a 405 whose ``Allow`` names all that it has, and ``OPTIONS`` answers 204 with that
    ``Allow`` (HEAD is answered wherever GET is)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
    return [
        path_route(path, {m: adapt(e, authenticate, max_body) for m, e in methods.items()})
        for path, methods in by_path.items()
    ]


def path_route(path: str, methods: Mapping[str, Callable[[Request], Awaitable[Response]]]) -> Route:
    """The route of ``path`` answering each of ``methods`` with its handler, and OPTIONS."""
    allowed = [*methods, *(["HEAD"] if "GET" in methods else []), "OPTIONS"]
    allow = ", ".join(allowed)

    async def asgi(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            return Response(status_code=204, headers={"Allow": allow})
        return await handler(request)

    return Route(path, asgi, methods=allowed, name=path)


def adapt(
    endpoint: Endpoint, authenticate: Callable[[str | None], Principal], max_body: int
) -> Callable[[Request], Awaitable[Response]]:
    """The request handler of an endpoint."""
    decoder: msgspec.json.Decoder[Any] | None = None
    if endpoint.body is not None:
        decoder = msgspec.json.Decoder(endpoint.body)

    async def asgi(request: Request) -> Response:
        try:
            principal = _ANONYMOUS
            if endpoint.access != "public":
                principal = authenticate(request.headers.get("authorization"))
                if endpoint.access == "admin" and not principal.admin:
                    raise Forbidden("realm", "only the admin realm may do this")
            query = None
            if endpoint.params is not None:
                convert(dict(request.path_params), endpoint.params)
            if endpoint.query is not None:
                query = convert(dict(request.query_params), endpoint.query)
            body = None
            if decoder is not None:
                data = await read_body(request, max_body)
                if endpoint.optional_body and not data.strip():
                    data = b"{}"
                body = decode_body(decoder, data)
            answer = await endpoint.handler(
                Call(
                    principal=principal, params=request.path_params, body=body,
                    request=request, query=query,
                )
            )
        except InputError as exc:
            return error_response(exc)
        except ProjectionBehind as exc:
            return json_response(504, {"error": str(exc), "field": ""})
        except (LogError, StoreError) as exc:
            log.warning("%s %s: %s", endpoint.method, endpoint.path, exc)
            return json_response(503, {"error": "backend unavailable, try again", "field": ""})
        except UcloudError as exc:
            log.warning("%s %s: %s", endpoint.method, endpoint.path, exc)
            return json_response(500, {"error": str(exc), "field": ""})
        except Exception:
            log.exception("%s %s failed", endpoint.method, endpoint.path)
            return json_response(500, {"error": "internal error", "field": ""})
        if isinstance(answer.body, Response):
            return answer.body
        return json_response(answer.status, answer.body, answer.headers)

    return asgi


def adapt_stream(endpoint: Endpoint) -> WebSocketRoute:
    """The Starlette WebSocket route of an endpoint that has a ``stream``."""
    assert endpoint.stream is not None
    return WebSocketRoute(endpoint.path, endpoint.stream, name=f"ws:{endpoint.path}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or InputError (413) once it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge("", f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge("", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class TooLarge(InputError):
    status = 413


def decode_body(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    """The decoded body; InputError naming the field msgspec complained about."""
    if not data.strip():
        raise InputError("", "a JSON body is required")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InputError(*field_and_reason(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise InputError("", f"body is not valid JSON: {exc}") from exc


def convert(values: dict[str, str], into: type) -> Any:
    """Path or query parameters (strings) as the Struct ``into``; InputError naming one."""
    try:
        return msgspec.convert(values, into, strict=False)
    except msgspec.ValidationError as exc:
        raise InputError(*field_and_reason(str(exc))) from exc


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATTERN = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$", re.S)
READINGS: dict[str, str] = {}  # a request type's pattern -> what to tell the caller


def readable(pattern: str, reading: str) -> str:
    """``pattern``, registered so that a value that misses it is refused with ``reading``
    ("use 1-63 letters, digits, '-' or '_'") rather than with the regular expression."""
    READINGS[pattern] = reading
    return pattern
_FIELD_IN = re.compile(r"Object (?:contains unknown|missing required) field `(?P<f>[^`]+)`")


def field_and_reason(message: str) -> tuple[str, str]:
    """msgspec's "reason - at `$.a[0].b`" as ("a[0].b", reason), naming missing/unknown fields."""
    match = _AT.match(message)
    assert match is not None
    reason, path = match["reason"], (match["path"] or "").lstrip(".")
    named = _FIELD_IN.match(reason)
    if named:
        path = f"{path}.{named['f']}" if path else named["f"]
        reason = "unknown field" if "unknown" in reason else "required field is missing"
    missed = _PATTERN.match(reason)
    if missed and missed["pattern"] in READINGS:
        reason = READINGS[missed["pattern"]]
    return path, reason
