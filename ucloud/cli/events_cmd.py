"""``ucloud events tail|export|import``: look at the log, copy it out and back in.

``tail`` prints events for debugging, as ``nats stream view`` does.

Each event is printed as::

    [42] Subject: ucloud.evt.vm.<id>.requested Received: 2025-01-02T03:04:05+00:00

      Nats-Msg-Id: <event id>
      Ucloud-Type: vm.requested

    { ...the JSON body, indented... }

Without ``--since-seq`` it prints the last ``-n`` events (20) matching the filter; with
``--follow`` it goes on printing new ones until interrupted.

``export`` writes the log (from ``--since-seq N`` on, up to the last event when it
began) as JSON lines, one record a line, exactly as stored::

    {"seq": 42, "subject": "ucloud.evt.vm.<id>.requested",
     "time": "2025-01-02T03:04:05.123456789Z",
     "headers": {"Nats-Msg-Id": "<event id>", "Ucloud-Type": "vm.requested"},
     "data": "<the body, byte for byte, as a JSON string>"}

The subject is the logical one (``ucloud.evt...``), whatever subject root the stream is
configured with, so a log exported from one stream imports into another. ``time`` is the
stored time in UTC to the nanosecond. A body that is not UTF-8 (poison) is written as
``"data_base64"`` instead of ``"data"``.

``import FILE`` appends such lines in file order, bodies and headers as they are (the
``Nats-Expected-*`` headers aside: they held the source stream's sequences), creating the
stream when it is missing. The stream assigns new sequences and times; ``Nats-Msg-Id``
still de-duplicates, so importing a file twice within the duplicate window appends once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from nats.js.errors import NotFoundError

from ucloud.cli.main import run_async
from ucloud.cli.replay_names import resolve, resolve_any
from ucloud.client.locate import add_server_options, find_servers
from ucloud.errors import InputError, LogError, Unreachable
from ucloud.eventlog import EVERYTHING, EventLog, Record
from ucloud.events import AGGREGATES, subject
from ucloud.events.base import SUBJECT_ROOT
from ucloud.natswire import headers_dict
from ucloud.supervisor import stop_on_signals

# Headers a direct get adds that the publisher did not write (natscli hides them too).
_SERVER_HEADERS = frozenset(
    {
        "Nats-Subject", "Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Num-Pending",
        "Nats-Last-Sequence", "Nats-UpTo-Sequence",
    }
)


def register(sub: Any) -> None:
    parser = sub.add_parser("events", help="look at the event log")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    tail = verbs.add_parser(
        "tail", help="print the last events (like `nats stream view`)",
        description="Print events of the log: the last N (default 20), or all from a "
        "sequence on; --follow keeps printing new ones until Ctrl-C.",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--aggregate", choices=AGGREGATES, help="only this aggregate")
    tail.add_argument("--id", help="only the aggregate with this id")
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--since-seq", type=_positive, metavar="N", help="every event from stream sequence N on"
    )
    start.add_argument(
        "-n", "--last", type=_non_negative, default=20, metavar="LAST",
        help="the last LAST events (default 20)",
    )
    add_server_options(tail)
    tail.set_defaults(func=run_async(tail_events))

    export = verbs.add_parser(
        "export", help="write the log as JSON lines, one record a line",
        description="Write every record of the log (from sequence N on, up to the last "
        "when the export began) as JSON lines: seq, subject (under ucloud.evt whatever "
        "the stream's subject root), stored time, headers and the body byte for byte.",
    )
    export.add_argument(
        "--since-seq", type=_positive, default=1, metavar="N", help="from stream sequence N on"
    )
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    add_server_options(export)
    export.set_defaults(func=run_async(export_events))

    load = verbs.add_parser(
        "import", help="append the records of an export, in order",
        description="Append every line of a file written by `ucloud events export` to the "
        "configured stream (under its subject root), bodies and headers as they are.",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    add_server_options(load)
    load.set_defaults(func=run_async(import_events))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def event_filter(aggregate: str | None, aggregate_id: str | None) -> str:
    """The subject filter: everything in the log, or one aggregate type and/or id."""
    if aggregate is None and aggregate_id is None:
        return f"{SUBJECT_ROOT}.>"
    return subject(aggregate or "*", aggregate_id or "*", "*")


async def tail_events(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = find_servers(args)
    await reachable(config.nats.url)
    event_log = await EventLog.connect(config.nats, name="ucloud-events-tail")
    try:
        try:
            last = await event_log.last_sequence()
        except NotFoundError as exc:
            raise LogError(
                f"no stream {config.nats.stream} at {config.nats.url}: nothing was appended yet"
            ) from exc
        aggregate, ident = args.aggregate, args.id
        if ident is not None and aggregate is not None:
            ident = await resolve(event_log, aggregate, ident, "--id")
        elif ident is not None:
            aggregate, ident = await resolve_any(event_log, ident, "--id")
        wanted = event_filter(aggregate, ident)
        with stop_on_signals() as stop:
            printing = asyncio.create_task(_print(event_log, args, wanted, last, out))
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({printing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (printing, stopping):
                task.cancel()
            if printing in done:
                await printing  # raises what printing raised
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, and nothing at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        await event_log.close()
    return 0


async def reachable(url: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at the NATS URL (the client would retry forever)."""
    first = urllib.parse.urlsplit(url.split(",")[0].strip())
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(first.hostname, first.port or 4222), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Unreachable(
            url, detail or "no answer", what="NATS", options="--data-dir DIR, --config FILE"
        ) from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _print(
    event_log: EventLog, args: argparse.Namespace, wanted: str, last: int, out: TextIO
) -> None:
    if args.since_seq is not None:
        async for batch in event_log.read(
            args.since_seq, filter_subject=wanted, follow=args.follow
        ):
            _write(out, batch)
        return
    _write(out, await last_records(event_log, wanted, last, args.last))
    if args.follow:
        async for batch in event_log.read(last + 1, filter_subject=wanted, follow=True):
            _write(out, batch)


async def last_records(event_log: EventLog, wanted: str, last: int, count: int) -> list[Record]:
    """The last ``count`` records matching ``wanted`` up to sequence ``last``.

    Looks back in growing windows, so a sparse filter on a long log reads only what matches.
    """
    if count == 0 or last == 0:
        return []
    window = count * 4
    while True:
        start = max(1, last - window + 1)
        found = [r for r in await event_log.records(wanted, start) if r.seq <= last]
        if len(found) >= count or start == 1:
            return found[-count:]
        window *= 4


def _write(out: TextIO, records: Iterable[Record]) -> None:
    for record in records:
        out.write(render(record))
    out.flush()


def render(record: Record) -> str:
    """One record as ``nats stream view`` shows it, with the JSON body indented."""
    received = record.time.astimezone().isoformat(timespec="seconds")
    lines = [f"[{record.seq}] Subject: {record.subject} Received: {received}"]
    headers = [(k, v) for k, v in record.headers.items() if k not in _SERVER_HEADERS]
    if headers:
        lines.append("")
        lines += [f"  {name}: {value}" for name, value in headers]
    lines += ["", _body(record.data), ""]
    return "\n".join(lines) + "\n"


def _body(data: bytes) -> str:
    if not data:
        return "nil body"
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        return data.decode(errors="replace")


# --- export and import ------------------------------------------------------------------

_EXPECTED = "Nats-Expected-"


def exported(seq: int, subject_: str, ns: int, headers: bytes, data: bytes) -> str:
    """One record as a line of an export (``EventLog.read_as``'s ``make``)."""
    wanted = {k: v for k, v in headers_dict(headers).items() if k not in _SERVER_HEADERS}
    line: dict[str, Any] = {
        "seq": seq, "subject": subject_, "time": _rfc3339_ns(ns), "headers": wanted
    }
    try:
        line["data"] = data.decode()
    except UnicodeDecodeError:
        line["data_base64"] = base64.b64encode(data).decode()
    return json.dumps(line, ensure_ascii=False) + "\n"


def imported(line: str) -> tuple[str, dict[str, str], bytes]:
    """Subject, headers to publish and body of one line of an export."""
    try:
        record = json.loads(line)
        subject_, headers = record["subject"], record["headers"]
        if "data" in record:
            data = record["data"].encode()
        else:
            data = base64.b64decode(record["data_base64"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError("line", f"not a record of `ucloud events export`: {exc}") from exc
    if not isinstance(subject_, str) or not isinstance(headers, dict):
        raise InputError("line", "subject must be a string and headers an object")
    publish = {str(k): str(v) for k, v in headers.items() if not str(k).startswith(_EXPECTED)}
    return subject_, publish, data


def _rfc3339_ns(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


async def export_events(args: argparse.Namespace, out: TextIO | None = None) -> int:
    config = find_servers(args)
    await reachable(config.nats.url)
    event_log = await EventLog.connect(config.nats, name="ucloud-events-export")
    try:
        try:
            await event_log.last_sequence()
        except NotFoundError as exc:
            raise LogError(
                f"no stream {config.nats.stream} at {config.nats.url}: nothing was appended yet"
            ) from exc
        if out is not None:
            await _export(event_log, args.since_seq, out)
        elif args.output is not None:
            partial = args.output.with_name(args.output.name + ".partial")
            with partial.open("w", encoding="utf-8") as file:
                await _export(event_log, args.since_seq, file)
            partial.replace(args.output)
        else:
            await _export(event_log, args.since_seq, sys.stdout)
    finally:
        await event_log.close()
    return 0


async def _export(event_log: EventLog, start: int, out: TextIO) -> None:
    reads = event_log.read_as(exported, subjects=(EVERYTHING,), start=start)
    async with contextlib.aclosing(reads) as batches:
        async for batch in batches:
            out.writelines(batch)
    out.flush()


async def import_events(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = find_servers(args)
    try:
        lines = [line for line in args.file.read_text(encoding="utf-8").splitlines() if line]
    except OSError as exc:
        raise InputError("file", f"cannot read {args.file}: {exc.strerror}") from exc
    records = [imported(line) for line in lines]  # all of it is readable before any append
    await reachable(config.nats.url)
    event_log = await EventLog.connect(config.nats, name="ucloud-events-import")
    try:
        await event_log.ensure_stream()
        first = last = 0
        for subject_, headers, data in records:
            last = await event_log.append_raw(subject_, data, headers)
            first = first or last
    finally:
        await event_log.close()
    where = f": sequences {first}..{last}" if records else ""
    out.write(f"imported {len(records)} records into {config.nats.stream}{where}\n")
    return 0
