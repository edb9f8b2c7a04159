"""``ucloud replay audit``: who did what, when, and because of which request.

    ucloud replay audit [--vm ID|NAME] [--owner U] [--event TAG]... [--since T] [--until T]
                        [-o table|json]

Reads the log (from the start, or from ``--since`` when no owner has to be learned from
earlier events; only one VM's events with ``--vm``) and prints one line per event: time,
actor, correlation, event, id and a summary. Times are ISO 8601 (``2026-11-01``,
``2026-11-01T12:00:00Z``; without a zone they are UTC) or ``now``. ``--event`` keeps only
events of those tags: ``--vm X --event vm.console_opened`` says who opened X's consoles.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ucloud.cli.events_cmd import reachable
from ucloud.cli.main import run_async
from ucloud.cli.replay_names import check_user, resolve
from ucloud.client.locate import add_server_options, find_servers
from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import BY_TAG
from ucloud.replay.audit import AuditFold, AuditLine
from ucloud.replay.reader import scan_events

# Events a few minutes older than --since are read too: an event's own time is taken
# before its append, on the appender's clock.
CLOCK_MARGIN = timedelta(minutes=5)


def register(verbs: Any) -> None:
    parser = verbs.add_parser("audit", help="the audit trail: events with actor and correlation")
    parser.add_argument("--vm", help="only this VM's events (its id, or its name)")
    parser.add_argument("--owner", help="only events of this user's resources")
    parser.add_argument(
        "--event", action="append", metavar="TAG",
        help="only events of this tag, e.g. vm.console_opened (repeatable)",
    )
    parser.add_argument("--since", help="from this time on (ISO 8601, UTC if no zone)")
    parser.add_argument("--until", help="before this time (ISO 8601, UTC if no zone)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_server_options(parser)
    parser.set_defaults(func=run_async(_audit))


def parse_time(text: str | None, option: str, now: datetime) -> datetime | None:
    """An ISO 8601 date or time (UTC when it names no zone), or ``now``.

    InputError names the option.
    """
    if text is None:
        return None
    if text == "now":
        return now
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise InputError(option, f"{text!r} is not an ISO 8601 time such as 2026-11-01T00:00Z") \
            from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def warn_skipped(skipped: list[int]) -> None:
    """Say on stderr how many records were no known event (a replay goes on without them)."""
    if skipped:
        print(f"ucloud: skipped {len(skipped)} records that are no known event "
              f"(the first at sequence {skipped[0]})", file=sys.stderr)


async def _audit(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since, until = parse_time(args.since, "--since", now), parse_time(args.until, "--until", now)
    if since is not None and until is not None and since >= until:
        raise InputError("--since", "must be before --until")
    # Owners are learned from the events that create resources, which may be older.
    start_time = since - CLOCK_MARGIN if since is not None and args.owner is None else None
    config = find_servers(args)
    await reachable(config.nats.url)
    if args.event:
        unknown = sorted(set(args.event) - set(BY_TAG))
        if unknown:
            raise InputError("--event", f"no event type {unknown[0]!r}")
    tags = frozenset(args.event) if args.event else None
    skipped: list[int] = []
    log = await EventLog.connect(config.nats, name="ucloud-replay")
    try:
        vm = None if args.vm is None else await resolve(log, "vm", args.vm, "--vm", args.owner)
        if args.owner is not None:
            await check_user(log, args.owner, "--owner")
        fold = AuditFold(vm=vm, owner=args.owner, since=since, until=until, events=tags)
        if vm is not None:  # one aggregate: direct gets by its subjects
            stored, _ = await log.load("vm", vm)
            for item in stored:
                fold.apply(item.seq, item.event)
        else:
            async for events in scan_events(log, start_time=start_time, skipped=skipped):
                for seq, event in events:
                    fold.apply(seq, event)
    finally:
        await log.close()
    warn_skipped(skipped)
    sys.stdout.write(render(fold.lines, args.output))
    return 0


def render(lines: list[AuditLine], output: str) -> str:
    if output == "json":
        return msgspec.json.encode(lines).decode() + "\n"
    rows = [("TIME", "ACTOR", "CORRELATION", "EVENT", "ID", "SUMMARY")]
    rows += [
        (
            line.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            line.actor,
            line.correlation,
            line.event,
            line.id,
            line.summary,
        )
        for line in lines
    ]
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is left ragged."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(out) + "\n"
