"""Supervision of services: each runs as an asyncio task; a crash is logged and restarted.

Theory of operation:

- ``load()`` resolves every named service to its run function. A service whose module is
  missing or broken is *unavailable*: it is logged once with the reason and left out; the
  others run. (``ucloud up`` starts every registered service, some of which may not be
  written yet.)
- ``start()`` runs each available service as its own task with a fresh ``ServiceContext``
  that shares the supervisor's one ``EventLog``, one ``Store`` and one ``ProcessMetrics``
  (the process's ``/metrics``).
- A service that raises, or returns (a service works until cancelled), is restarted after
  ``Backoff.delay(failures)`` seconds: doubling from ``base_s``, capped at ``cap_s``. A run
  that lasted ``stable_s`` or longer starts the count afresh.
- ``stop()`` cancels every task and waits for them (at most ``stop_timeout_s``). The bound
  exceeds what a service takes to stop its children (an image build: 30 s, then SIGKILL),
  so that ``ucloud up`` never exits before what it started has ended; it stays below
  the units' ``TimeoutStopSec``.

The supervisor never opens or closes the connections: its caller does (``connected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ucloud.config import Config
from ucloud.errors import LogError, StoreError
from ucloud.eventlog import EventLog
from ucloud.metrics import ProcessMetrics
from ucloud.services import Service, ServiceContext, resolve
from ucloud.store import Store

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 45.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before restarting a crashed service."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1 = first crash in a row)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 62)
        return float(min(self.cap_s, self.base_s * (2**exponent)))

    def failures_after(self, failures: int, ran_s: float) -> int:
        """The crash count after a run of ``ran_s`` seconds that ended in a crash."""
        return 1 if ran_s >= self.stable_s else failures + 1


@dataclass
class ServiceState:
    """What the supervisor knows of one service, for logs and tests."""

    name: str
    service: Service | None = None
    unavailable: str = ""
    restarts: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs services sharing one event log and one store, restarting them when they crash."""

    def __init__(
        self,
        config: Config,
        event_log: EventLog,
        store: Store,
        names: Sequence[str],
        *,
        backoff: Backoff | None = None,
        resolver: Callable[[str], Service] = resolve,
        clock: Callable[[], float] = time.monotonic,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        metrics: ProcessMetrics | None = None,
    ) -> None:
        self.config = config
        self.event_log = event_log
        self.store = store
        self.backoff = backoff or Backoff()
        self.metrics = metrics or ProcessMetrics(event_log)
        self.states = {name: ServiceState(name) for name in names}
        self._resolver = resolver
        self._clock = clock
        self._stop_timeout_s = stop_timeout_s
        self._loaded = False

    def load(self) -> dict[str, str]:
        """Resolve every service; returns the unavailable ones with the reason."""
        self._loaded = True
        for state in self.states.values():
            try:
                state.service = self._resolver(state.name)
            except KeyError:
                state.unavailable = "not a registered service"
            except Exception as exc:  # an import of code being written may fail any way
                state.unavailable = f"{type(exc).__name__}: {exc}"
            if state.unavailable:
                log.error("service %s is unavailable: %s", state.name, state.unavailable)
        return {s.name: s.unavailable for s in self.states.values() if s.unavailable}

    @property
    def running(self) -> list[str]:
        return [s.name for s in self.states.values() if s.task is not None]

    def start(self) -> list[str]:
        """Start every available service (loading them first if needed); returns their names."""
        if not self._loaded:
            self.load()
        for state in self.states.values():
            if state.service is not None and state.task is None:
                state.task = asyncio.create_task(
                    self._keep_running(state), name=f"service:{state.name}"
                )
        names = self.running
        log.info("services running: %s", ", ".join(names) or "none")
        return names

    async def wait(self) -> None:
        """Wait until every service task has ended (normally: until ``stop()``)."""
        tasks = [s.task for s in self.states.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def stop(self) -> None:
        tasks = [s.task for s in self.states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout_s)
        for task in pending:
            log.error("%s did not stop within %.0fs", task.get_name(), self._stop_timeout_s)
        for state in self.states.values():
            state.task = None

    def _context(self, name: str) -> ServiceContext:
        return ServiceContext(
            config=self.config,
            log=self.event_log,
            store=self.store,
            name=name,
            metrics=self.metrics,
        )

    async def _keep_running(self, state: ServiceState) -> None:
        assert state.service is not None
        failures = 0
        while True:
            started = self._clock()
            try:
                await state.service(self._context(state.name))
                state.last_error = "returned"
                log.warning("service %s returned; services run until stopped", state.name)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    raise
                state.last_error = "CancelledError"
                log.error("service %s was cancelled from inside", state.name)
            except (LogError, StoreError) as exc:  # a server away or without quorum: said
                state.last_error = f"{type(exc).__name__}: {exc}"  # in one line, no traceback
                log.warning("service %s stopped: %s", state.name, exc)
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("service %s crashed", state.name)
            failures = self.backoff.failures_after(failures, self._clock() - started)
            delay = self.backoff.delay(failures)
            state.restarts += 1
            log.info("restarting %s in %.1fs (crash %d in a row)", state.name, delay, failures)
            await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def connected(config: Config, name: str) -> AsyncIterator[tuple[EventLog, Store]]:
    """One event log and one store connection for the block, closed afterwards."""
    event_log = await EventLog.connect(config.nats, name=name)
    try:
        store = await Store.open(config.etcd)
        try:
            yield event_log, store
        finally:
            await store.close()
    finally:
        await event_log.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (in the running loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
