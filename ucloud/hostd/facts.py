"""How hostd records facts: the envelope of each, and appending it once.

A fact hostd appends either answers something (a command, or the last event of a VM that
reconciling acts on: its id derived from that event's, so that a redelivery or a second
run appends nothing new) or is news no one asked for (a crash, a restart: a fresh id that
is its own causation and correlation). Both envelopes are made by ``Facts.envelope``, with
the time of the recorder's clock. ``append`` looks for the fact first when the command
being handled is a redelivery, beyond the log's de-duplication window.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ucloud.eventlog import EventLog
from ucloud.events import Cause, Event
from ucloud.ids import derive_id, new_id

REMEMBERED = 1024  # redelivered commands remembered (each answered within moments)


class Facts:
    """The facts of one hostd: who says them (``actor``), when (``clock``), and where."""

    def __init__(self, log: EventLog, actor: str, clock: Callable[[], datetime]) -> None:
        self.log = log
        self.actor = actor
        self.clock = clock
        self._redelivered: OrderedDict[str, None] = OrderedDict()  # the latest few commands

    def redelivered(self, command: str) -> None:
        """The command with id ``command`` was delivered again: its answers may be in the
        log already (past its de-duplication window), so look before appending them."""
        self._redelivered[command] = None
        self._redelivered.move_to_end(command)
        while len(self._redelivered) > REMEMBERED:
            self._redelivered.popitem(last=False)

    def cause(self, event: Event) -> Cause:
        """The cause of a reaction to ``event``, now."""
        return Cause.of(event, self.actor, self.clock())

    def envelope(self, ident: str, causation: str, correlation: str) -> dict[str, Any]:
        """The envelope of a fact of this hostd with id ``ident``, at the clock's time."""
        return {"id": ident, "at": self.clock(), "actor": self.actor, "causation": causation,
                "correlation": correlation}  # fmt: skip

    def answer(self, cause: Cause, purpose: str) -> dict[str, Any]:
        """The envelope of a fact answering ``cause``: its id derived from the cause's."""
        return self.envelope(derive_id(cause.causation, purpose), cause.causation,
                             cause.correlation)  # fmt: skip

    def after(self, event_id: str, purpose: str) -> dict[str, Any]:
        """The envelope of a fact that follows from the event ``event_id`` (which also
        starts its correlation): its id derived from that event's."""
        return self.envelope(derive_id(event_id, purpose), event_id, event_id)

    def fresh(self) -> dict[str, Any]:
        """The envelope of a fact no command asked for (a crash, a restart): a fresh id."""
        ident = new_id()
        return self.envelope(ident, ident, ident)

    async def append(self, event: Event) -> None:
        """Append ``event`` unless a redelivered command already led to it."""
        if event.causation in self._redelivered and await self.log.find(event):
            return
        await self.log.append(event)
