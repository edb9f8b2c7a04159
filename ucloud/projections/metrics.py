"""What the projector has done, counted for whoever shows the figures.

Apart from the projector so that what carries the figures (``ServiceContext.shared``)
needs nothing of the projector itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProjectorMetrics:
    """What the projector has done, for /metrics: read it, never write it."""

    checkpoint: int = 0  # the last stream sequence applied and committed
    applied: int = 0  # events folded (poison excluded)
    poison: int = 0  # records recorded under _poison/
    transactions: int = 0
    reloads: int = 0  # times the checkpoint moved under this projector

    def lag(self, last_seq: int) -> int:
        """Events in the log (``last_seq`` = the stream's last sequence) not yet applied."""
        return max(0, last_seq - self.checkpoint)
