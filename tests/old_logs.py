"""The old logs kept in ``tests/data``: each ``log-<month>.jsonl`` with its projection.

``log-<month>.jsonl`` is a log as ``ucloud events export`` wrote it, one record a line;
``log-<month>.projection.json`` maps each key the code of that month projected from it
(relative to the prefix, the checkpoint aside) to its stored value as text. The scripts
beside them (``make_old_log.py``) say how they were made. Their format is frozen: this
module reads them without the exporter's code.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
LOGS = sorted(DATA.glob("log-*.jsonl"))
FIRST = DATA / "log-2026-12.jsonl"  # the first log kept: every event type of its day
CHECKPOINT = "_checkpoint/"


@dataclass(frozen=True)
class Line:
    """One record of an export: sequence, logical subject, headers and body bytes."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


def read_log(path: Path) -> list[Line]:
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(text)
        data = (
            record["data"].encode() if "data" in record
            else base64.b64decode(record["data_base64"])
        )
        out.append(Line(record["seq"], record["subject"], record["headers"], data))
    return out


def expected_projection(log: Path) -> dict[str, str]:
    """The committed projection of ``log``: relative key -> stored value as text."""
    path = log.with_name(log.name.removesuffix(".jsonl") + ".projection.json")
    expected: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return expected
