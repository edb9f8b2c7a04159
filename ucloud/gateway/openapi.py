"""The OpenAPI 3.1 document, generated from the endpoint declarations and msgspec types."""

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
        types += [t for t in (endpoint.body, endpoint.answer) if t is not None]
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schema_of = dict(zip(unique, refs, strict=True))
    error = {"content": {"application/json": {"schema": schema_of[ErrorBody]}}}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": f"{endpoint.method.lower()}{endpoint.path}",
            "responses": {},
        }
        if endpoint.access != "public":
            operation["security"] = [{"bearer": []}]
        parameters: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PARAM.findall(endpoint.path)
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
        answer: dict[str, Any] = {"description": endpoint.summary}
        if endpoint.answer is not None:
            answer["content"] = {"application/json": {"schema": schema_of[endpoint.answer]}}
        operation["responses"][str(endpoint.status)] = answer
        for status in endpoint.errors:
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
    429: "too many failed attempts: see Retry-After",
}
