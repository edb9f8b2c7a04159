"""``ucloud replay state``: the cloud as the log says it was at a time, or what changed.

    ucloud replay state --at T [-o table|json]
    ucloud replay state --diff T1 T2 [-o table|json]

Reads the log from sequence 1 and folds it in memory with the projector's own rules
(``ucloud.replay.state``); nothing is written anywhere. ``--at`` prints the VMs (name,
owner, status, host), hosts and networks at ``T``; ``--diff`` the VMs, hosts and networks
that differ between ``T1`` and ``T2``, each with the events between that changed it and
their actor. Times as in ``replay audit`` (ISO 8601, UTC without a zone, or ``now``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

from ucloud.cli.events_cmd import reachable
from ucloud.cli.main import run_async
from ucloud.cli.replay_audit import parse_time, warn_skipped
from ucloud.client.locate import add_server_options, find_servers
from ucloud.client.output import as_json, table
from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.replay.audit import summarize
from ucloud.replay.reader import scan_events
from ucloud.replay.state import Difference, StateAt, StateDiff


def register(verbs: Any) -> None:
    parser = verbs.add_parser(
        "state", help="VMs, hosts and networks as they were at a time (or what changed)"
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", metavar="T", help="the time (ISO 8601, UTC if no zone, or now)")
    when.add_argument("--diff", nargs=2, metavar=("T1", "T2"),
                      help="what changed between two times, and who changed it")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_server_options(parser)
    parser.set_defaults(func=run_async(_state))


async def _state(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    fold: StateAt | StateDiff
    if args.at is not None:
        fold = StateAt(_time(args.at, "--at", now))
    else:
        since, until = (_time(t, "--diff", now) for t in args.diff)
        if since >= until:
            raise InputError("--diff", "T1 must be before T2")
        fold = StateDiff(since, until)
    config = find_servers(args)
    await reachable(config.nats.url)
    skipped: list[int] = []
    log = await EventLog.connect(config.nats, name="ucloud-replay")
    try:
        async for events in scan_events(log, skipped=skipped):
            for seq, event in events:
                fold.feed(seq, event)
    finally:
        await log.close()
    warn_skipped(skipped)
    if isinstance(fold, StateAt):
        sys.stdout.write(render_state(fold.views(), args.output))
    else:
        sys.stdout.write(render_diff(fold.differences(), args.output))
    return 0


def _time(text: str, option: str, now: datetime) -> datetime:
    value = parse_time(text, option, now)
    assert value is not None
    return value


def render_state(views: dict[str, Any], output: str) -> str:
    if output == "json":
        return as_json(views).rstrip("\n") + "\n"
    names = {net["id"]: net["name"] for net in views["networks"]}
    parts = [
        f"the cloud at {views['at']} (the log up to sequence {views['sequence']})",
        "VMS\n" + table(
            ["NAME", "ID", "OWNER", "STATUS", "HOST", "NETWORKS"],
            [[vm["name"], vm["id"], vm["owner"], vm["status"], vm["host"] or "-",
              ",".join(names.get(n["network"], n["network"]) for n in vm["nics"]) or "-"]
             for vm in views["vms"]],
        ),
        "HOSTS\n" + table(
            ["ID", "STATE", "DRAINED", "VMS", "CPU USED", "ADDRESS"],
            [[h["id"], h["state"], "yes" if h["drained"] else "no", str(len(h["vms"])),
              f"{h['used']['cpu']}/{h['capacity']['cpu']}", h["address"] or "-"]
             for h in views["hosts"]],
        ),
        "NETWORKS\n" + table(
            ["NAME", "ID", "OWNER", "IPAM", "STATUS", "VNI", "PREFIX"],
            [[n["name"], n["id"], n["owner"], n["ipam"], n["status"], str(n["vni"] or "-"),
              n["prefix"] or "-"] for n in views["networks"]],
        ),
    ]
    return "\n\n".join(parts) + "\n"


def render_diff(differences: list[Difference], output: str) -> str:
    if output == "json":
        data = [
            {"key": d.key, "before": d.before, "after": d.after,
             "by": [{"seq": c.seq, "at": c.event.at.isoformat(), "actor": c.event.actor,
                     "event": c.event.tag(), "summary": summarize(c.event)} for c in d.by]}
            for d in differences
        ]
        return msgspec.json.encode(data).decode() + "\n"
    if not differences:
        return "nothing changed\n"
    blocks = []
    for d in differences:
        blocks.append(f"{d.key}: {_what(d)}\n" + table(
            ["SEQ", "TIME", "ACTOR", "EVENT"],
            [[str(c.seq), c.event.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              c.event.actor, summarize(c.event)] for c in d.by],
        ))
    return "\n\n".join(blocks) + "\n"


def _what(d: Difference) -> str:
    if d.before is None:
        return f"created ({_label(d.after)})"
    if d.after is None:
        return f"gone (was {_label(d.before)})"
    changed = sorted(k for k in {*d.before, *d.after} if d.before.get(k) != d.after.get(k))
    return "changed " + ", ".join(_field(k, d.before.get(k), d.after.get(k)) for k in changed)


def _field(name: str, before: Any, after: Any) -> str:
    """A scalar field with its two values; a list or a mapping by name."""
    if isinstance(before, dict | list) or isinstance(after, dict | list):
        return name
    return f"{name} {before or '-'} -> {after or '-'}"


def _label(view: dict[str, Any]) -> str:
    status = view.get("status") or view.get("state") or ""
    return " ".join(str(p) for p in (view.get("name", view.get("id")), status) if p)
