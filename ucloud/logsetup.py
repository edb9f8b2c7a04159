"""How a service process logs: to stderr, as text for people or one JSON object a line.

``--log-format`` (``ucloud up``, ``ucloud serve``) or ``[log] format`` chooses. A JSON line
holds ``time``, ``level``, ``logger``, ``message``, the process's ``service`` and ``host``,
and whatever a log call passes in ``extra=``: the consumer loop passes the event it is
handling (``event_id``, ``seq``, ``event``, ``correlation``, ``consumer``; see
``event_fields``). An exception is in ``exc_info``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=FORMATS,
        help="stderr as text for people or one JSON object a line (default: [log] format)",
    )


def configure(log_format: LogFormat, *, verbose: bool, service: str) -> None:
    """Replace the root logger's handlers by one on stderr in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, service))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )


def formatter(log_format: LogFormat, service: str) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT)
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"service": service, "host": socket.gethostname()},
        json_default=str,
    )
