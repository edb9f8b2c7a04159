"""Durable consumers: the loop around every handler.

Theory of operation. A handler is a durable pull consumer on the stream with explicit
acks. The runner creates the consumer (or updates it to the given subjects and settings),
fetches batches of ``settings.batch`` messages and handles them one by one, in stream
order, then acks each. What it decides per message:

- the message does not decode (bad JSON, unknown tag, wrong types): it is recorded as a
  ``PoisonView`` at ``<poison_prefix><seq>``, counted, logged and acked. It can never
  succeed, so it must not hold up the messages behind it;
- the handler raises: the message is nak'ed with the backoff delay for its delivery
  count (``backoff_s[delivery - 1]``, the last value repeating), and redelivered later
  while the consumer goes on with the next ones;
- the handler raises on the last allowed delivery (``max_deliver``): the message is
  recorded as poison and terminated, so a handler that always fails never blocks the
  consumer forever.

The backoff is not put on the consumer itself: nats-server would then replace
``ack_wait`` by the first backoff value, and a slow handler would see its message
redelivered while still working on it. ``ack_wait`` stays what the settings say; while a
batch is being handled the runner tells the server every ``ack_wait / 3`` that the
messages not yet settled are in progress. When the runner is cancelled it naks what it
has not settled, so another runner gets those messages at once; when it dies without
that, the server redelivers them after ``ack_wait``. Either way a handler may see a
message again: handlers are idempotent (``reacting`` derives ids from the cause, so the
log's de-duplication drops a repeated append).

A fetch that finds nothing is normal idleness. While NATS is away nats-py reconnects on
its own; the runner keeps fetching (fetches time out meanwhile) and binds the consumer
again if the server lost it. Only a closed connection ends the runner, with a LogError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

import msgspec
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError

from ucloud.config import ConsumerConfig
from ucloud.errors import ConfigError, DecodeError, InputError, LogError, StoreError
from ucloud.eventlog import EventLog
from ucloud.events import Event, decode
from ucloud.projections.views import PoisonView
from ucloud.store import Store

logger = logging.getLogger(__name__)

Handler = Callable[[Event, int, int], Awaitable[None]]
"""A handler: the event, its stream sequence, how often it has been delivered (1 the
first time; more when the runner redelivers it, and the handler looks for what it
appended before)."""

IDLE_WAIT_S = 5.0  # a fetch that finds nothing for this long is normal idleness
RETRY_S = 1.0  # pause after a server or connection error before trying again
SAY_EVERY_S = 60.0  # one warning a minute per kind of trouble while a server stays away


class Quieted:
    """Warnings about a server that stays away: the first at once, then one per kind every
    ``every_s`` seconds saying how many were held back; retries go on at their own pace."""

    def __init__(self, every_s: float = SAY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.every_s = every_s
        self.clock = clock
        self._said: dict[str, tuple[float, int]] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        now = self.clock()
        said, held = self._said.get(kind, (-math.inf, 0))
        if now - said < self.every_s:
            self._said[kind] = (said, held + 1)
            return
        self._said[kind] = (now, 0)
        more = f" ({held} more since {self.every_s:g}s ago)" if held else ""
        logger.warning(message + more, *args)
_DURABLE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass
class ConsumerCounters:
    """What a runner has done since the process started, for metrics."""

    processed: int = 0  # handled and acked
    failed: int = 0  # handler raised (each delivery counts)
    poison: int = 0  # recorded under the poison prefix


_COUNTERS: dict[str, ConsumerCounters] = {}


def counters(durable: str) -> ConsumerCounters:
    """The counters of the runner(s) of ``durable`` in this process."""
    return _COUNTERS.setdefault(durable, ConsumerCounters())


def all_counters() -> dict[str, dict[str, int]]:
    """Every durable's counters, as plain numbers."""
    return {durable: asdict(c) for durable, c in sorted(_COUNTERS.items())}


def consumer_config(
    durable: str, wire_subjects: Sequence[str], settings: ConsumerConfig
) -> js_api.ConsumerConfig:
    """The JetStream consumer for ``durable``; a ConfigError or InputError names what is wrong."""
    if not _DURABLE.match(durable):
        raise InputError("durable", f"{durable!r} is not a valid consumer name")
    if not wire_subjects:
        raise InputError("subjects", "at least one subject is needed")
    if settings.batch < 1:
        raise ConfigError("consumer.batch", "must be at least 1")
    if settings.ack_wait_s <= 0:
        raise ConfigError("consumer.ack_wait_s", "must be positive")
    if settings.max_deliver == 0 or settings.max_deliver < -1:
        raise ConfigError("consumer.max_deliver", "must be at least 1 (or -1: unlimited)")
    if any(delay < 0 for delay in settings.backoff_s):
        raise ConfigError("consumer.backoff_s", "delays must not be negative")
    several = len(wire_subjects) > 1
    return js_api.ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        filter_subject=None if several else wire_subjects[0],
        filter_subjects=list(wire_subjects) if several else None,
        max_ack_pending=max(1000, settings.batch * 4),
    )


def retry_delay(backoff: Sequence[float], delivered: int) -> float:
    """Seconds before the next delivery after the ``delivered``-th one failed."""
    if not backoff:
        return 0.0
    return backoff[min(max(delivered, 1), len(backoff)) - 1]


def is_last_delivery(delivered: int, max_deliver: int) -> bool:
    return max_deliver > 0 and delivered >= max_deliver


async def run_consumer(
    log: EventLog,
    store: Store,
    *,
    durable: str,
    subjects: Sequence[str],
    handle: Handler,
    settings: ConsumerConfig,
    poison_prefix: str,
    name: str,
) -> None:
    """Feed the events of ``subjects`` (logical, e.g. ``ucloud.evt.vm.*.requested``) to
    ``handle`` through the durable consumer ``durable``; runs until cancelled."""
    config = consumer_config(durable, [log.physical(s) for s in subjects], settings)
    runner = _Runner(log, store, handle, settings, poison_prefix, name, counters(durable))
    while True:
        sub = await _bind(log, config, runner.quiet)
        try:
            await runner.pump(sub)
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        await asyncio.sleep(RETRY_S)


def reacting(log: EventLog, react: Callable[[Event], Sequence[Event]]) -> Handler:
    """A handler around a pure reaction: appends each event ``react`` returns.

    ``react`` derives the ids of its events from the cause (``Cause.envelope``), so a
    redelivered cause appends nothing new: the log drops the duplicate ids, and past its
    de-duplication window a redelivery skips the events already in their aggregate.
    """

    async def handle(event: Event, seq: int, delivered: int) -> None:
        for reaction in react(event):
            if delivered > 1 and await log.find(reaction):
                continue
            await log.append(reaction)

    return handle


async def _bind(
    log: EventLog, config: js_api.ConsumerConfig, quiet: Quieted
) -> JetStreamContext.PullSubscription:
    """Create or update the consumer and subscribe to it, waiting out a server away."""
    durable = config.durable_name
    while True:
        try:
            await log.js.add_consumer(log.stream, config)
            return await log.js.pull_subscribe_bind(durable=durable, stream=log.stream)
        except ConnectionClosedError as exc:
            raise LogError(f"consumer {durable}: the NATS connection is closed") from exc
        except APIError as exc:
            raise LogError(f"consumer {durable} on {log.stream}: {exc}") from exc
        except (NatsError, TimeoutError, OSError) as exc:
            quiet.warn("bind", "consumer %s: cannot bind (%r), retrying every %gs", durable,
                       exc, RETRY_S)
            await asyncio.sleep(RETRY_S)


class _Runner:
    def __init__(
        self,
        log: EventLog,
        store: Store,
        handle: Handler,
        settings: ConsumerConfig,
        poison_prefix: str,
        name: str,
        counters: ConsumerCounters,
    ) -> None:
        self.log = log
        self.store = store
        self.handle = handle
        self.settings = settings
        self.poison_prefix = poison_prefix
        self.name = name
        self.counters = counters
        self.quiet = Quieted()

    async def pump(self, sub: JetStreamContext.PullSubscription) -> None:
        """Fetch and handle batches; returns when the consumer must be bound again."""
        while True:
            try:
                msgs = await sub.fetch(self.settings.batch, timeout=IDLE_WAIT_S)
            except TimeoutError:
                continue
            except ConnectionClosedError as exc:
                raise LogError(f"consumer of {self.name}: the NATS connection is closed") from exc
            except APIError as exc:
                self.quiet.warn("refused", "%s: fetch refused (%s), binding the consumer again",
                                self.name, exc)
                return
            except (NatsError, OSError) as exc:
                self.quiet.warn("fetch", "%s: fetch failed (%r), retrying every %gs",
                                self.name, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            try:
                await self.batch(msgs)
            except ConnectionClosedError as exc:
                raise LogError(f"consumer of {self.name}: the NATS connection is closed") from exc
            except NatsError as exc:  # an ack did not go out: the message comes again
                logger.warning("%s: cannot settle a message (%r)", self.name, exc)

    async def batch(self, msgs: list[Msg]) -> None:
        unsettled = deque(msgs)
        keeper = asyncio.create_task(self._keep_alive(unsettled))
        try:
            while unsettled:
                await self.one(unsettled[0])
                unsettled.popleft()
        except BaseException:
            for msg in unsettled:  # not settled: let another runner have them now
                with contextlib.suppress(NatsError):
                    await msg.nak()
            raise
        finally:
            keeper.cancel()

    async def _keep_alive(self, unsettled: deque[Msg]) -> None:
        while True:
            await asyncio.sleep(self.settings.ack_wait_s / 3)
            for msg in list(unsettled):
                with contextlib.suppress(NatsError):
                    await msg.in_progress()

    async def one(self, msg: Msg) -> None:
        meta = msg.metadata
        seq, delivered = int(meta.sequence.stream), int(meta.num_delivered)
        try:
            event = decode(msg.data)
        except DecodeError as exc:
            logger.error("%s: message %d does not decode: %s", self.name, seq, exc)
            await self.poison(msg, seq, delivered, f"does not decode: {exc}", msg.ack)
            return
        try:
            await self.handle(event, seq, delivered)
        except Exception as exc:
            self.counters.failed += 1
            if is_last_delivery(delivered, self.settings.max_deliver):
                logger.error(
                    "%s: event %d (%s) failed on its last delivery (%d): %r",
                    self.name, seq, event.tag(), delivered, exc, exc_info=exc,
                    extra=self.fields(event, seq),
                )
                reason = f"handler failed on delivery {delivered}: {exc!r}"
                await self.poison(msg, seq, delivered, reason, msg.term)
                return
            delay = retry_delay(self.settings.backoff_s, delivered)
            logger.warning(
                "%s: event %d (%s) failed on delivery %d, retrying in %gs: %r",
                self.name, seq, event.tag(), delivered, delay, exc,
                extra=self.fields(event, seq),
            )
            await msg.nak(delay=delay or None)
            return
        await msg.ack()
        self.counters.processed += 1
        logger.debug("%s: handled event %d (%s)", self.name, seq, event.tag(),
                     extra=self.fields(event, seq))

    def fields(self, event: Event, seq: int) -> dict[str, object]:
        """The ``extra=`` of a log line about ``event`` (JSON logs show them as fields)."""
        return {
            "consumer": self.name, "event_id": event.id, "seq": seq, "event": event.tag(),
            "correlation": getattr(event, "correlation", "") or "",
        }

    async def poison(
        self, msg: Msg, seq: int, delivered: int, error: str,
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        view = PoisonView(
            seq=seq, subject=self.log.logical(msg.subject), error=error[:4000], seen_by=self.name
        )
        try:
            await self.store.put(f"{self.poison_prefix}{seq}", msgspec.json.encode(view))
        except StoreError as exc:
            logger.error("%s: cannot record poison message %d (%s), retrying", self.name, seq, exc)
            await msg.nak(delay=retry_delay(self.settings.backoff_s, delivered) or RETRY_S)
            return
        await settle()
        self.counters.poison += 1
