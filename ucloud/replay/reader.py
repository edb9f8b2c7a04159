"""Scans of the event log for replays over millions of events.

A scan is a snapshot read (``EventLog.read_as``, one pull consumer on a connection of its
own, see ``ucloud.logreader``): the records from ``start`` (or ``start_time``) to the end
of the stream as it was when the scan began, or to ``stop``, that match any of
``subjects``. Events appended meanwhile are left for the next replay.

``scan`` yields records; ``scan_events`` yields ``(sequence, event)`` decoded straight
from the wire, what replays fold (a record object costs more than its decoding).

A scan never appends to the stream: it only asks the JetStream API for a consumer and
removes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from ucloud.errors import DecodeError
from ucloud.eventlog import EVERYTHING as _ALL
from ucloud.eventlog import EventLog, Record, record_of
from ucloud.events import Event, decode

EVERYTHING = (_ALL,)


async def scan(
    log: EventLog,
    *,
    subjects: Sequence[str] = EVERYTHING,
    start: int = 1,
    start_time: datetime | None = None,
    stop: int | None = None,
    batch: int = 1000,
) -> AsyncIterator[list[Record]]:
    """Batches of records in stream order matching any of ``subjects`` (logical names).

    From sequence ``start`` (or the first record at or after ``start_time``) to the end
    of the stream as it was when the scan began, or to ``stop``.
    """
    reads = log.read_as(
        record_of, subjects=subjects, start=start, start_time=start_time, stop=stop,
        max_batch=batch,
    )
    async with contextlib.aclosing(reads) as batches:  # the consumer goes with the scan
        async for records in batches:
            yield records


async def scan_events(
    log: EventLog,
    *,
    subjects: Sequence[str] = EVERYTHING,
    start: int = 1,
    start_time: datetime | None = None,
    stop: int | None = None,
    skipped: list[int] | None = None,
    batch: int = 1000,
) -> AsyncIterator[list[tuple[int, Event]]]:
    """Like ``scan``, batches of ``(sequence, event)``: what a replay folds.

    Records that are no known event are left out; their sequences are added to
    ``skipped``. No record objects are made, which is most of the cost of a record.
    """

    def event(seq: int, subject: str, ns: int, headers: bytes, data: bytes) -> (
        tuple[int, Event] | None
    ):
        try:
            return seq, decode(data)
        except DecodeError:
            if skipped is not None:
                skipped.append(seq)
            return None

    reads = log.read_as(
        event, subjects=subjects, start=start, start_time=start_time, stop=stop,
        max_batch=batch,
    )
    async with contextlib.aclosing(reads) as batches:
        async for events in batches:
            yield events
