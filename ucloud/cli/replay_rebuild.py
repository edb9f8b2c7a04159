"""``ucloud replay rebuild [--verify] [--data-dir DIR | --config FILE]``.

Without ``--verify``: delete the projection and replay the log from sequence 1 into it
(safe while a projector runs: the checkpoint guard makes it reload and follow).
With ``--verify``: replay up to the live checkpoint into a scratch prefix, print how the
live projection differs, exit 1 on any difference and 0 when they are identical.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nats.js.errors import NotFoundError

from ucloud.cli.main import run_async
from ucloud.client.locate import add_server_options, server_config
from ucloud.config import Config
from ucloud.errors import LogError
from ucloud.eventlog import EventLog
from ucloud.projections.rebuild import Difference, rebuild, verify
from ucloud.store import Store

_SHOWN = 200  # differences printed in full; the rest are counted


def register(verbs: Any) -> None:
    parser = verbs.add_parser(
        "rebuild", help="rebuild the projection in etcd from the log, or --verify it"
    )
    parser.add_argument(
        "--verify", action="store_true",
        help="compare the live projection with a replay; exit 1 on any difference",
    )
    add_server_options(parser)
    parser.add_argument(
        "--config", default=argparse.SUPPRESS, help="TOML config file naming the servers"
    )
    parser.set_defaults(func=run_async(_rebuild))


async def _rebuild(args: argparse.Namespace) -> int:
    config = server_config(args)
    event_log = await _connect_log(config)
    try:
        store = await Store.open(config.etcd)
        try:
            if args.verify:
                return await _verify(config, store, event_log)
            done = await rebuild(
                store, event_log, config.etcd.prefix, max_txn_ops=config.etcd.max_txn_ops
            )
        finally:
            await store.close()
    finally:
        await event_log.close()
    print(
        f"rebuilt {config.etcd.prefix} from sequence 1 to {done.checkpoint}: "
        f"{done.events} events, {done.poison} poison, {done.seconds:.2f}s "
        f"({done.rate:,.0f} events/s)"
    )
    return 0


async def _connect_log(config: Config) -> EventLog:
    event_log = await EventLog.connect(config.nats, name="ucloud-replay")
    try:
        await event_log.js.stream_info(config.nats.stream)
    except NotFoundError as exc:
        await event_log.close()
        raise LogError(
            f"no stream {config.nats.stream} on {config.nats.url}: nothing to replay"
        ) from exc
    return event_log


async def _verify(config: Config, store: Store, event_log: EventLog) -> int:
    prefix = config.etcd.prefix
    checkpoint, differences = await verify(
        store, event_log, prefix, max_txn_ops=config.etcd.max_txn_ops
    )
    if not differences:
        print(f"{prefix} equals a replay of sequences 1..{checkpoint}")
        return 0
    for difference in differences[:_SHOWN]:
        print(_describe(difference))
    if len(differences) > _SHOWN:
        print(f"... and {len(differences) - _SHOWN} more")
    print(
        f"{prefix} differs from a replay of sequences 1..{checkpoint} "
        f"in {len(differences)} keys",
        file=sys.stderr,
    )
    return 1


def _describe(difference: Difference) -> str:
    if difference.kind == "missing":
        return f"missing    {difference.key}  (the replay has it, the live projection not)"
    if difference.kind == "extra":
        return f"extra      {difference.key}  (only in the live projection)"
    assert difference.live is not None and difference.replayed is not None
    return (
        f"different  {difference.key}\n"
        f"    live:     {difference.live.decode(errors='replace')}\n"
        f"    replayed: {difference.replayed.decode(errors='replace')}"
    )
