"""Pure-Python twin of ``_broker.pyx``, the engine's kernel: topic logs, cursors, waiting, and
the hot calls. The broker and subscriber management above it is written once (``_topics.py``,
``_subscriptions.py``) and runs on either kernel. This module holds ``BrokerKernel``,
``PublisherCore`` and ``SubscriberKernel`` and exports the kernel's names; the cursors are in
``_cursor_py.py``, the topic logs in ``_topic_log_py.py``, the clock and waiters in
``_waiting_py.py``, the acknowledging readers' in-flight messages in ``_in_flight_py.py``.

Same names, behaviour and errors as the compiled engine; read that file's header for the design.
In short: a topic is a ring of message slots addressed by sequence number; every reader owns a
cursor (a sequence number) into it; a slot is released once every cursor has passed it. One lock
per topic guards its ring, cursors and counters.
Waiters are one-shot: a publish takes the topic's waiter list and wakes each one after unlocking.
A consumer group's members wait in line on its cursor: a publish of k messages wakes at most k of
them, and a woken member that comes back without its share passes the wake on to the next
(``TopicLog.add_waiter``; none is left waiting beside unread messages).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ._codes import BrokerState
from ._cursor_py import Cursor
from ._errors import (
    BrokerShutdown,
    NotSubscribed,
    QueueFull,
    TopicClosed,
)
from ._in_flight_py import AckHandle, AckOwner, InFlight, ack_one, deliver
from ._join_py import settled, wait_settled
from ._message_py import Message, stamp_all
from ._topic_log_py import MESSAGE_OVERHEAD, TopicLog
from ._validate import (
    check_batch_size,
    check_timeout,
    validate_topic_name,
)
from ._waiting_py import (
    AsyncWaiter,
    SyncWaiter,
    _advance_clock,
    _now_ms,
    _reset_clock,
    _wake_all,
    monotonic,
    wall_ms,
)

RUNNING = BrokerState.RUNNING

# The kernel's names (its parts' too: the compiled kernel is one module, so is its twin's face).
__all__ = [
    "MESSAGE_OVERHEAD",
    "AckHandle",
    "AckOwner",
    "AsyncWaiter",
    "BrokerKernel",
    "Cursor",
    "InFlight",
    "PublisherCore",
    "SubscriberKernel",
    "SyncWaiter",
    "TopicLog",
    "_advance_clock",
    "_reset_clock",
    "ack_one",
    "deliver",
    "leave",
    "monotonic",
    "settled",
    "wait_settled",
    "wall_ms",
]


class BrokerKernel:
    """What the hot path reads of a broker: its topic table and state, and the receives no
    topic may wake at shutdown. The rest of the broker (creating and deleting topics, groups,
    the lifecycle, snapshots) is ``BrokerCore`` in _topics.py, written once above this."""

    def __init__(self) -> None:
        self._topics: dict[str, TopicLog] = {}
        self._state = RUNNING
        self._letter_topics: set[str] = set()  # dead-letter topics of ack subscribers
        # receives of subscribers that may gain topics (patterns): no topic wakes them at
        # shutdown, so the broker does
        self._shutdown_waiters: list[Any] = []
        self._waiters_lock = threading.Lock()
        self._orphans: list[Cursor] = []  # cursors of subscribers freed by the GC

    def _detach_orphans(self) -> None:
        """Detach the cursors of subscribers the GC freed (see SubscriberKernel._release_on_gc)."""
        orphans = self._orphans
        while orphans:
            try:
                cursor = orphans.pop()
            except IndexError:  # another thread took the last one
                return
            leave(cursor)

    def _add_shutdown_waiter(self, waiter: Any) -> None:
        with self._waiters_lock:
            self._shutdown_waiters.append(waiter)

    def _remove_shutdown_waiter(self, waiter: Any) -> None:
        with self._waiters_lock:
            try:
                self._shutdown_waiters.remove(waiter)
            except ValueError:
                pass

    def _wake_shutdown_waiters(self) -> None:
        """Wake the receives no topic may wake (the state changed first: a receive that
        registers after this sees it)."""
        with self._waiters_lock:
            waiters = self._shutdown_waiters
            self._shutdown_waiters = []
        _wake_all(waiters)


class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    def __init__(self, broker: BrokerKernel) -> None:
        if not isinstance(broker, BrokerKernel):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        self.broker = broker
        self._published = 0  # messages of the publishes the broker accepted
        self._refused = 0  # messages of the publishes it refused (an error raised)

    def _own_counts(self) -> tuple[int, int]:
        """(published, refused): the messages of this publisher's accepted and refused
        publishes."""
        return self._published, self._refused

    def publish_nowait(self, topic: str, messages: Any) -> None:
        """Publish a batch now; never waits. Raises QueueFull when the topic has no room."""
        blocked = self._publish(topic, messages)
        if blocked is not None:
            self._refused += len(messages)
            _refuse_full(blocked)

    def publish_sync(self, topic: str, messages: Any, timeout: Any = None) -> None:
        """Publish a batch from a thread (same rules as ``publish``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else monotonic() + seconds
        blocked = None
        while True:
            blocked = self._publish(topic, messages, blocked)
            if blocked is None:
                return
            waiter = SyncWaiter()
            if blocked.wait_room(waiter, len(messages)):
                try:
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - monotonic()
                        if remaining <= 0:
                            self._refused += len(messages)
                            _refuse_full(blocked)
                    waiter.wait(remaining)
                finally:
                    blocked.remove_room_waiter(waiter)
                if not waiter._woken and deadline is not None and monotonic() >= deadline:
                    self._refused += len(messages)
                    _refuse_full(blocked)

    async def publish(self, topic: str, messages: Any, timeout: Any = None) -> None:
        """Publish a batch: all of it, with consecutive sequence numbers, or none of it.

        Under the ``block`` overflow policy waits for room, up to ``timeout`` seconds (then
        QueueFull); other policies never wait.
        """
        seconds = check_timeout(timeout)
        blocked = self._publish(topic, messages)
        if blocked is None:
            return
        try:
            async with asyncio.timeout(seconds):
                while blocked is not None:
                    loop = asyncio.get_running_loop()
                    future: asyncio.Future[None] = loop.create_future()
                    waiter = AsyncWaiter(loop, future)
                    if blocked.wait_room(waiter, len(messages)):
                        try:
                            await future
                        finally:
                            blocked.remove_room_waiter(waiter)
                    log = blocked
                    blocked = self._publish(topic, messages, blocked)
        except TimeoutError:
            self._refused += len(messages)
            _refuse_full(log if blocked is None else blocked)

    def send_nowait(self, topic: str, payload: Any, *, metadata: Any = None) -> None:
        """Publish one message now, built from ``payload`` and ``metadata``; never waits.
        Raises QueueFull when the topic has no room."""
        self.publish_nowait(topic, _one(payload, metadata))

    def send_sync(
        self, topic: str, payload: Any, *, metadata: Any = None, timeout: Any = None
    ) -> None:
        """Publish one message from a thread (same rules as ``send``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        self.publish_sync(topic, _one(payload, metadata), timeout)

    async def send(
        self, topic: str, payload: Any, *, metadata: Any = None, timeout: Any = None
    ) -> None:
        """Publish one message, built from ``payload`` and ``metadata`` (``publish`` of a
        batch of one); waits for room as ``publish`` does."""
        await self.publish(topic, _one(payload, metadata), timeout)

    def _publish(
        self, topic: Any, messages: Any, target: TopicLog | None = None
    ) -> TopicLog | None:
        """Publish, or return the topic's log when it is full under the block policy (nothing
        written: the caller waits for room and calls again with it as ``target``, so a topic
        deleted meanwhile raises TopicNotFound); None once published."""
        broker = self.broker
        if broker._state != RUNNING:
            if type(messages) is list or type(messages) is tuple:
                self._refused += len(messages)
            raise BrokerShutdown()
        if broker._orphans:
            broker._detach_orphans()
        log = target
        if log is None:
            log = broker._topics.get(topic) if type(topic) is str else None
            if log is None:
                validate_topic_name(topic)
        # every item is checked before the topic is created or anything is written
        stamped = stamp_all(messages, topic, _now_ms(), broker._ordered)  # type: ignore[attr-defined]
        if not stamped:
            return None
        try:
            if log is None:
                log = broker._topic(topic)  # type: ignore[attr-defined]
            blocked = log.append(stamped)
        except BaseException:
            self._refused += len(stamped)
            raise
        if blocked:
            return log
        self._published += len(stamped)
        return None


def _one(payload: Any, metadata: Any) -> list[Any]:
    """A send as a batch of one: the payload itself, or a Message carrying its metadata (the
    compiled engine writes both into the slot without either)."""
    return [payload] if metadata is None else [Message(payload, metadata)]


def _refuse_full(log: TopicLog) -> None:
    log.note_queue_full()
    raise QueueFull(log.name, log.capacity)


def leave(cursor: Cursor) -> None:
    """A subscriber lets go of ``cursor``: a group member leaves, a plain reader detaches."""
    if cursor.group is not None:
        cursor.log.leave(cursor)
    else:
        cursor.log.detach(cursor)


class SubscriberKernel:
    """What a subscriber's receives need: its cursors, its lock and its waiting receives.
    Joining and leaving topics is ``SubscriberCore`` in _subscriptions.py, written once above
    this."""

    def __init__(self, broker: BrokerKernel, group: str | None, acking: bool) -> None:
        self.group = group
        self.broker: Any = broker
        self.acking = acking
        self._cursors: tuple[Cursor, ...] = ()
        self._by_topic: dict[str, Cursor] = {}
        self._next = 0
        self._closed = False
        self._patterned = False  # has pattern subscriptions: may gain topics later
        self._lock = threading.Lock()
        self._waiting: list[Any] = []
        self._received = 0  # messages the receives handed to the caller

    # -- subscriptions --------------------------------------------------------------------------

    def _adopt(self, topic: str, cursor: Cursor) -> None:
        """Record the new subscription ``cursor`` to ``topic``."""
        displaced = None
        with self._lock:
            current = self._by_topic.get(topic)
            if current is not None and current.attached:
                displaced = cursor  # a concurrent subscribe won: undo ours
            else:
                self._by_topic[topic] = cursor
            self._cursors = tuple(c for c in self._by_topic.values() if c.attached)
        if displaced is not None:
            leave(displaced)
        self._subscriptions_changed()

    def _drop(self, topic: str | None) -> list[Cursor] | None:
        """Forget the subscription to ``topic`` (every one: None) and return its cursors for
        the caller to leave; None if not subscribed to ``topic``."""
        with self._lock:
            if topic is None:
                dropped = list(self._by_topic.values())
                self._by_topic.clear()
            else:
                cursor = self._by_topic.pop(topic, None)
                if cursor is None:
                    return None
                dropped = [cursor]
            self._cursors = tuple(c for c in self._by_topic.values() if c.attached)
        return dropped

    def _release_on_gc(self) -> None:
        """Leave every topic; called by the finalizer of a subscriber dropped without close().

        Python code allocates everywhere, so a collection can run this finalizer while this
        very thread holds a topic lock: detaching then would deadlock. A topic whose lock is
        free is left at once (this thread does not hold it, and takes nothing else while
        leaving); the other cursors are handed to the broker and a short-lived thread detaches
        them as soon as their topic's lock is free, so blocked publishers and a draining
        shutdown never wait for a broker call.
        """
        broker = getattr(self, "broker", None)
        if broker is None:  # the constructor refused its arguments
            return
        cursors = list(self._by_topic.values())
        self._by_topic = {}
        self._cursors = ()
        deferred = False
        for cursor in cursors:
            lock = cursor.log.lock
            if lock.acquire(blocking=False):
                lock.release()
                leave(cursor)
            else:
                broker._orphans.append(cursor)
                deferred = True
        if deferred:
            try:
                threading.Thread(
                    target=broker._detach_orphans, name="kincir-release", daemon=True
                ).start()
            except RuntimeError:  # interpreter shutdown: the broker's next call detaches them
                pass

    def _wake_receivers(self) -> None:
        """Wake this subscriber's waiting receives to look at its subscriptions again."""
        self._subscriptions_changed()

    def _attached_cursors(self) -> tuple[Cursor, ...]:
        """The cursors of the live subscriptions (the acknowledgement layer reads through
        them)."""
        return self._cursors

    def _check_receivable(self) -> None:
        """Raise what a receive with nothing ready raises: BrokerShutdown once drained,
        NotSubscribed without a subscription."""
        self._nothing()

    def _wait_ready(
        self, timeout: Any, ready: Callable[[], bool], take: Callable[[], Any] | None = None
    ) -> Any:
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken.

        With ``take``, returns what ``take()`` returns once woken instead (None after the
        timeout): it runs before the wait ends, so a group member whose wake brought it a
        message does not pass the wake on to the next member first.
        """
        seconds = check_timeout(timeout)
        waiter = SyncWaiter()
        cursors = self._register(waiter)
        try:
            woken = True
            if not any(c.attached and c.log.head != c.pos for c in cursors) and not ready():
                waiter.wait(seconds)
                woken = waiter._woken
            if take is None:
                return woken
            return take() if woken else None
        finally:
            self._unregister(waiter, cursors)

    async def _wait_ready_async(
        self, ready: Callable[[], bool], take: Callable[[], Any] | None = None
    ) -> Any:
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``):
        returns None, or what ``take()`` returns once woken."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = AsyncWaiter(loop, future)
        cursors = self._register(waiter)
        try:
            if not any(c.attached and c.log.head != c.pos for c in cursors) and not ready():
                await future
            return None if take is None else take()
        finally:
            self._unregister(waiter, cursors)

    # -- receiving ------------------------------------------------------------------------------

    def _take(self, limit: int) -> list[Message]:
        cursors = self._cursors
        count = len(cursors)
        if count == 1:
            got = cursors[0].log.take(cursors[0], limit)
            if got:
                self._received += len(got)
                return got
        elif count:
            start = self._next
            self._next = (start + 1) % count
            for i in range(count):
                cursor = cursors[(start + i) % count]
                got = cursor.log.take(cursor, limit)
                if got:
                    self._received += len(got)
                    return got
        return self._nothing()

    def _nothing(self) -> list[Message]:
        """No message is ready: an empty batch while one may come, else raise (SubscriberCore's
        ``_nothing_ready`` decides)."""
        if self.broker._state != RUNNING or not any(
            c.attached and c.log.accepting for c in self._cursors
        ):
            self._nothing_ready()  # type: ignore[attr-defined]
        return []

    def _received_count(self) -> int:
        """Messages this subscriber's receives handed to the caller."""
        return self._received

    def try_receive(self) -> Message | None:
        """The next message if one is ready, else None."""
        got = self._take(1)
        return got[0] if got else None

    def try_receive_batch(self, max_messages: int) -> list[Message]:
        """Up to ``max_messages`` ready messages (possibly none; none at once for 0)."""
        limit = check_batch_size(max_messages, "max_messages")
        return self._take(limit) if limit else []

    def _register(self, waiter: Any) -> tuple[Cursor, ...]:
        cursors = self._cursors
        self._waiting.append(waiter)
        if self._patterned:  # may have no topic to wake it at shutdown
            self.broker._add_shutdown_waiter(waiter)
        for cursor in cursors:
            cursor.log.add_waiter(waiter, cursor)
        return cursors

    def _unregister(self, waiter: Any, cursors: tuple[Cursor, ...]) -> None:
        for cursor in cursors:
            cursor.log.remove_waiter(waiter, cursor)
        if self.broker._shutdown_waiters:
            self.broker._remove_shutdown_waiter(waiter)
        try:
            self._waiting.remove(waiter)
        except ValueError:
            pass

    def _subscriptions_changed(self) -> None:
        """Wake this subscriber's waiting receives so they wait on the new set of topics."""
        # drop the cursors of deleted topics now, as the compiled engine does: both rotate
        # over the same topics
        with self._lock:
            self._cursors = tuple(c for c in self._by_topic.values() if c.attached)
        _wake_all(list(self._waiting))

    def _receive_blocking(self, limit: int, timeout: Any) -> list[Message]:
        seconds = check_timeout(timeout)
        got = self._take(limit)
        if got:
            return got
        deadline = None if seconds is None else monotonic() + seconds
        while True:
            waiter = SyncWaiter()
            waiter.want = limit
            cursors = self._register(waiter)
            try:
                got = self._take(limit)
                if got:
                    return got
                remaining = None
                if deadline is not None:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no message arrived within {seconds} seconds")
                waiter.wait(remaining)
                got = self._take(limit)  # before unregistering: a group member hands on after
                if got:
                    return got
            finally:
                self._unregister(waiter, cursors)

    async def receive(self, timeout: Any = None) -> Message:
        """Wait for the next message (TimeoutError after ``timeout`` seconds)."""
        seconds = check_timeout(timeout)  # bad input is refused before any take
        got = self._take(1)
        if got:
            return got[0]
        if seconds is not None:
            async with asyncio.timeout(seconds):
                return (await self._wait_async(1))[0]
        return (await self._wait_async(1))[0]

    async def _wait_async(self, limit: int) -> list[Message]:
        """Wait on the running loop until up to ``limit`` messages are ready; return them."""
        loop = asyncio.get_running_loop()
        while True:
            future: asyncio.Future[None] = loop.create_future()
            waiter = AsyncWaiter(loop, future)
            waiter.want = limit
            cursors = self._register(waiter)
            try:
                got = self._take(limit)
                if got:
                    return got
                await future
                got = self._take(limit)  # before unregistering: a group member hands on after
                if got:
                    return got
            finally:
                self._unregister(waiter, cursors)

    def receive_sync(self, timeout: Any = None) -> Message:
        """Block the calling thread until a message arrives (TimeoutError after ``timeout``)."""
        return self._receive_blocking(1, timeout)[0]

    def __iter__(self) -> SubscriberKernel:
        return self

    def __next__(self) -> Message:
        """``for msg in subscriber``: the next message, waiting for it; the iteration ends when
        the broker shuts down, the subscriber is closed, or every topic it reads was closed for
        writing and is drained."""
        try:
            return self.receive_sync()
        except (BrokerShutdown, TopicClosed):
            raise StopIteration from None
        except NotSubscribed:
            if self._closed:
                raise StopIteration from None
            raise

    def receive_batch_sync(self, max_messages: int, timeout: Any = None) -> list[Message]:
        """Block until at least one message is ready, then return up to ``max_messages``
        (0: an empty batch at once)."""
        limit = check_batch_size(max_messages, "max_messages")
        if not limit:
            check_timeout(timeout)
            return []
        return self._receive_blocking(limit, timeout)


# A receive never awaited warns as SubscriberCore.receive (the class above the kernel that
# kincir.memory subclasses), as the compiled engine's does.
SubscriberKernel.receive.__qualname__ = "SubscriberCore.receive"
