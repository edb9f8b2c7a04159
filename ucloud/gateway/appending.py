"""Deciding on an aggregate and appending the decision, with optimistic concurrency.

Every user intent on an existing aggregate goes the same way: load the aggregate's events
and its last sequence, optionally wait until the projection has applied that sequence (so
that the mirror's view is the aggregate as loaded), decide, append what was decided
expecting that sequence, and wait until the projection shows it. Should the aggregate
move on in between, the append is a conflict: load and decide again, a few times, then
give up with the caller's refusal (a 409 saying "try again").

The decision is the caller's: it looks at the events (or the view they settled into),
raises an InputError to refuse, and returns a ``Decision``: the event to append (None when
there is nothing to do, such as deleting what is already being deleted) and what the
caller answers with. It appends nothing itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ucloud.errors import ConflictError, Refused
from ucloud.events.base import Event
from ucloud.events.stored import Stored
from ucloud.gateway.state import Gateway

T = TypeVar("T")
Settle = Literal["aggregate", "log"] | None
RETRIES = 5


@dataclass(frozen=True, slots=True)
class Decision(Generic[T]):
    event: Event | None  # None: nothing to append
    outcome: T  # what the caller answers with


Decide = Callable[[list[Stored]], Decision[T] | Awaitable[Decision[T]]]


async def decide_and_append(
    gw: Gateway,
    aggregate: str,
    ident: str,
    decide: Decide[T],
    *,
    busy: tuple[str, str],
    settle: Settle = "aggregate",
) -> T:
    """Decide on the aggregate ``aggregate``/``ident`` and append the decision with OCC.

    Before deciding, wait until the projection has applied the aggregate's last event
    (``settle="aggregate"``), the whole log as it stood (``"log"``: for decisions that
    look at other aggregates' views too), or not at all (None: the decision reads the
    events alone). ``decide`` may be a coroutine function when it must read the store.
    Returns the decision's outcome once the projection has applied what was appended;
    refuses with ``busy`` (field, reason) when the aggregate kept changing.
    """
    for _ in range(RETRIES):
        events, last = await gw.log.load(aggregate, ident)
        if settle == "aggregate":
            await gw.settled(last)
        elif settle == "log":
            await gw.settled(max(last, await gw.log.last_sequence()))
        decided = decide(events)
        if not isinstance(decided, Decision):
            decided = await decided
        if decided.event is None:
            return decided.outcome
        try:
            seq = await gw.log.append(decided.event, expected=last)
        except ConflictError:
            continue
        await gw.settled(seq)
        return decided.outcome
    raise Refused(*busy)
