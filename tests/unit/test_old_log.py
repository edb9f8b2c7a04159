"""Logs written by older code still decode and fold into the projection they made then.

``tests/data/log-<month>.jsonl`` is a log as ``ucloud events export`` wrote it, and
``log-<month>.projection.json`` the projection that the code of that month rebuilt from it
(``tests/old_logs.py``; ``tests/data/make_old_log.py`` says how). Events are immutable:
these files are never regenerated. Only public entry points are used:
``ucloud.events.decode``, the pure ``ucloud.projections.apply.apply`` and
``ucloud.projections.views.decode_value`` (to feed each result back into the state, as the
projector does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.old_logs import DATA, LOGS, Line, expected_projection, read_log
from ucloud import events as ev
from ucloud.events import Event, decode
from ucloud.projections.apply import apply
from ucloud.projections.views import decode_value


def effect(op: object) -> tuple[str, bytes | None]:
    """What an operation of ``apply`` does: put bytes at a key, or (None) delete the key.

    Read by attribute, so that the operation types may move (the pure fold should not
    import them from the store)."""
    key, value = getattr(op, "key", None), getattr(op, "value", None)
    assert isinstance(key, str), f"{op!r} is neither a put nor a delete of one key"
    assert value is None or isinstance(value, bytes), f"{op!r} puts {value!r}, not bytes"
    return key, value


def fold(events: list[Event]) -> dict[str, str]:
    """The stored projection (relative key -> value as text) of folding ``events`` from
    nothing, each event's result fed back into the state."""
    state: dict[str, Any] = {}
    stored: dict[str, bytes] = {}
    for event in events:
        for key, value in map(effect, apply(state, event)):
            if value is None:
                state.pop(key, None)
                stored.pop(key, None)
            else:
                state[key] = decode_value(key, value)
                stored[key] = value
    return {key: value.decode() for key, value in sorted(stored.items())}


def decoded(lines: list[Line]) -> list[Event]:
    return [decode(line.data) for line in lines]


def test_there_is_an_old_log_with_its_projection() -> None:
    assert LOGS, f"no log-*.jsonl in {DATA}"
    for log in LOGS:
        assert expected_projection(log), f"{log.name}: an empty projection guards nothing"


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_every_record_decodes_into_the_event_it_was(log: Path) -> None:
    lines = read_log(log)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    for line in lines:
        event = decode(line.data)
        where = f"{log.name} seq {line.seq}"
        assert event.tag() == line.headers["Ucloud-Type"], where
        assert event.id == line.headers["Nats-Msg-Id"], where
        assert event.subject == line.subject, where


def test_the_old_logs_hold_every_event_type() -> None:
    seen = {line.headers["Ucloud-Type"] for log in LOGS for line in read_log(log)}
    missing = sorted(set(ev.BY_TAG) - seen)
    assert not missing, (
        f"event types no old log holds: {missing}. A new event type needs a log that "
        "holds it: write tests/data/make_<month>_log.py (see make_old_log.py) producing "
        "log-<month>.jsonl and its projection with today's code, run it once, commit both; "
        "never edit the old ones"
    )


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_folding_the_log_yields_the_projection_it_made(log: Path) -> None:
    replayed = fold(decoded(read_log(log)))
    expected = expected_projection(log)
    assert replayed == expected, (
        f"folding {log.name} no longer yields {log.name[:-6]}.projection.json byte for byte: "
        "a rule of the projection changed what stored events mean"
    )


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_folding_again_onto_the_result_changes_nothing(log: Path) -> None:
    events = decoded(read_log(log))
    state: Mapping[str, Any] = {
        key: decode_value(key, value.encode()) for key, value in expected_projection(log).items()
    }
    # the last event of every aggregate, applied once more to the final state
    last = {(e.aggregate, e.aggregate_id): e for e in events}
    for event in last.values():
        for key, value in map(effect, apply(state, event)):
            if value is None:
                assert key not in state, f"{event.tag()} {event.id} removes {key} again"
            else:
                assert decode_value(key, value) == state.get(key), (
                    f"{event.tag()} {event.id} changes {key} when applied twice"
                )
