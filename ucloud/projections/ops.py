"""The operations of the projection store, as plain data.

Pure code (a projection's apply step) returns these; ``ucloud/store.py`` carries them
out in etcd. Nothing here does I/O, so the pure parts can import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    prefix: str


Op = Put | Delete | DeletePrefix
