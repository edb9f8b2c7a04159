"""One encoder and one decoder for the union of all events, and their JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import msgspec

from ucloud.errors import DecodeError
from ucloud.events.base import Event
from ucloud.events.host import HOST_EVENTS
from ucloud.events.order import ORDER_EVENTS
from ucloud.events.resources import RESOURCE_EVENTS
from ucloud.events.vm import VM_EVENTS

EVENT_TYPES: tuple[type[Event], ...] = VM_EVENTS + HOST_EVENTS + RESOURCE_EVENTS + ORDER_EVENTS
BY_TAG: dict[str, type[Event]] = {cls.tag(): cls for cls in EVENT_TYPES}
AGGREGATES = ("vm", "host", "net", "image", "file", "user", "pool", "order")

AnyEvent = Union[EVENT_TYPES]  # type: ignore[valid-type]  # noqa: UP007

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode one event; unknown fields are ignored, anything else wrong is a DecodeError."""
    try:
        event: Event = _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(str(exc)) from exc
    return event


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: one per event, plus ``events.json`` for the union."""
    (refs, components) = msgspec.json.schema_components(EVENT_TYPES, ref_template="#/$defs/{name}")
    out: dict[str, dict[str, Any]] = {}
    for cls, ref in zip(EVENT_TYPES, refs, strict=True):
        name = ref["$ref"].rsplit("/", 1)[1]
        schema = dict(components[name])
        used = _referenced(schema, components)
        if used:
            schema["$defs"] = {n: components[n] for n in sorted(used)}
        out[f"{cls.tag()}.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"ucloud/{cls.tag()}",
            **schema,
        }
    out["events.json"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "ucloud/events",
        "oneOf": refs,
        "discriminator": {"propertyName": "type"},
        "$defs": components,
    }
    return out


def _referenced(schema: Any, components: dict[str, Any], seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                _referenced(components[name], components, seen)
        for value in schema.values():
            _referenced(value, components, seen)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, components, seen)
    return seen


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema and remove stale ones; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for name, schema in wanted.items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


def schema_drift(directory: Path) -> list[str]:
    """Names of schema files that differ from the code (missing, stale or changed)."""
    wanted = schemas()
    present = {p.name for p in directory.glob("*.json")}
    drift = sorted(present - set(wanted))
    for name, schema in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text() != render(schema):
            drift.append(name)
    return drift
