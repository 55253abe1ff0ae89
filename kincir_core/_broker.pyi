# The kernel's Python-visible surface: the compiled _broker.pyx (with its .pxi files) and its
# pure-Python twin _broker_py.py both match this stub (tests/test_typing.py checks the three
# agree), and `mypy --strict` checks the layers above against it (.ci/lint: mypy covers src/ and
# kincir_core/).
#
# The kernel is what is written twice: the ring, cursors, locks, waiters and the hot calls. The
# broker's and a subscriber's management is written once above it, in Python: BrokerCore
# (kincir_core/_topics.py) subclasses BrokerKernel, SubscriberCore (kincir_core/_subscriptions.py)
# subclasses SubscriberKernel, and kincir.memory subclasses those and PublisherCore.
# Underscore names are the *internal API* those layers call, never users. Each is documented
# here. What crosses the boundary is typed:
# rows are NamedTuples (kincir_core._rows), status codes IntEnums (kincir_core._codes), errors the
# classes of kincir_core._errors, raised directly by both engines. The public names' signatures
# are part of the public typing surface (tests/typing) and stay as they are.
import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Self, TypeVar, overload

from ._message import Message
from ._rows import CursorCounts, TopicRow

MESSAGE_OVERHEAD: int

_T = TypeVar("_T")

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

    def __init__(
        self, log: TopicLog, members: int, group: str | None = None, acking: bool = False
    ) -> None:
        """A detached cursor on ``log`` with ``members`` subscribers (0: a group's or the pull
        group's shared cursor before anyone joins); ``TopicLog.attach`` starts it."""

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

    @property
    def pos(self) -> int:
        """The sequence number this reader reads next."""

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

    def keep(self, unsettled: list[int]) -> None:
        """This acknowledging reader is about to detach: ``unsettled`` (ascending) are the
        sequences it delivered and has not settled. If it is the last reader to leave, the log
        keeps only those of its delivered messages for the next reader (the settled ones behind
        the oldest unsettled one become tombstones, which no read or count sees)."""

    def counts(self) -> CursorCounts:
        """This reader's own counters."""

    def floor_now(self) -> int:
        """The oldest sequence the log still holds for this reader (its settled floor)."""

def leave(cursor: Cursor) -> None:
    """A subscriber lets go of ``cursor``: a group member leaves, a plain reader detaches."""

def wait_settled(log: TopicLog, timeout: float | None) -> bool:
    """Block until every message published to ``log`` before the call is read and settled by
    every reader (True) or ``timeout`` seconds pass (False)."""

async def settled(log: TopicLog) -> None:
    """``wait_settled`` on the running event loop (bound it with ``asyncio.timeout``)."""

class TopicLog:
    """One topic: a ring of message slots, its readers' cursors, waiters and counters."""

    def __init__(
        self,
        name: str,
        capacity: int | None,
        ttl: float | None,
        persistence: bool,
        ordered: bool,
        overflow: int,
    ) -> None:
        """An empty topic log (``capacity`` None: unbounded; ``ttl`` None: no TTL; ``overflow``
        an index into ``OVERFLOW_POLICIES``)."""

    @property
    def name(self) -> str: ...
    @property
    def in_flight(self) -> int:
        """Messages delivered to acknowledging readers and not settled yet."""

    def attach(self, cursor: Cursor, limit: int) -> int:
        """Start ``cursor`` (the first reader inherits held messages, later ones start at the
        end): an AttachOutcome; FULL if ``limit`` subscribers are attached (-1: no limit)."""

    def join(self, cursor: Cursor, limit: int) -> int:
        """One more member on an attached group cursor: an AttachOutcome, as ``attach``."""

    def detach(self, cursor: Cursor) -> int:
        """Stop ``cursor``; the last reader's unread messages stay held if persistence is on."""

    def close_if_idle(self, threshold: float) -> bool:
        """Refuse publishes and readers from now on (True) if no subscriber is attached and
        nothing happened for ``threshold`` seconds; the caller then closes the topic."""

    def touch(self) -> None:
        """Stamp the topic active now (a pull through ``consume``)."""

    def append_letter(self, message: Message) -> bool:
        """Append a dead letter (accepted while the broker drains): False if the topic is full
        under the block policy (a dead letter never waits); raises what a publish raises."""
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
        """False once the broker began shutting down or the topic was closed for writing (dead
        letters still pass)."""

    # refuse publishes from now on (shutdown; end: closed for writing) and wake the waiters
    def stop_accepting(self, end: bool = False) -> None: ...
    @property
    def ended(self) -> bool:
        """Closed for writing (``close_topic``): its readers end once drained."""
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

    def wake_count(self) -> int:
        """Waiting receives this topic woke so far: its publishes' plain readers, and every
        group member a line woke (tests and debugging)."""

    def snapshot(self) -> TopicRow:
        """One consistent read of the topic's gauges and counters."""

class BrokerKernel:
    """What the hot path reads of a broker: its topic table and state, and the receives no
    topic may wake at shutdown (BrokerCore, in _topics.py, is the rest)."""

    __slots__ = ("_state",)  # the writable attribute (cdef public)
    #: The broker's life-cycle state (a BrokerState value); the Python layer sets it.
    _state: int
    @property
    def _topics(self) -> dict[str, TopicLog]:
        """The topic table, name to log: read by the hot path, changed by the Python layer."""

    @property
    def _letter_topics(self) -> set[str]:
        """The dead-letter topics of acknowledging subscribers: their readers keep waiting
        while the broker drains and dead letters may still come (the Python layer adds to it)."""

    @property
    def _orphans(self) -> object:
        """Truthy while cursors of subscribers freed by the GC wait to be detached (the twin
        only; never in the compiled kernel)."""

    def _detach_orphans(self) -> None:
        """Detach those cursors now."""

    def _wake_shutdown_waiters(self) -> None:
        """Wake the receives no topic may wake (pattern subscribers), after the state
        changed."""

class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    @property
    def broker(self) -> Any: ...  # the InMemoryBroker (the Python layer's subclass)
    def __init__(self, broker: BrokerKernel) -> None: ...
    def _own_counts(self) -> tuple[int, int]:
        """(published, refused): the messages of this publisher's accepted and refused
        publishes."""
    # messages: a list or tuple of Messages and payloads (any object; the run time refuses
    # anything but a list or tuple, so a bare bytes or str is a type error here too)
    def publish_nowait(self, topic: str, messages: list[Any] | tuple[Any, ...]) -> None: ...
    def publish_sync(
        self, topic: str, messages: list[Any] | tuple[Any, ...], timeout: float | None = None
    ) -> None: ...
    def publish(
        self, topic: str, messages: list[Any] | tuple[Any, ...], timeout: float | None = None
    ) -> Coroutine[Any, Any, None]: ...
    # one message: the payload (any object) and str->str metadata, without a list or a Message
    def send_nowait(
        self, topic: str, payload: Any, *, metadata: Mapping[str, str] | None = None
    ) -> None: ...
    def send_sync(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None: ...
    def send(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, None]: ...

class SubscriberKernel:
    """What a subscriber's receives need: its cursors (one per subscribed topic), the
    round-robin receive over them and the waiting (SubscriberCore, in _subscriptions.py, is the
    rest)."""

    __slots__ = ("_closed", "_patterned")  # the writable attributes (cdef public)
    @property
    def broker(self) -> Any: ...  # the InMemoryBroker (the Python layer's subclass)
    #: True once closed: every subscribe and receive raises NotSubscribed (set by the layer).
    _closed: bool
    @property
    def group(self) -> str | None: ...
    @property
    def acking(self) -> bool: ...
    @property
    def _by_topic(self) -> dict[str, Cursor]:
        """The subscriptions: topic name to cursor (changed through ``_adopt``/``_drop``)."""

    def __init__(self, broker: BrokerKernel, group: str | None, acking: bool) -> None: ...
    #: Has pattern subscriptions: may gain topics later, so a receive with no topic waits
    #: instead of raising NotSubscribed (set by the Python layer).
    _patterned: bool
    def _adopt(self, topic: str, cursor: Cursor) -> None:
        """Record the new subscription ``cursor`` to ``topic`` (a concurrent subscribe that
        won makes this one leave again) and wake the waiting receives."""

    def _drop(self, topic: str | None) -> list[Cursor] | None:
        """Forget the subscription to ``topic`` (None: every one) and return its cursors for
        the caller to leave; None if not subscribed to ``topic``."""

    def _wake_receivers(self) -> None:
        """Wake this subscriber's waiting receives to look at its subscriptions again."""

    def _attached_cursors(self) -> tuple[Cursor, ...]:
        """The cursors of the live subscriptions, in subscription order. The same tuple object
        until the subscriptions change (callers may cache by identity)."""

    def _check_receivable(self) -> None:
        """Raise what a receive with nothing ready raises: BrokerShutdown once drained,
        NotSubscribed without a subscription (or once closed); else return."""

    @overload
    def _wait_ready(
        self, timeout: float | None, ready: Callable[[], bool], take: Callable[[], _T]
    ) -> _T | None: ...
    @overload
    def _wait_ready(
        self, timeout: float | None, ready: Callable[[], bool], take: None = None
    ) -> bool:
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken.
        ``ready`` is called after the waiter is registered, so no wake-up is missed. With
        ``take``, returns what ``take()`` returns once woken (None after the timeout): it runs
        before the wait ends, so a group member that takes a message does not pass its wake on
        first."""

    async def _wait_ready_async(
        self, ready: Callable[[], bool], take: Callable[[], _T] | None = None
    ) -> _T | None:
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``):
        None, or what ``take()`` returns once woken."""

    def _release_on_gc(self) -> None:
        """Leave every topic; called by the finalizer of a subscriber dropped without
        close()."""

    def _received_count(self) -> int:
        """Messages this subscriber's receives handed to the caller."""
    def try_receive(self) -> Message | None: ...
    def try_receive_batch(self, max_messages: int) -> list[Message]: ...
    def receive(self, timeout: float | None = None) -> Coroutine[Any, Any, Message]: ...
    async def _wait_async(self, limit: int) -> list[Message]:
        """Wait on the running loop until up to ``limit`` messages are ready; return them."""

    def receive_sync(self, timeout: float | None = None) -> Message: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Message:
        """``for msg in subscriber``: the next message, waiting for it; ends at shutdown, once
        closed, or once every topic it reads was closed and drained."""
    def receive_batch_sync(
        self, max_messages: int, timeout: float | None = None
    ) -> list[Message]: ...

# -- the acknowledging readers' in-flight messages (_in_flight.pxi, twin _in_flight_py.py) ----

class AckOwner:
    """An acknowledging subscriber as its deliveries name it (never the subscriber itself: a
    dropped one is collected): its settings and its own counts, kept under the states' locks."""

    def __init__(
        self, ack_timeout: float, max_deliveries: int | None, dead_letter_topic: str | None
    ) -> None: ...
    #: Seconds a delivery may stay unsettled before it is redelivered.
    ack_timeout: float
    #: Deliveries (the first included) before a message is dead-lettered; None: no bound.
    max_deliveries: int | None
    #: Where messages past ``max_deliveries`` or rejected go; None: they are dropped.
    dead_letter_topic: str | None
    #: The subscriber's own counts (``stats()``): deliveries handed out, redeliveries among
    #: them, acked, nacked and dead-lettered messages.
    received: int
    redelivered: int
    acked: int
    nacked: int
    dead_lettered: int
    #: (its subscriber's cursors, their states), kept by the subscriber's ``_states()``.
    _cache: tuple[Any, list[Any]] | None

class AckHandle:
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it
    (``kincir.memory.AckHandle``; only the engine makes them). Its attributes are read-only."""

    #: The AckOwner it was handed to.
    _owner: Any
    _message: Message
    #: The state that handed it out.
    _state: InFlight
    #: The topic the message came from.
    topic: str
    #: Unix time (seconds) of this delivery.
    timestamp: float
    #: How many times the message has been delivered, this delivery included.
    delivery_count: int
    #: Where the message goes once dead (the receiving subscriber's setting), or None.
    _dead_letter_topic: str | None
    @property
    def sequence(self) -> int:
        """The message's sequence number in its topic."""
    @property
    def message_id(self) -> str:
        """The message's uuid."""
    @property
    def is_retry(self) -> bool:
        """True when this is a redelivery."""

class InFlight:
    """The in-flight messages of one acknowledging cursor (one subscriber's, or a group's):
    records, deadlines, redeliveries and counts. ``kincir.memory``'s ``_AckState`` subclasses
    it with the policy the engine calls once its lock is released: ``_missed(rows)``,
    ``_after(dead, redelivered, dropped, expired) -> int``, ``_dropped_deleted(count)``,
    ``_count_retired(...)`` and ``wake_drain()``."""

    def __init__(self, cursor: Cursor) -> None:
        """The state of ``cursor``."""
    cursor: Cursor
    log: TopicLog
    #: Owner tokens of collected group members (a ``collections.deque``), appended without
    #: the lock (by a finalizer); the next operation gives their deliveries back for
    #: redelivery.
    orphaned: Any
    def next(self, owner: AckOwner) -> tuple[Message, Any] | None:
        """Deliver a redelivery or the cursor's next message to ``owner``: (Message, handle),
        or None."""

    def settle(self, handles: list[Any], owner: AckOwner, ack: bool, requeue: bool) -> int:
        """Ack or nack ``handles`` (all checked first: one bad handle settles none); returns
        how many went to the dead-letter topic."""

    def check(self, handles: list[Any], owner: AckOwner) -> None:
        """Raise what settling ``handles`` would (TypeError, AckError), settling nothing."""

    def extend(self, handle: Any, owner: AckOwner) -> None:
        """Restart the ack deadline of ``handle``'s delivery from now."""

    def release(self, owner: AckOwner) -> None:
        """``owner`` is closing: its deliveries go back for redelivery, oldest first."""

    def hold_unsettled(self) -> None:
        """The cursor is about to detach: tell the log which of its delivered messages are
        still unsettled (``Cursor.keep``)."""

    def abandon(self) -> None:
        """The cursor is gone (its subscriber left, or its group was deleted): forget all."""

    def has_ready(self) -> bool:
        """Whether a message waits for redelivery (read without the lock: a hint)."""

    def next_deadline(self) -> float | None:
        """The earliest ack deadline of the deliveries held (engine clock), or None."""

    def owned_by(self, owner: AckOwner) -> int:
        """How many deliveries ``owner`` holds unsettled."""

def deliver(subscriber: SubscriberKernel, owner: AckOwner) -> tuple[Message, Any] | None:
    """The next (Message, handle) for ``subscriber`` (whose token is ``owner``) from the states
    of its cursors, taken in turn (each state's redeliveries first), or None. The states are
    ``owner._cache`` while the subscriber's cursors are the ones cached, else
    ``subscriber._states()`` (which the acknowledging subscriber defines)."""

def ack_one(handle: Any, owner: AckOwner) -> None:
    """Ack ``handle`` for the subscriber whose token is ``owner`` (TypeError for anything but a
    handle, AckError for a settled or foreign one)."""
