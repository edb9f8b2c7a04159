"""The log of 2026-12, appended to a fresh stream, rebuilds into the projection it made then.

The committed log (``tests/data/log-<month>.jsonl``, see ``tests/data/make_old_log.py``) is
appended byte for byte, with its headers (the expected sequences aside), to the test's own
stream (under its own subject root) with ``EventLog.append_raw``;
``ucloud.projections.rebuild.rebuild`` replays it into the test's own etcd prefix; every
key under the prefix but the checkpoint must equal the committed projection byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.old_logs import CHECKPOINT, LOGS, expected_projection, read_log
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.projections.rebuild import rebuild
from ucloud.store import Store

pytestmark = pytest.mark.servers


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
@pytest.mark.parametrize("max_txn_ops", [128, 7])
async def test_the_old_log_rebuilds_into_the_projection_it_made(
    log: Path, max_txn_ops: int, event_log: EventLog, store: Store, config: Config
) -> None:
    lines = read_log(log)
    for line in lines:
        # the expected sequences were those of the stream the log was made in
        headers = {k: v for k, v in line.headers.items() if not k.startswith("Nats-Expected-")}
        await event_log.append_raw(line.subject, line.data, headers)
    assert await event_log.last_sequence() == len(lines)
    prefix = config.etcd.prefix
    try:
        rebuilt = await rebuild(store, event_log, prefix, max_txn_ops=max_txn_ops)
        items = await store.get_prefix(prefix)
    finally:
        await store.delete_prefix(prefix)

    assert (rebuilt.events, rebuilt.poison, rebuilt.checkpoint) == (len(lines), 0, len(lines))
    projection = {
        key[len(prefix) :]: value.decode()
        for key, value in items
        if not key[len(prefix) :].startswith(CHECKPOINT)
    }
    assert projection == expected_projection(log), (
        f"rebuilding from {log.name} no longer yields its projection byte for byte"
    )
