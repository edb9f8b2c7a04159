"""The projection mirror moved to ``ucloud.projections.mirror`` (shared with metadata)."""

from ucloud.projections.mirror import Entry, Kind, Mirror

__all__ = ["Entry", "Kind", "Mirror"]
