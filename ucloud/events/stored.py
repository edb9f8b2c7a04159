"""An event as the log holds it: its stream sequence beside it.

Pure code folds these (the VM lifecycle, hostd's rules) without importing the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from ucloud.events.base import Event


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    event: Event
