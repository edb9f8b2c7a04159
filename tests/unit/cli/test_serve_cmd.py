"""A service started while JetStream has no quorum waits for it, saying so once a minute
(not once a retry), and fails at once on anything else."""

from __future__ import annotations

import logging

import pytest
from nats.js.errors import BadRequestError, ServiceUnavailableError

from ucloud.cli.serve_cmd import stream_ready


class _Log:
    """An event log whose stream becomes available after ``failures`` attempts."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ServiceUnavailableError(
            code=503, err_code=10008, description="JetStream system temporarily unavailable")
        self.attempts = 0

    async def ensure_stream(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error


async def test_it_retries_until_the_stream_is_there_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = _Log(failures=20)
    with caplog.at_level(logging.WARNING, "ucloud.cli.serve_cmd"):
        await stream_ready(log, "filescan", retry_s=0.001, say_every_s=60)  # type: ignore[arg-type]
    assert log.attempts == 21
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["filescan: JetStream unavailable (JetStream system temporarily "
                     "unavailable); retrying every 0.001s"]


async def test_another_error_is_not_waited_for() -> None:
    log = _Log(failures=1, error=BadRequestError(code=400, description="replicas > 1"))
    with pytest.raises(BadRequestError):
        await stream_ready(log, "filescan", retry_s=0.001)  # type: ignore[arg-type]
    assert log.attempts == 1
