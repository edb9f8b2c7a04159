"""What the CLI prints: tables for people; JSON, YAML, CSV and bare values for scripts.

A ``Layout`` names the columns of one kind of view (a VM, a network, ...). Each
``Column`` has a name (``-c NAME``), the text a person reads in a table (``1.5G``) and the
value a script gets (the gateway's ``1536``). ``render`` turns decoded JSON into text:

- ``table`` (default): a list is an aligned table fitted to the terminal's width (the
  widest column is cut, ending in ``…``); one view is ``key: value`` lines, long values
  wrapped.
- ``json``, ``yaml``: the gateway's answer unchanged; with ``-c``, only those columns,
  by name, with the gateway's values.
- ``csv``: a header row, then one row per view.
- ``value``: bare values, one view per line, columns separated by a space (one view:
  one value per line), for ``$(ucloud vm show web -c host -o value)``.

Renderers tolerate missing fields, since a newer gateway may add or an older one lack a
field. A command without a layout passes a plain ``Renderer`` for its table; the other
formats then take the answer's top-level scalar fields as columns.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from ucloud.client.sizes import format_mib
from ucloud.errors import InputError

Json = Any
View = Mapping[str, Any]
Renderer = Callable[[Json], str]
NONE = "-"
FORMATS = ("table", "json", "yaml", "csv", "value")
MIN_WIDTH = 8  # a column is never cut narrower than this (or its header)
ELLIPSIS = "…"


def as_json(data: Json) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def as_yaml(data: Json) -> str:
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.rstrip("\n")


def dig(view: Any, path: Sequence[str]) -> Any:
    """``view[a][b]...``, or None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(view, Mapping):
            return None
        view = view.get(key)
    return view


def text(value: Any) -> str:
    return NONE if value in (None, "", [], ()) else str(value)


def size(value: Any) -> str:
    return format_mib(value) if isinstance(value, int) and value > 0 else NONE


def when(value: Any) -> str:
    """A timestamp to the second: ``2026-11-21T06:22:43.130182Z`` -> ``2026-11-21T06:22:43Z``."""
    if not isinstance(value, str) or not value:
        return text(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if moment.tzinfo is not None else "")


@dataclass(frozen=True)
class Column:
    name: str  # lower case, as ``-c`` names it
    cell: Callable[[View], str]  # the text of a table cell
    raw: Callable[[View], Any]  # the value in JSON, YAML, CSV and value output


def column(name: str, key: str = "", fmt: Callable[[Any], str] = text) -> Column:
    """A column of one field (``key``, dotted for nested ones: ``spec.ram_mib``)."""
    path = tuple((key or name).split("."))
    return Column(name, lambda view: fmt(dig(view, path)), lambda view: dig(view, path))


def derived(name: str, cell: Callable[[View], str], key: str = "") -> Column:
    """A column whose table text is made of several fields; its value is ``key``'s."""
    path = tuple((key or name).split("."))
    return Column(name, cell, lambda view: dig(view, path))


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]  # every column, in the order a single view shows them
    listed: tuple[str, ...] = ()  # the columns of a list table (default: all)
    after: Renderer | None = None  # more text under a single view's table (e.g. its lines)

    def pick(self, names: Sequence[str], many: bool) -> tuple[Column, ...]:
        """The columns ``-c`` names (in its order), or the default ones."""
        by_name = {c.name: c for c in self.columns}
        if not names:
            if many and self.listed:
                return tuple(by_name[n] for n in self.listed)
            return self.columns
        chosen = []
        for name in names:
            found = by_name.get(name.lower())
            if found is None:
                raise InputError("-c", f"no column {name!r}; columns: {', '.join(by_name)}")
            chosen.append(found)
        return tuple(chosen)

    def many(self, views: Sequence[View], width: int | None = None) -> str:
        chosen = self.pick((), True)
        return table([c.name.upper().replace("_", " ") for c in chosen],
                     ([c.cell(v) for c in chosen] for v in views), width)

    def one(self, view: View, width: int | None = None) -> str:
        body = fields(((c.name.replace("_", " "), c.cell(view)) for c in self.columns), width)
        return body + ("\n\n" + self.after(view) if self.after is not None else "")


def generic(data: Json) -> Layout:
    """The top-level scalar fields of an answer as columns, in the order they come."""
    views = data if isinstance(data, list) else [data]
    names: dict[str, None] = {}
    for view in views:
        if isinstance(view, Mapping):
            names.update((k, None) for k, v in view.items() if not isinstance(v, dict | list))
    return Layout(tuple(column(name) for name in names))


def render(
    data: Json,
    output: str,
    shape: Layout | Renderer,
    columns: Sequence[str] = (),
    width: int | None = None,
) -> str:
    """The text of ``data`` (a view or a list of them) in the ``output`` format."""
    if not isinstance(shape, Layout):
        if not columns and output in ("table", "json", "yaml"):
            return shape(data) if output == "table" else _dump(data, output)
        shape = generic(data)
    many = isinstance(data, list)
    views: list[View] = [v for v in (data if many else [data]) if isinstance(v, Mapping)]
    chosen = shape.pick(columns, many)
    if output in ("json", "yaml"):
        if not columns:
            return _dump(data, output)
        picked = [{c.name: c.raw(v) for c in chosen} for v in views]
        return _dump(picked if many else (picked[0] if picked else {}), output)
    if output == "table":
        if many:
            return table([c.name.upper().replace("_", " ") for c in chosen],
                         ([c.cell(v) for c in chosen] for v in views), width)
        if not columns:
            return shape.one(views[0] if views else {}, width)
        view = views[0] if views else {}
        return fields(((c.name.replace("_", " "), c.cell(view)) for c in chosen), width)
    rows = [[plain(c.raw(v), c.cell(v)) for c in chosen] for v in views]
    if output == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.name for c in chosen])
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if output == "value":
        if many:
            return "\n".join(" ".join(row) for row in rows)
        return "\n".join(rows[0]) if rows else ""
    raise InputError("-o", f"unknown format {output!r}; formats: {', '.join(FORMATS)}")


def _dump(data: Json, output: str) -> str:
    return as_yaml(data) if output == "yaml" else as_json(data)


def plain(raw: Any, cell: str) -> str:
    """A value bare, for CSV and ``value``: scalars as the gateway sent them, nothing as
    an empty string, anything else as its table text."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str | int | float):
        return str(raw)
    if isinstance(raw, list) and all(isinstance(item, str | int) for item in raw):
        return ",".join(str(item) for item in raw)
    return "" if cell == NONE else cell


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], width: int | None = None
) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks; with a
    ``width``, the widest columns are cut (ending in ``…``) until a line fits it."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    if width is not None:
        widths = fit(widths, [max(MIN_WIDTH, len(h)) for h in headers], width)
    return "\n".join(
        "  ".join(_cut(cell, w).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def fit(widths: Sequence[int], floors: Sequence[int], width: int) -> list[int]:
    """Column widths whose line (two spaces between columns) fits ``width``: the widest
    column is narrowed first, none below its floor (a line may still not fit then)."""
    out = list(widths)
    while sum(out) + 2 * (len(out) - 1) > width:
        cuttable = [i for i, w in enumerate(out) if w > floors[i]]
        if not cuttable:
            break
        widest = max(cuttable, key=lambda i: out[i])
        excess = sum(out) + 2 * (len(out) - 1) - width
        others = max((out[i] for i in cuttable if i != widest), default=floors[widest])
        out[widest] = max(floors[widest], out[widest] - excess, min(out[widest] - 1, others))
    return out


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: max(width - 1, 0)] + ELLIPSIS


def fields(pairs: Iterable[tuple[str, str]], width: int | None = None) -> str:
    """``key:  value`` lines with the values aligned; with a ``width``, long values wrap
    under themselves."""
    items = list(pairs)
    key_width = max((len(key) for key, _ in items), default=0) + 1
    room = None if width is None else max(width - key_width - 2, 20)
    out = []
    for key, value in items:
        parts = [value] if room is None or len(value) <= room else textwrap.wrap(value, room)
        out.append(f"{key + ':':<{key_width}}  {parts[0] if parts else ''}".rstrip())
        out.extend(" " * (key_width + 2) + part for part in parts[1:])
    return "\n".join(out)
