"""The in-memory broker and its publisher and subscriber.

The hot methods (``publish_nowait``, ``try_receive``, ``receive_sync`` …) are the engine's,
inherited from ``kincir_core``; this layer adds configuration, the asyncio methods, snapshots and
the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any

import kincir_core
from kincir_core import BrokerCore, BrokerState, Message, PublisherCore, SubscriberCore

from .._awaitable import DONE, Completed
from .._stats import PublisherStats, SubscriberStats
from .config import OVERFLOW_POLICIES, InMemoryConfig, Overflow, check_overflow, check_queue_size
from .errors import BrokerShutdown, NotSubscribed, TopicClosed
from .health import (
    BrokerHealth,
    StatsSnapshot,
    TopicInfo,
    broker_health,
    prometheus_text,
    stats_snapshot,
    topic_info,
)
from .patterns import PatternRegistry, compile_pattern, is_pattern, join_quietly, matches
from .wire import failed, round_trip, through_codec

__all__ = ["InMemoryBroker", "InMemoryPublisher", "InMemorySubscriber"]

_MODULE = "kincir.memory"
_log = logging.getLogger("kincir.memory")


class _Unset:
    """The default of an optional argument whose None means something."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _drain_pauses() -> Iterator[float]:
    """How long a drain sleeps between checks: from 0.5 ms, doubling, up to 50 ms."""
    pause = 0.0005
    while True:
        yield pause
        pause = min(pause * 2, 0.05)


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_cleanup(
    broker_ref: weakref.ref[InMemoryBroker], stop: threading.Event, interval: float
) -> None:
    # Event.wait refuses a timeout past threading.TIMEOUT_MAX: a longer interval is waited in
    # steps of that (centuries), which is the same in practice
    while not stop.wait(min(interval, threading.TIMEOUT_MAX)):
        broker = broker_ref()
        if broker is None or broker.is_shutdown():
            return
        expired = broker.expire_all()
        del broker
        if expired:
            _log.debug("TTL cleanup: %d (reader, message) pairs expired", expired)


def _topic_created(name: str) -> None:
    """The engine created topic ``name`` (publish, subscribe or configure_topic)."""
    _log.debug("topic %r created", name)


def _held(broker: BrokerCore) -> tuple[int, int, int, int]:
    """(topics, messages held, messages in flight, engine state) now; costs O(topics)."""
    snapshot = broker._snapshot()
    rows = snapshot.topics
    held = sum(r.queued + r.in_flight for r in rows)
    return len(rows), held, sum(r.in_flight for r in rows), snapshot.state


class InMemoryBroker(BrokerCore):
    """An in-process message broker: topics, fan-out, sequence numbers, TTL, bounded queues.

    Every method is safe to call from any thread and from any event loop. ``with`` and
    ``async with`` shut the broker down on exit.
    """

    __slots__ = ("_cleaner_stop", "_config", "_patterns")

    def __init__(self, config: InMemoryConfig | None = None) -> None:
        if config is None:
            config = InMemoryConfig()
        elif not isinstance(config, InMemoryConfig):
            raise TypeError(
                f"config must be an InMemoryConfig or None, not {type(config).__name__}"
            )
        super().__init__(
            max_queue_size=config.max_queue_size,
            max_topics=config.max_topics,
            persistence=config.enable_persistence,
            ordered=config.maintain_order,
            ttl=config.default_message_ttl,
            max_subscribers=config.max_subscribers_per_topic,
            overflow=config.overflow,
        )
        self._config = config
        self._patterns = PatternRegistry()
        # not bound methods of the broker: no reference cycle through the engine
        self._on_topic_creating = self._patterns.topic_creating
        self._on_new_topic = _topic_created
        self._cleaner_stop = threading.Event()
        if config.default_message_ttl is not None:
            weakref.finalize(self, self._cleaner_stop.set)
            threading.Thread(
                target=_run_cleanup,
                args=(weakref.ref(self), self._cleaner_stop, config.cleanup_interval),
                name="kincir-ttl-cleanup",
                daemon=True,
            ).start()

    @classmethod
    def with_default_config(cls) -> InMemoryBroker:
        """A broker with ``InMemoryConfig.default()``."""
        return cls(InMemoryConfig.default())

    @property
    def config(self) -> InMemoryConfig:
        """The configuration the broker was created with."""
        return self._config

    # -- topics ---------------------------------------------------------------------------------

    def configure_topic(
        self,
        topic: str,
        *,
        overflow: Overflow | None = None,
        max_queue_size: int | _Unset | None = _UNSET,
    ) -> TopicInfo:
        """Override the broker's overflow policy and/or capacity for one topic (created if
        needed); omitted settings keep their current value. ``max_queue_size=None`` makes the
        topic unbounded. A smaller capacity than the topic holds refuses (or drops, or blocks)
        new publishes until readers catch up; nothing held is dropped by the change itself.
        Returns the topic's TopicInfo."""
        if overflow is not None:
            check_overflow(overflow)
        if not isinstance(max_queue_size, _Unset):
            max_queue_size = check_queue_size(max_queue_size)
        kincir_core.validate_topic_name(topic)
        current = self._topic(topic).snapshot()
        policy = overflow if overflow is not None else current.overflow
        size = current.capacity if isinstance(max_queue_size, _Unset) else max_queue_size
        log = self._configure_topic(
            topic, OVERFLOW_POLICIES.index(policy), -1 if size is None else size
        )
        return topic_info(log.snapshot())

    # -- snapshots ------------------------------------------------------------------------------

    def health_check(self) -> BrokerHealth:
        """The broker's health now; costs O(topics)."""
        return broker_health(self._snapshot(), kincir_core.TOPIC_OVERHEAD)

    def list_topic_info(self) -> list[TopicInfo]:
        """A TopicInfo for every topic, oldest first."""
        return [topic_info(row) for row in self._snapshot().topics]

    def topic_info(self, name: str) -> TopicInfo:
        """The TopicInfo of one topic; raises TopicNotFound."""
        return topic_info(self._existing(name).snapshot())

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its held messages are dropped and its subscriptions end. Raises
        TopicNotFound."""
        with self._topic_creation:  # never in the middle of a pattern's joins
            super().delete_topic(name)
        _log.debug("topic %r deleted", name)

    def cleanup_idle_topics(self, idle: float | timedelta) -> list[str]:
        """Remove the topics with no subscriber and no activity for ``idle`` seconds; returns
        their names."""
        with self._topic_creation:  # never in the middle of a pattern's joins
            removed = super().cleanup_idle_topics(idle)
        if removed:
            _log.debug("idle-topic cleanup removed %d topics: %s", len(removed), removed)
        return removed

    def delete_group(self, topic: str, group: str) -> None:
        """Delete consumer group ``group`` of ``topic``: its unread and unsettled messages are
        released (dropped, unless the topic keeps them for its next reader) and its members'
        subscriptions to the topic end. Raises TopicNotFound / GroupNotFound."""
        cursor = self._group_cursor(topic, group) if type(topic) is str else None
        state = cursor.ack if cursor is not None else None
        if state is not None:
            # if the group is the topic's last reader, the log keeps only its unsettled
            # messages (not the settled ones behind them) for the next reader
            state.hold_unsettled()
        super().delete_group(topic, group)
        if state is not None:
            state.abandon()
        _log.debug("consumer group %r of topic %r deleted", group, topic)

    def metrics(self) -> str:
        """Every topic's counters and gauges in Prometheus text exposition format (serve it
        at ``/metrics``); available whether or not ``enable_stats`` is on. Costs O(topics)."""
        return prometheus_text(self._snapshot())

    def stats(self) -> StatsSnapshot | None:
        """A statistics snapshot, or None when ``enable_stats`` is off."""
        if not self._config.enable_stats:
            return None
        return stats_snapshot(self._snapshot())

    # -- lifecycle ------------------------------------------------------------------------------

    def join(self, topic: str, timeout: float | None = None) -> None:
        """Block until every reader of ``topic`` has received, and settled, every message
        published to it before this call (``queue.Queue.join``).

        Every reader counts: plain subscribers, consumer groups (durable ones without members
        and the pull group of ``consume`` too: they hold their messages) and acknowledging
        readers, whose messages count once acked, dead-lettered or dropped. With no reader, the
        messages held for the first one keep the join waiting (persistence on). Raises
        TopicNotFound, TimeoutError after ``timeout`` seconds, BrokerShutdown if the broker is
        force-shut down meanwhile; returns if the topic is deleted meanwhile (nothing is left
        to settle). On an event loop, await ``join_async`` instead.
        """
        seconds = kincir_core.check_timeout(timeout)
        if _loop_running_here():
            warnings.warn(
                "InMemoryBroker.join blocks this thread's running event loop, so its tasks "
                "cannot settle while it waits; use `await broker.join_async(topic)` in async code",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self._wait_settled(topic, seconds):
            raise TimeoutError(f"topic {topic!r} was not settled within {seconds} seconds")
        self._check_joined()

    async def join_async(self, topic: str, timeout: float | None = None) -> None:
        """``join`` for async code: awaits without blocking the loop."""
        seconds = kincir_core.check_timeout(timeout)
        settled = self._settled(topic)  # TopicNotFound before any wait
        if seconds is None:
            await settled
        else:
            try:
                async with asyncio.timeout(seconds):
                    await settled
            except TimeoutError:
                raise TimeoutError(
                    f"topic {topic!r} was not settled within {seconds} seconds"
                ) from None
        self._check_joined()

    def _check_joined(self) -> None:
        if self._state == BrokerState.STOPPED:
            raise BrokerShutdown("the broker was force-shut down during the join")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop new publishes and subscribes; subscribers drain what is queued, then end.

        Returns at once, or with ``timeout`` waits up to that many seconds for subscribers to
        drain (call it from a thread other than the ones draining; on an event loop, await
        ``shutdown_async`` instead). Returns True if every subscriber has read everything it was
        due. Idempotent.
        """
        seconds = kincir_core.check_timeout(timeout)
        if seconds is not None and _loop_running_here():
            warnings.warn(
                "InMemoryBroker.shutdown(timeout) blocks this thread's running event loop, so "
                "its tasks cannot drain while it waits; use "
                "`await broker.shutdown_async(timeout)` in async code",
                RuntimeWarning,
                stacklevel=2,
            )
        first = self._shutdown_begun()
        drained = self._drain(seconds)
        self._shutdown_finished(first, seconds, drained)
        return drained

    async def shutdown_async(self, timeout: float | None = None) -> bool:
        """``shutdown(timeout)`` for async code: awaits the drain without blocking the loop.

        Tasks on the same loop keep running while it waits, so they can drain. Returns True if
        every subscriber has read everything it was due within ``timeout`` seconds (None: check
        once, at once, as ``shutdown()`` does). Idempotent.
        """
        seconds = kincir_core.check_timeout(timeout)
        first = self._shutdown_begun()
        drained = self._drained()
        if not drained and seconds is not None:
            deadline = time.monotonic() + seconds
            for pause in _drain_pauses():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(pause, remaining))
                drained = self._drained()
                if drained:
                    break
        self._shutdown_finished(first, seconds, drained)
        return drained

    def _shutdown_begun(self) -> bool:
        """Begin the shutdown (idempotent); True when this call began it."""
        first = not self.is_shutdown()
        self._begin_shutdown()
        self._cleaner_stop.set()
        if first and _log.isEnabledFor(logging.INFO):
            topics, held, in_flight, _ = _held(self)
            _log.info(
                "broker shutdown begun: %d messages undelivered on %d topics (%d in flight)",
                held,
                topics,
                in_flight,
            )
        return first

    def _shutdown_finished(self, first: bool, seconds: float | None, drained: bool) -> None:
        # a repeated shutdown() reports only when it waited
        level = logging.INFO if first or seconds is not None else logging.DEBUG
        if _log.isEnabledFor(level):
            topics, held, in_flight, _ = _held(self)
            _log.log(
                level,
                "broker shutdown finished: drained=%s, %d messages undelivered on %d topics "
                "(%d in flight)",
                drained,
                held,
                topics,
                in_flight,
            )

    def _drain(self, seconds: float | None) -> bool:
        if seconds is None:
            return self._drained()
        deadline = time.monotonic() + seconds
        for pause in _drain_pauses():
            if self._drained():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
        raise AssertionError("unreachable: _drain_pauses never ends")

    def force_shutdown(self) -> None:
        """Stop at once: drop every queued message and wake every waiter with BrokerShutdown."""
        topics, held, in_flight, state = _held(self)
        super().force_shutdown()
        self._cleaner_stop.set()
        if state == BrokerState.STOPPED:  # already stopped: nothing was dropped now
            _log.debug("broker force_shutdown: already stopped")
        else:
            # WARNING when messages were lost, INFO when the broker held none
            _log.log(
                logging.WARNING if held else logging.INFO,
                "broker force_shutdown: %d messages dropped on %d topics (%d in flight)",
                held,
                topics,
                in_flight,
            )

    def __enter__(self) -> InMemoryBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> InMemoryBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "shut down" if self.is_shutdown() else "running"
        return f"<InMemoryBroker {state}, {self.topic_count()} topics>"


class InMemoryPublisher(PublisherCore):
    """Publishes to topics: one message at a time (``send``, ``send_sync``, ``send_nowait``:
    a payload, any object, and optional metadata) or batches (``publish``, ``publish_sync``,
    ``publish_nowait``: Message objects or payloads)."""

    __slots__ = ()

    def __new__(cls, broker: InMemoryBroker) -> InMemoryPublisher:
        # a broker with wire fidelity on gets the publisher that runs payloads through its
        # codec; without one, publishing stays the engine's own calls
        if (
            cls is InMemoryPublisher
            and isinstance(broker, InMemoryBroker)
            and broker.config.codec is not None
        ):
            cls = _CodecPublisher
        return super().__new__(cls)

    def stats(self) -> PublisherStats:
        """This publisher's own counts (kept whether or not ``enable_stats`` is on); the
        broker's are ``broker.stats()``."""
        published, refused = self._own_counts()
        return PublisherStats(published=published, refused=refused)

    def is_connected(self) -> bool:
        """True while the broker accepts publishes."""
        return not self.broker.is_shutdown()

    def close_topic(self, topic: str) -> Completed[None]:
        """Close ``topic`` for writing, now (``InMemoryBroker.close_topic``); may also be
        awaited."""
        self.broker.close_topic(topic)
        return DONE

    def __repr__(self) -> str:
        return f"<InMemoryPublisher connected={self.is_connected()}>"


class _CodecPublisher(InMemoryPublisher):
    """An ``InMemoryPublisher`` on a broker with ``InMemoryConfig.codec`` set: every payload is
    encoded and decoded before the engine sees the batch (see ``kincir.memory.wire``)."""

    __slots__ = ()

    def publish_nowait(self, topic: str, messages: Any) -> None:
        super().publish_nowait(topic, through_codec(self.broker.config.codec, messages))

    def publish_sync(self, topic: str, messages: Any, timeout: float | None = None) -> None:
        super().publish_sync(topic, through_codec(self.broker.config.codec, messages), timeout)

    def publish(
        self, topic: str, messages: Any, timeout: float | None = None
    ) -> Coroutine[Any, Any, None]:
        try:
            wired = through_codec(self.broker.config.codec, messages)
        except Exception as exc:
            return failed(exc)
        return super().publish(topic, wired, timeout)

    def send_nowait(
        self, topic: str, payload: Any, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().send_nowait(topic, round_trip(self.broker.config.codec, payload), metadata=metadata)

    def send_sync(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().send_sync(
            topic,
            round_trip(self.broker.config.codec, payload),
            metadata=metadata,
            timeout=timeout,
        )

    def send(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, None]:
        try:
            wired = round_trip(self.broker.config.codec, payload)
        except Exception as exc:
            return failed(exc)
        return super().send(topic, wired, metadata=metadata, timeout=timeout)


class InMemorySubscriber(SubscriberCore):
    """Receives the messages of one or more topics, in sequence order per topic.

    Use it from threads (``receive_sync``, ``for msg in sub``) or from asyncio (``await
    receive()``, ``async for msg in sub``). Iteration ends when the broker shuts down, the
    subscriber is closed, or every topic it reads was closed for writing and is drained.
    """

    __slots__ = ("_by_name", "_by_pattern")

    def __init__(self, broker: InMemoryBroker, group: str | None = None) -> None:
        """A subscriber on ``broker``; with ``group``, a member of that consumer group on every
        topic it subscribes to (members share one cursor: each message goes to one of them)."""
        super().__init__(broker, group)

    def subscribe(self, topic: str) -> Completed[None]:
        """Subscribe to ``topic`` (created if needed), now; may also be awaited.

        The topic's first reader receives the messages it holds; a later one starts at the end.
        Subscribing twice to one topic is a no-op. A pattern (``orders.*``: one segment,
        ``orders.>``: one or more trailing segments) subscribes to every matching topic, now
        and as they are created.
        """
        if is_pattern(topic):
            self._subscribe_pattern(topic)
        else:
            self._subscribe(topic)
            self._names().add(topic)  # subscribed by name: a pattern leaving keeps it
        return DONE

    _by_pattern: dict[str, tuple[str, ...]]
    _by_name: set[str]

    def _names(self) -> set[str]:
        """The topics subscribed by name (made on first use, like ``_patterns_map``)."""
        try:
            return self._by_name
        except AttributeError:
            self._by_name = set()
            return self._by_name

    def _patterns_map(self) -> dict[str, tuple[str, ...]]:
        """Pattern -> its compiled segments, in subscription order (made on first use: the ack
        subscriber's constructor does not run this class's)."""
        try:
            return self._by_pattern
        except AttributeError:
            self._by_pattern = {}
            return self._by_pattern

    def _subscribe_pattern(self, pattern: str) -> None:
        segments = compile_pattern(pattern)
        broker = self.broker
        # No topic is created or deleted meanwhile (delete_topic and cleanup_idle_topics take the
        # creation lock too), and no unsubscribe of the pattern comes between: each topic is
        # either joined here or as it is created, and none after the pattern was left.
        with broker._topic_creation:
            if self._closed:
                raise NotSubscribed("this subscriber is closed")
            if broker.is_shutdown():
                raise BrokerShutdown()
            self._patterns_map().setdefault(pattern, segments)
            broker._patterns.add(self, pattern, segments)
            self._patterned = True
            subscribed = set(self.subscribed_topics())
            for name in broker.list_topics():
                if name not in subscribed and matches(segments, name):
                    join_quietly(self._subscribe_existing, name)
        self._wake_receivers()

    def _subscribe_existing(self, topic: str) -> None:
        """Join ``topic`` for a pattern, unless it was deleted meanwhile (a pattern never
        creates a topic)."""
        self.broker._existing(topic)
        self._subscribe(topic)

    def _join_by_pattern(self, pattern: str, log: object) -> None:
        """The broker is creating the topic of ``log``, which ``pattern`` matches."""
        if pattern in self._patterns_map():
            join_quietly(self._join_created, log)

    def subscribed_patterns(self) -> list[str]:
        """The patterns this subscriber subscribed to, in subscription order."""
        return list(self._patterns_map())

    def _forget_patterns(self) -> None:
        """Drop every pattern (no topic is joined for them from now on)."""
        with self.broker._topic_creation:
            self.broker._patterns.remove(self, None)
            self._patterns_map().clear()
            self._patterned = False

    def unsubscribe(self, topic: str | None = None) -> Completed[None]:
        """Leave ``topic`` (a name or a pattern), or every topic and pattern when None, now;
        may also be awaited. Leaving a pattern leaves the topics it matches, except those
        another of this subscriber's patterns matches or that were subscribed by name."""
        if topic is None:
            self._forget_patterns()
            self._names().clear()
            self._unsubscribe(None)
        elif is_pattern(topic):
            by_pattern = self._patterns_map()
            with self.broker._topic_creation:
                segments = by_pattern.pop(topic, None)
                if segments is None:
                    raise NotSubscribed(f"this subscriber is not subscribed to {topic!r}")
                self.broker._patterns.remove(self, topic)
                self._patterned = bool(by_pattern)
                remaining = list(by_pattern.values())
            names = self._names()
            for name in self.subscribed_topics():
                if (
                    matches(segments, name)
                    and name not in names
                    and not any(matches(other, name) for other in remaining)
                ):
                    with contextlib.suppress(NotSubscribed):  # left concurrently
                        self._unsubscribe(name)
            self._wake_receivers()
        else:
            self._unsubscribe(topic)
            self._names().discard(topic)
        return DONE

    def close(self) -> Completed[None]:
        """Leave every topic for good; later receives raise NotSubscribed."""
        self._forget_patterns()
        self._names().clear()
        self._close()
        return DONE

    async def _receive_async(self, limit: int, timeout: float | None) -> list[Message]:
        got = self.try_receive_batch(limit)
        if got:
            return got
        if timeout is None:  # asyncio.timeout costs microseconds; only pay it when asked to
            return await self._wait_async(limit)
        async with asyncio.timeout(timeout):
            return await self._wait_async(limit)

    async def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Wait for at least one message, then return up to ``max_messages`` without waiting
        (0: an empty batch at once)."""
        limit = kincir_core.check_batch_size(max_messages, "max_messages")
        seconds = kincir_core.check_timeout(timeout)
        if not limit:
            return []
        return await self._receive_async(limit, seconds)

    def messages_lagged(self) -> int:
        """Messages this subscriber's live subscriptions lost to the drop_oldest policy while
        it was behind (a group's count is shared by its members)."""
        return sum(cursor.counts().lagged for cursor in self._attached_cursors())

    def stats(self) -> SubscriberStats:
        """This subscriber's own counts (kept whether or not ``enable_stats`` is on); the
        broker's are ``broker.stats()``."""
        return SubscriberStats(received=self._received_count(), lagged=self.messages_lagged())

    def is_connected(self) -> bool:
        """True while the broker is running and this subscriber is not closed."""
        return not self.broker.is_shutdown() and not self._closed

    def __del__(self) -> None:
        # A subscriber dropped without close() must not hold its topics' messages forever.
        self._release_on_gc()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except (BrokerShutdown, TopicClosed):
            raise StopAsyncIteration from None
        except NotSubscribed:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def __repr__(self) -> str:
        return f"<InMemorySubscriber topics={self.subscribed_topics()!r}>"


for _cls in (InMemoryBroker, InMemoryPublisher, InMemorySubscriber):
    _cls.__module__ = _MODULE
