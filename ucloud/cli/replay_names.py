"""What an identifier given to ``replay`` and ``events`` means: an id, else a name.

The gateway decides this for its requests (``ucloud.gateway.lookup``: an id, else the
caller's own name); these commands read the log as an operator, for every owner, and
also about resources long deleted, so they ask the log itself: an aggregate with events
under that id is meant; otherwise the one whose creating event (``vm.requested``, ...)
carried that name, of ``owner`` when given. An identifier that means nothing is
``NotFound``; a name several owners use is ``InputError`` naming them (``--owner``
chooses). A user is named by its name, which is its id.
"""

from __future__ import annotations

from ucloud.errors import InputError, NotFound
from ucloud.eventlog import EventLog
from ucloud.events import AGGREGATES, subject
from ucloud.events.base import valid_token
from ucloud.replay.reader import scan_events

# The event that gives each named aggregate its name (a field ``name`` and ``owner``).
NAMING_EVENTS = {"vm": "requested", "net": "requested", "image": "requested", "file": "uploaded"}


async def resolve(
    log: EventLog, aggregate: str, ident: str, option: str, owner: str | None = None
) -> str:
    """The id of the ``aggregate`` that ``ident`` (an id or a name) means."""
    if valid_token(ident):
        stored, _ = await log.load(aggregate, ident)
        if stored:
            return ident
    if aggregate == "user" or aggregate not in NAMING_EVENTS:
        raise NotFound(option, f"no {aggregate} {ident} in the log")
    matches = await named(log, aggregate, ident, owner)
    if not matches:
        whose = f" of {owner}" if owner else ""
        raise NotFound(option, f"no {aggregate} with the id or name {ident}{whose} in the log")
    if len(set(matches.values())) > 1 and owner is None:
        owners = ", ".join(sorted(set(matches.values())))
        raise InputError(option, f"{aggregate}s named {ident} belong to {owners}: add --owner")
    if len(matches) > 1:  # one owner named two (one after the other was deleted): the last
        return list(matches)[-1]
    return next(iter(matches))


async def named(
    log: EventLog, aggregate: str, name: str, owner: str | None
) -> dict[str, str]:
    """id -> owner of every ``aggregate`` the log says was created with ``name``."""
    wanted = subject(aggregate, "*", NAMING_EVENTS[aggregate])
    found: dict[str, str] = {}
    async for events in scan_events(log, subjects=(wanted,)):
        for _, event in events:
            if getattr(event, "name", None) != name:
                continue
            event_owner = str(getattr(event, "owner", ""))
            if owner is None or event_owner == owner:
                found[event.aggregate_id] = event_owner
    return found


async def check_user(log: EventLog, name: str, option: str) -> None:
    """NotFound unless the log knows the user ``name``: its own events, or a VM it owns
    (a log imported without its users still names the owners)."""
    if valid_token(name):
        stored, _ = await log.load("user", name)
        if stored:
            return
    async for events in scan_events(log, subjects=(subject("vm", "*", "requested"),)):
        if any(getattr(event, "owner", None) == name for _, event in events):
            return
    raise NotFound(option, f"no user {name} in the log")


async def resolve_any(log: EventLog, ident: str, option: str) -> tuple[str, str]:
    """(aggregate, id) of what ``ident`` means when no aggregate is given: the aggregates
    with events under that id first, then those created with that name."""
    if valid_token(ident):
        for aggregate in AGGREGATES:
            stored, _ = await log.load(aggregate, ident)
            if stored:
                return aggregate, ident
    found = [
        (aggregate, aggregate_id)
        for aggregate in NAMING_EVENTS
        for aggregate_id in await named(log, aggregate, ident, None)
    ]
    if not found:
        raise NotFound(option, f"no id or name {ident} in the log")
    if len({aggregate for aggregate, _ in found}) > 1 or len(found) > 1:
        which = ", ".join(f"{aggregate} {aggregate_id}" for aggregate, aggregate_id in found)
        raise InputError(option, f"{ident} names several: {which}; give --aggregate or an id")
    return found[0]
