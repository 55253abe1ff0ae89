# The engine's Python-visible surface: the compiled _broker.pyx and its pure-Python twin
# _broker_py.py both match this stub (tests/test_typing.py checks the three agree), and
# `mypy --strict` checks kincir.memory against it (.ci/lint: mypy covers src/ and kincir_core/).
#
# Public names carry the broker's behaviour; underscore names are the *internal API* of the engine:
# called only by kincir.memory (the Python layer that subclasses BrokerCore, PublisherCore and
# SubscriberCore), never by users. Each is documented here. What crosses the boundary is typed:
# rows are NamedTuples (kincir_core._rows), status codes IntEnums (kincir_core._codes), errors the
# classes of kincir_core._errors, raised directly by both engines. The public names' signatures
# are part of the public typing surface (tests/typing) and stay as they are.
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from typing import Any

from typing_extensions import Buffer

from ._message import Message
from ._rows import BrokerSnapshot, CursorCounts, TopicRow

MESSAGE_OVERHEAD: int
TOPIC_OVERHEAD: int
MAX_TOPIC_LENGTH: int
OVERFLOW_POLICIES: tuple[str, ...]

def validate_topic_name(name: Any) -> str:
    """``name`` if it is a valid topic name; TypeError (not a str) or InvalidTopicName."""

def validate_group_name(name: Any) -> str | None:
    """``name`` (None, or a valid consumer group name); TypeError or ValueError."""

def check_timeout(timeout: Any) -> float | None:
    """A timeout in seconds (None: no limit; a timedelta is converted); TypeError/ValueError."""

def check_count(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1 (``name`` names it in the error)."""

def check_batch_size(value: Any, name: str) -> int:
    """``value`` if it is an int >= 0 (``name`` names it in the error)."""

def monotonic() -> float:
    """The engine's monotonic clock, in seconds (TTL and ack deadlines are measured on it)."""

def wall_ms() -> int:
    """Unix time in milliseconds, moved by ``_advance_clock`` like ``monotonic``."""

def _advance_clock(seconds: float) -> None:
    """Tests only: move the engine's clocks forward by ``seconds`` without sleeping."""

def _reset_clock() -> None:
    """Tests only: undo every ``_advance_clock``."""

class Waiter:
    """A one-shot wake-up registered on a topic (base of SyncWaiter and AsyncWaiter)."""

class SyncWaiter(Waiter):
    """Wakes a thread blocked in a ``*_sync`` call."""

class AsyncWaiter(Waiter):
    """Wakes an asyncio receive or publish by completing ``future`` on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None: ...

class Cursor:
    """A reader's position in one topic log: a plain subscriber's own, or a consumer group's
    (shared by its members). The acknowledgement layer (kincir.memory.ack) reads and settles
    through it."""

    #: The acknowledgement layer's state for this cursor (an ``_AckState`` of
    #: kincir.memory.ack, shared by a group's members), or None until it is first needed. The
    #: engine only stores it: its type belongs to the layer above.
    ack: Any
    @property
    def log(self) -> TopicLog:
        """The topic log this cursor reads."""

    @property
    def attached(self) -> bool:
        """False once the cursor left its log (unsubscribed, group or topic deleted)."""

    @property
    def acking(self) -> bool:
        """True for an acknowledging reader: delivered messages stay in flight until settled."""

    @property
    def group(self) -> str | None:
        """The consumer group's name, or None for a plain reader."""

    @property
    def members(self) -> int:
        """Attached subscribers (0: the pull group, or a durable group without members)."""

    def pending(self) -> int:
        """Messages not yet read by this cursor."""

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages for this reader (the acknowledgement layer's read: in
        flight until settled)."""

    def settle(self, floor: int, count: int, consumed: int = 0) -> int:
        """An acknowledging reader settled ``count`` messages, ``consumed`` of them acked:
        ``floor`` is its oldest unsettled sequence whose slot the log holds (0: none is left).
        The log releases the slots every reader has settled. Returns the floor the log holds
        from (it may have dropped slots meanwhile), or -1 when the topic was deleted: nothing
        is counted (the caller counts on ``BrokerCore._count_retired``)."""

    def counts(self) -> CursorCounts:
        """This reader's own counters."""

    def floor_now(self) -> int:
        """The oldest sequence the log still holds for this reader (its settled floor)."""

class TopicLog:
    """One topic: a ring of message slots, its readers' cursors, waiters and counters."""

    @property
    def name(self) -> str: ...
    # unbounded: -1 (compiled engine) or None (pure-Python twin)
    @property
    def capacity(self) -> int | None: ...
    @property
    def overflow(self) -> int:
        """The overflow policy, as an index into ``OVERFLOW_POLICIES``."""

    def wake_waiters(self) -> None:
        """Wake every receive waiting on this topic (to look again)."""

    def remove_room_waiter(self, waiter: Waiter) -> None:
        """Forget a publisher's wait for room (it timed out or was cancelled)."""

    def note_queue_full(self) -> None:
        """Count a publish refused for want of room (a block-policy timeout or nowait)."""

    def configure(self, overflow: int, capacity: int) -> None:
        """Set the overflow policy (an index into ``OVERFLOW_POLICIES``) and the capacity
        (-1: unbounded)."""

    def count_acks(
        self, redelivered: int, dead_lettered: int, dropped: int, in_flight: int, expired: int = ...
    ) -> bool:
        """Add the acknowledgement layer's events to the topic's counters; False, counting
        nothing, when the topic was deleted (the caller counts on the broker's totals)."""
    # no TTL: -1.0 (compiled engine) or None (pure-Python twin)
    @property
    def ttl(self) -> float | None: ...
    @property
    def accepting(self) -> bool:
        """False once the broker began shutting down (dead letters still pass while it drains)."""

    # refuse publishes from now on (shutdown) and wake the waiters to notice
    def stop_accepting(self) -> None: ...
    def settle(self, cursor: Cursor, floor: int, count: int, consumed: int = 0) -> int:
        """``cursor.settle``: see there."""

    def leave(self, cursor: Cursor) -> None:
        """One member fewer on a group cursor; the group keeps its place (durable)."""

    def expire(self) -> int:
        """Drop the messages past the topic's TTL; returns how many (reader, message) pairs."""

    def clear(self) -> int:
        """Drop every message held; returns how many were held."""

    def close(self) -> int:
        """Detach every reader and drop everything held (the topic is being deleted)."""

    def drained(self) -> bool:
        """True when every reader with an attached subscriber has read everything."""

    def subscriber_count(self) -> int: ...
    def ring_slots(self) -> int:
        """The slots the ring has allocated (tests and debugging)."""

    def waiter_count(self) -> int:
        """Receives waiting on this topic now (tests and debugging)."""

    def snapshot(self) -> TopicRow:
        """One consistent read of the topic's gauges and counters."""

class BrokerCore:
    """The engine behind ``InMemoryBroker``: the topic table, groups, lifecycle, counters."""

    def __init__(
        self,
        *,
        max_queue_size: int | None,
        max_topics: int | None,
        persistence: bool,
        ordered: bool,
        ttl: float | None,
        max_subscribers: int | None,
        overflow: str = ...,
    ) -> None: ...
    #: Called with a topic's name after the engine created it (logging); None: nothing.
    _on_new_topic: Callable[[str], object] | None
    #: Called with a new topic's log before the topic is visible, under ``_topic_creation``:
    #: pattern subscriptions join it there, so no publish reaches it before them.
    _on_topic_creating: Callable[[TopicLog], object] | None
    @property
    def _topic_creation(self) -> AbstractContextManager[bool]:
        """The reentrant lock held while a topic is created (pattern subscriptions, topic
        deletion and idle cleanup take it too). Never taken under an engine mutex."""

    # the log of topic ``name``; TopicNotFound if there is none (any object: TypeError if it is
    # not a str, as the public callers pass their argument through unchecked)
    def _existing(self, name: Any) -> TopicLog: ...
    def _topic(self, name: str) -> TopicLog:
        """The log of topic ``name``, created if needed (BrokerShutdown, MaxTopicsReached,
        InvalidTopicName)."""

    def delete_group(self, topic: str, name: str) -> None: ...
    def list_groups(self, topic: str) -> list[str]: ...
    def _group_cursor(self, topic: str, name: str) -> Cursor | None:
        """The shared cursor of consumer group ``name`` on ``topic``, or None."""

    def _configure_topic(self, name: str, overflow: int, capacity: int) -> TopicLog:
        """``_topic(name)``, then ``TopicLog.configure(overflow, capacity)``; returns the log."""

    def list_topics(self) -> list[str]: ...
    def topic_count(self) -> int: ...
    def delete_topic(self, name: str) -> None: ...
    def clear_topic(self, name: str) -> int: ...
    def cleanup_idle_topics(self, idle: Any) -> list[str]: ...
    def consume(self, name: str) -> Message | None: ...
    def expire_all(self) -> int: ...
    def is_shutdown(self) -> bool: ...
    def _begin_shutdown(self) -> None:
        """Start the drain (state DRAINING): no new publishes or subscriptions; receives go on
        until ``_drained()``."""

    def _drained(self) -> bool:
        """True when no topic has anything left for a reader (the drain may end)."""

    def _dead_letter(self, topic: str, message: Message) -> bool:
        """Publish a dead letter to ``topic``: created if needed outside ``max_topics``, and
        accepted while the broker drains. False if the topic is full under the block policy (a
        dead letter never waits); raises what a publish raises (QueueFull, BrokerShutdown once
        stopped, TopicNotFound)."""

    def _count_retired(
        self, consumed: int, dropped: int, expired: int, redelivered: int, dead_lettered: int
    ) -> None:
        """Count acknowledgement events of a deleted topic's in-flight messages in the
        broker's retired totals."""

    def _letters_due(self) -> bool:
        """True while an acknowledging reader still holds unsettled messages: during a drain,
        dead letters may still come to the dead-letter topics."""

    def _wake_drain(self) -> None:
        """Wake every waiting receive to look again (a settle during the drain may end it)."""

    @property
    def _letter_topics(self) -> set[str]:
        """The dead-letter topics of acknowledging subscribers: their readers keep waiting
        while the broker drains and dead letters may still come (the Python layer adds to it)."""

    def force_shutdown(self) -> None: ...
    def _snapshot(self) -> BrokerSnapshot:
        """One read of the whole broker (state, uptime, retired counters, per-topic rows): what
        health, stats and metrics are built from."""

class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    @property
    def broker(self) -> Any: ...  # the InMemoryBroker (the Python layer's subclass)
    def __init__(self, broker: BrokerCore) -> None: ...
    # messages: a list or tuple (checked at run time) of Messages and bytes-like payloads
    def publish_nowait(self, topic: str, messages: Sequence[Message | Buffer]) -> None: ...
    def publish_sync(
        self, topic: str, messages: Sequence[Message | Buffer], timeout: float | None = None
    ) -> None: ...
    def publish(
        self, topic: str, messages: Sequence[Message | Buffer], timeout: float | None = None
    ) -> Coroutine[Any, Any, None]: ...

class SubscriberCore:
    """The engine behind ``InMemorySubscriber``: its cursors (one per subscribed topic), the
    round-robin receive over them and the waiting."""

    @property
    def broker(self) -> Any: ...  # the InMemoryBroker (the Python layer's subclass)
    @property
    def _closed(self) -> bool:
        """True once ``_close()`` ran: every subscribe and receive raises NotSubscribed."""

    @property
    def group(self) -> str | None: ...
    @property
    def acking(self) -> bool: ...
    def __init__(
        self, broker: BrokerCore, group: str | None = None, acking: bool = False
    ) -> None: ...
    #: Has pattern subscriptions: may gain topics later, so a receive with no topic waits
    #: instead of raising NotSubscribed (set by the Python layer).
    _patterned: bool
    def _wake_receivers(self) -> None:
        """Wake this subscriber's waiting receives to look at its subscriptions again."""

    def _attached_cursors(self) -> tuple[Cursor, ...]:
        """The cursors of the live subscriptions, in subscription order. The same tuple object
        until the subscriptions change (callers may cache by identity)."""

    def _check_receivable(self) -> None:
        """Raise what a receive with nothing ready raises: BrokerShutdown once drained,
        NotSubscribed without a subscription (or once closed); else return."""

    def _wait_ready(self, timeout: float | None, ready: Callable[[], bool]) -> bool:
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken.
        ``ready`` is called after the waiter is registered, so no wake-up is missed."""

    async def _wait_ready_async(self, ready: Callable[[], bool]) -> None:
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``)."""

    def _subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` (created if needed; joins the group with ``group``):
        NotSubscribed once closed, BrokerShutdown, MaxSubscribersReached, InvalidConfig."""

    def _join_created(self, log: TopicLog) -> None:
        """Subscribe to the topic of ``log`` while the broker creates it (from the
        ``_on_topic_creating`` hook: nothing is published to it yet)."""

    def _unsubscribe(self, topic: str | None) -> None:
        """Leave ``topic`` (None: every topic); NotSubscribed if not subscribed to it."""

    def _close(self) -> None:
        """Leave every topic for good: later subscribes and receives raise NotSubscribed."""

    def _release_on_gc(self) -> None:
        """Leave every topic; called by the finalizer of a subscriber dropped without
        close()."""

    def is_subscribed(self) -> bool: ...
    def subscribed_topics(self) -> list[str]: ...
    def subscribed_topic(self) -> str | None: ...
    def try_receive(self) -> Message | None: ...
    def try_receive_batch(self, max_messages: int) -> list[Message]: ...
    def receive(self, timeout: float | None = None) -> Coroutine[Any, Any, Message]: ...
    async def _wait_async(self, limit: int) -> list[Message]:
        """Wait on the running loop until up to ``limit`` messages are ready; return them."""

    def receive_sync(self, timeout: float | None = None) -> Message: ...
    def receive_batch_sync(
        self, max_messages: int, timeout: float | None = None
    ) -> list[Message]: ...
