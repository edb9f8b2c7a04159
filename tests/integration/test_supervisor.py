"""The supervisor: restarts with backoff, unavailable services, clean stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ucloud.config import Config
from ucloud.errors import StoreError
from ucloud.eventlog import EventLog
from ucloud.services import Service, ServiceContext
from ucloud.store import Store
from ucloud.supervisor import Backoff, Supervisor

FAST = Backoff(base_s=0.01, cap_s=0.04, stable_s=60.0)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (10_000, 30.0)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert Backoff(base_s=0.5, cap_s=30.0).delay(failures) == delay


def test_a_long_run_starts_the_crash_count_afresh() -> None:
    backoff = Backoff(stable_s=60.0)
    assert backoff.failures_after(5, ran_s=1.0) == 6
    assert backoff.failures_after(5, ran_s=60.0) == 1
    assert backoff.failures_after(0, ran_s=0.0) == 1


servers = pytest.mark.servers


@servers
async def test_a_crashing_service_is_restarted_and_stop_cancels_it(
    config: Config, event_log: EventLog, store: Store
) -> None:
    contexts: list[ServiceContext] = []
    settled = asyncio.Event()
    cleaned = asyncio.Event()

    async def flaky(ctx: ServiceContext) -> None:
        contexts.append(ctx)
        if len(contexts) <= 2:
            raise RuntimeError(f"crash {len(contexts)}")
        if len(contexts) == 3:
            return  # returning is a crash too: services run until stopped
        settled.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    supervisor = Supervisor(
        config, event_log, store, ["flaky"], backoff=FAST, resolver=lambda _: flaky
    )
    assert supervisor.start() == ["flaky"]
    await asyncio.wait_for(settled.wait(), 10)
    state = supervisor.states["flaky"]
    assert state.restarts == 3 and state.last_error == "returned"
    assert all(c.log is event_log and c.store is store and c.name == "flaky" for c in contexts)

    await supervisor.stop()
    assert cleaned.is_set()
    assert supervisor.running == []


@servers
async def test_an_unavailable_service_leaves_the_others_running(
    config: Config, event_log: EventLog, store: Store
) -> None:
    started = asyncio.Event()

    async def fine(ctx: ServiceContext) -> None:
        started.set()
        await asyncio.Event().wait()

    def resolver(name: str) -> Service:
        if name == "missing":
            raise ModuleNotFoundError("No module named 'ucloud.missing'")
        if name == "unknown":
            raise KeyError(name)
        return fine

    supervisor = Supervisor(
        config, event_log, store, ["missing", "fine", "unknown"], backoff=FAST,
        resolver=resolver,
    )
    unavailable = supervisor.load()
    assert unavailable == {
        "missing": "ModuleNotFoundError: No module named 'ucloud.missing'",
        "unknown": "not a registered service",
    }
    assert supervisor.start() == ["fine"]
    await asyncio.wait_for(started.wait(), 10)
    await supervisor.stop()
    assert supervisor.running == []


@servers
async def test_a_server_away_is_one_line_without_a_traceback(
    config: Config, event_log: EventLog, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []
    settled = asyncio.Event()

    async def waiting(ctx: ServiceContext) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise StoreError("etcd transaction of 5 operations: UNAVAILABLE (request timed out)")
        if len(runs) == 2:
            raise RuntimeError("a bug")
        settled.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(
        config, event_log, store, ["waiting"], backoff=FAST, resolver=lambda _: waiting
    )
    with caplog.at_level(logging.INFO, "ucloud.supervisor"):
        supervisor.start()
        await asyncio.wait_for(settled.wait(), 10)
        await supervisor.stop()
    away, bug = (r for r in caplog.records if r.levelno >= logging.WARNING)
    assert away.getMessage() == ("service waiting stopped: etcd transaction of 5 operations: "
                                 "UNAVAILABLE (request timed out)")
    assert away.exc_info is None
    assert bug.exc_info is not None  # a bug keeps its traceback
