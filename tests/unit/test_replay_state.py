"""The state at a time and the differences between two, folded from the committed old log."""

from __future__ import annotations

from datetime import timedelta

from tests.old_logs import FIRST, read_log
from tests.unit.test_old_log import fold
from ucloud.cli.replay_state import render_diff, render_state
from ucloud.events import Event, decode
from ucloud.replay.state import StateAt, StateDiff


def _events() -> list[Event]:
    return [decode(line.data) for line in read_log(FIRST)]


def _at(events: list[Event], index: int) -> StateAt:
    state = StateAt(events[index].at)
    for seq, event in enumerate(events, 1):
        state.feed(seq, event)
    return state


def test_the_state_at_a_middle_time_is_the_projection_of_the_log_up_to_then() -> None:
    events = _events()
    middle = len(events) // 2
    state = _at(events, middle)
    last = max(i for i, e in enumerate(events) if e.at <= events[middle].at)
    assert state.last_seq == last + 1
    projected = fold(events[: last + 1])  # the fold test_old_log checks against the old code
    shown = {k for k in projected if k.startswith(("vm/", "host/", "net/"))}
    views = state.views()
    assert {f"vm/{v['id']}" for v in views["vms"]} | {f"host/{h['id']}" for h in views["hosts"]} \
        | {f"net/{n['id']}" for n in views["networks"]} == shown
    text = render_state(views, "table")
    assert "VMS" in text and "HOSTS" in text and "NETWORKS" in text
    for vm in views["vms"]:
        assert vm["name"] in text and vm["owner"] in text


def test_the_end_of_the_log_is_the_committed_projection() -> None:
    events = _events()
    state = _at(events, max(range(len(events)), key=lambda i: events[i].at))
    assert len(state.views()["vms"]) == sum(1 for k in fold(events) if k.startswith("vm/"))


def test_an_event_stamped_earlier_than_the_one_before_is_still_folded() -> None:
    events = _events()
    t = events[10].at
    late = [*events[:10], events[11].__class__(**{  # an event after t, then one before
        **{f: getattr(events[11], f) for f in events[11].__struct_fields__},
        "at": t + timedelta(hours=1)}), events[10]]
    state = StateAt(t)
    for seq, event in enumerate(late, 1):
        state.feed(seq, event)
    assert state.last_seq == len(late) and not state.pending


def test_a_diff_names_what_changed_and_who_changed_it() -> None:
    events = _events()
    t1, t2 = events[len(events) // 3].at, events[len(events) // 2].at
    diff = StateDiff(t1, t2)
    for seq, event in enumerate(events, 1):
        diff.feed(seq, event)
    differences = diff.differences()
    assert differences
    for d in differences:
        assert d.before != d.after and d.by
        assert all(t1 < c.event.at <= t2 for c in d.by)
        assert all(diff.before.last_seq < c.seq <= diff.after.last_seq for c in d.by)
    created = [d for d in differences if d.before is None and d.key.startswith("vm/")]
    assert created and all(any(c.event.tag() == "vm.requested" for c in d.by) for d in created)
    text = render_diff(differences, "table")
    assert "ACTOR" in text and any(c.event.actor in text for d in differences for c in d.by)
