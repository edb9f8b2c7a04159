"""The OpenAPI 3.1 document, generated from the endpoint declarations and msgspec types.

Everything in it comes from what the gateway enforces: bodies, path and query parameters
are the msgspec types the adapter decodes them with (constraints included), and each
operation lists every error status the adapter or its handler can answer, with the
JSON error body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from ucloud.gateway.http import Endpoint
from ucloud.gateway.schemas import ErrorBody, Health

_PARAM = re.compile(r"{([^}]+)}")
_REF = "#/components/schemas/{name}"


def document(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody, Health]
    for endpoint in endpoints:
        declared = (endpoint.body, endpoint.answer, endpoint.params, endpoint.query)
        types += [t for t in declared if t is not None]
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schema_of = dict(zip(unique, refs, strict=True))
    error = {"content": {"application/json": {"schema": schema_of[ErrorBody]}}}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            **({"description": endpoint.description} if endpoint.description else {}),
            "operationId": f"{endpoint.method.lower()}{endpoint.path}",
            "responses": {},
        }
        if endpoint.access != "public":
            operation["security"] = [{"bearer": []}]
        typed = _properties(components, schema_of, endpoint.params)
        parameters: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True,
             "schema": typed.get(p, ({"type": "string"}, False))[0]}
            for p in _PARAM.findall(endpoint.path)
        ]
        parameters += [
            {"name": name, "in": "query", "required": required, "schema": schema}
            for name, (schema, required) in _properties(
                components, schema_of, endpoint.query
            ).items()
        ]
        if endpoint.idempotent:
            parameters.append(_IDEMPOTENCY_KEY)
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": not endpoint.optional_body,
                "content": {"application/json": {"schema": schema_of[endpoint.body]}},
            }
        if endpoint.raw_body:  # an empty body is an empty file
            operation["requestBody"] = {
                "required": False,
                "content": {endpoint.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        answer: dict[str, Any] = {"description": endpoint.summary}
        if endpoint.answer is not None:
            answer["content"] = {"application/json": {"schema": schema_of[endpoint.answer]}}
        operation["responses"][str(endpoint.status)] = answer
        for status in sorted(error_statuses(endpoint)):
            operation["responses"][str(status)] = {"description": _REASONS[status], **error}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    paths["/healthz"] = {
        "get": {
            "summary": "Liveness",
            "operationId": "get/healthz",
            "responses": {
                "200": {
                    "description": "alive",
                    "content": {"application/json": {"schema": schema_of[Health]}},
                }
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "get/metrics",
            "responses": {"200": {"description": "text exposition format"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ucloud", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def error_statuses(endpoint: Endpoint) -> set[int]:
    """Every error status ``endpoint`` can answer: its handler's, and the adapter's."""
    statuses = {*endpoint.errors, 503}  # the log or the store unreachable
    if endpoint.access != "public":
        statuses.add(401)
    if endpoint.access == "admin":
        statuses.add(403)
    if endpoint.body or endpoint.raw_body or endpoint.params or endpoint.query:
        statuses.add(400)
    if endpoint.body or endpoint.raw_body:
        statuses.add(413)  # larger than [gateway] max_request_bytes (files: the upload limit)
    if endpoint.method != "GET":
        statuses.add(504)  # accepted, but the projection did not show it in time
    return statuses


def _properties(
    components: dict[str, Any], schema_of: dict[Any, Any], struct: type | None
) -> dict[str, tuple[dict[str, Any], bool]]:
    """The fields of a Struct's schema: name -> (schema, required)."""
    if struct is None:
        return {}
    name = schema_of[struct]["$ref"].rsplit("/", 1)[1]
    component = components[name]
    required = set(component.get("required", ()))
    return {
        field: (schema, field in required)
        for field, schema in component.get("properties", {}).items()
    }


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Any unique string (a UUID): a retry with the same key within a day answers the "
        "first answer (with Idempotent-Replayed: true) and appends nothing; the same key "
        "with another body is a 422; while the first is still running, a 409 with Retry-After"
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

_REASONS = {
    400: "bad input: the field and the reason",
    401: "no valid token (or a wrong one-time password)",
    403: "only the admin realm may do this",
    404: "no such resource (or not yours)",
    409: "refused in the current state",
    422: "the Idempotency-Key was used with a different request",
    413: "the body is larger than the limit",
    429: "too many failed attempts: see Retry-After",
    503: "the event log or the store is unavailable: try again",
    504: "accepted, but not shown yet: read it again",
}
