"""The broker above the kernel: its topic table, consumer groups, lifecycle and snapshots.

Written once for both engines. ``BrokerCore`` extends the kernel's ``BrokerKernel``, which holds
only what the hot path reads (the topic table, the state, the receives to wake at shutdown);
topic creation and deletion, groups, the pull groups of ``consume``, the shutdown's steps, the
retired counters and the snapshots are plain Python here, calling the kernel's ``TopicLog`` and
``Cursor`` for everything that touches a ring.

Locks: ``_lock`` (reentrant, so a finalizer that publishes cannot deadlock) guards the topic
table, the groups, the pull groups, the state and the retired counters; it is taken before a
topic's lock, never under one. ``_topic_creation`` is held from a topic's lookup to its
insertion, so its pattern subscriptions join it (``_on_topic_creating``) before any publish can
reach it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from ._codes import AttachOutcome, BrokerState
from ._engine import Message, kernel
from ._errors import (
    BrokerShutdown,
    GroupNotFound,
    InvalidConfig,
    MaxSubscribersReached,
    MaxTopicsReached,
    TopicNotFound,
)
from ._rows import BrokerSnapshot, RetiredCounts
from ._validate import OVERFLOW_POLICIES, check_str, check_timeout, validate_topic_name

Cursor = kernel.Cursor
TopicLog = kernel.TopicLog

RUNNING, DRAINING, STOPPED = BrokerState.RUNNING, BrokerState.DRAINING, BrokerState.STOPPED


def _unlimited(value: int | None) -> int:
    return -1 if value is None else value


class BrokerCore(kernel.BrokerKernel):
    """The engine behind ``InMemoryBroker``: the topic table, lifecycle and retired counters."""

    __slots__ = (
        "_groups",
        "_lock",
        "_max_queue_size",
        "_max_subscribers",
        "_max_topics",
        "_on_new_topic",
        "_on_topic_creating",
        "_ordered",
        "_overflow",
        "_persistence",
        "_pull",
        "_retired",
        "_started",
        "_topic_creation",
        "_ttl",
    )

    def __init__(
        self,
        *,
        max_queue_size: int | None,
        max_topics: int | None,
        persistence: bool,
        ordered: bool,
        ttl: float | None,
        max_subscribers: int | None,
        overflow: str = "error",
    ) -> None:
        super().__init__()
        self._overflow = OVERFLOW_POLICIES.index(overflow)
        self._max_queue_size = max_queue_size
        self._max_topics = max_topics
        self._max_subscribers = _unlimited(max_subscribers)
        self._persistence = persistence
        self._ordered = ordered
        self._ttl = ttl
        #: Called with a topic's name after the engine created it (logging); None: nothing.
        self._on_new_topic: Callable[[str], object] | None = None
        #: Called with a new topic's log before the topic is visible, under
        #: ``_topic_creation``: pattern subscriptions join it there, so no publish reaches it
        #: before them.
        self._on_topic_creating: Callable[[TopicLog], object] | None = None
        #: Held while a topic is created (and by whoever must not interleave with a creation:
        #: pattern registration, topic deletion, idle cleanup); reentrant, so a finalizer that
        #: publishes cannot deadlock. Never taken under an engine mutex.
        self._topic_creation = threading.RLock()
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, str], Cursor] = {}  # (topic, group name) -> its cursor
        self._pull: dict[str, Cursor] = {}  # topic -> the cursor of consume()'s pull group
        self._started = kernel.monotonic()
        # published, delivered, expired, dropped, queue_full, lagged, redelivered, dead_lettered
        self._retired = [0] * 8

    # -- topics ---------------------------------------------------------------------------------

    def _topic(self, name: str, letters: bool = False) -> TopicLog:
        """The log of topic ``name``, created if needed (publish and subscribe): BrokerShutdown,
        MaxTopicsReached, InvalidTopicName. ``letters``: a dead-letter topic, created outside
        ``max_topics`` and while the broker drains."""
        if self._orphans:
            self._detach_orphans()
        log = self._topics.get(name) if type(name) is str else None
        if log is not None:
            return log
        validate_topic_name(name)
        with self._topic_creation:
            log, created = self._create(name, letters)
        if created and self._on_new_topic is not None:
            self._on_new_topic(name)
        return log

    def _refused(self, letters: bool) -> bool:
        """True if no topic may be created now (a dead-letter topic may, during a drain)."""
        return self._state != RUNNING and not (letters and self._state == DRAINING)

    def _create(self, name: str, letters: bool) -> tuple[TopicLog, bool]:
        """Topic ``name``'s log and whether it was created now (the creation lock held): the
        pattern subscriptions join a new topic before it is visible, so no publish can reach
        it before them."""
        with self._lock:
            found = self._topics.get(name)
            if self._refused(letters):
                raise BrokerShutdown()
            if found is not None:
                return found, False
            limit = self._max_topics
            if limit is not None and len(self._topics) >= limit and not letters:
                raise MaxTopicsReached(limit)
        log = TopicLog(
            name, self._max_queue_size, self._ttl, self._persistence, self._ordered, self._overflow
        )
        if self._on_topic_creating is not None:
            try:
                self._on_topic_creating(log)  # pattern subscriptions join the new topic
            except BaseException:
                log.close()
                raise
        with self._lock:
            found = self._topics.get(name)  # only a finalizer run meanwhile could have made it
            refused = self._refused(letters)
            if found is None and not refused:
                if self._state != RUNNING:
                    log.stop_accepting()  # a dead-letter topic made during the drain
                self._topics[name] = log
                return log, True
        log.close()  # never visible: the subscriptions it was given end
        if refused or found is None:
            raise BrokerShutdown()
        return found, False

    def _existing(self, name: Any) -> TopicLog:
        """The log of topic ``name``; TopicNotFound if there is none (TypeError if ``name`` is
        not a str: the public callers pass their argument through unchecked)."""
        if self._orphans:
            self._detach_orphans()
        log = self._topics.get(check_str(name, "topic"))
        if log is None:
            raise TopicNotFound(name)
        return log

    def _configure_topic(self, name: str, overflow: int, capacity: int) -> TopicLog:
        """``_topic(name)``, then ``TopicLog.configure(overflow, capacity)``; returns the log."""
        log = self._topic(name)
        log.configure(overflow, capacity)
        return log

    def list_topics(self) -> list[str]:
        """The names of the existing topics, oldest first."""
        return list(self._topics)

    def topic_count(self) -> int:
        """How many topics exist."""
        return len(self._topics)

    def _unlist(self, name: str) -> None:
        """Take topic ``name`` out of the tables (lock held)."""
        self._pull.pop(name, None)
        for key in [key for key in self._groups if key[0] == name]:
            del self._groups[key]

    def _retire(self, log: TopicLog) -> None:
        """Close a log taken out of the table; keep its counters in the broker's statistics."""
        log.close()
        row = log.snapshot()  # a closed topic's counters no longer change
        with self._lock:
            for i, field in enumerate(RetiredCounts._fields):
                self._retired[i] += getattr(row, field)

    def _remove(self, name: str) -> TopicLog | None:
        with self._lock:
            log = self._topics.pop(name, None)
            self._unlist(name)
        if log is not None:
            self._retire(log)
        return log

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its held messages are dropped and its subscriptions end."""
        self._existing(name)
        if self._remove(name) is None:
            raise TopicNotFound(name)

    def close_topic(self, name: str) -> None:
        """Close a topic for writing: publishes to it raise TopicClosed from now on; its readers
        receive what it holds, then their receives raise TopicClosed. Idempotent."""
        self._existing(name).stop_accepting(True)

    def _wait_settled(self, name: str, seconds: float | None) -> bool:
        """``join``'s wait on topic ``name``: True once every reader settled what was
        published before the call, False after ``seconds``; TopicNotFound."""
        return kernel.wait_settled(self._existing(name), seconds)

    def _settled(self, name: str) -> Coroutine[Any, Any, None]:
        """``_wait_settled`` as a coroutine for the running event loop (bound it with
        ``asyncio.timeout``); TopicNotFound at once."""
        return kernel.settled(self._existing(name))

    def clear_topic(self, name: str) -> int:
        """Drop every message a topic holds; return how many were held."""
        return self._existing(name).clear()

    def cleanup_idle_topics(self, idle: Any) -> list[str]:
        """Remove topics with no attached subscriber and no activity for ``idle`` seconds."""
        threshold = check_timeout(idle)
        if threshold is None:
            raise TypeError("idle must be a number of seconds, not None")
        removed = []
        # checked and taken out of the table in one step under the broker lock: a subscriber
        # attaching meanwhile either comes first (the topic stays) or meets a closed topic and
        # subscribes to a new one
        with self._lock:
            for name, log in list(self._topics.items()):
                if log.close_if_idle(threshold):
                    del self._topics[name]
                    self._unlist(name)
                    removed.append(log)
        for log in removed:
            self._retire(log)
        return [log.name for log in removed]

    def consume(self, name: str) -> Message | None:
        """Pull one message through the topic's built-in pull group, or None if none is ready."""
        if self._state == STOPPED:  # force_shutdown dropped the topics
            raise BrokerShutdown()
        log = self._existing(name)
        cursor = self._pull.get(name)
        if cursor is None:
            made = Cursor(log, 0)
            if log.attach(made, -1):
                raise TopicNotFound(name)
            with self._lock:
                cursor = self._pull.setdefault(name, made)
            if cursor is not made:
                log.detach(made)  # a concurrent consume made the pull group first
        got = cursor.take(1)
        log.touch()
        if got:
            return got[0]
        if self._state != RUNNING:
            raise BrokerShutdown()
        return None

    def expire_all(self) -> int:
        """Run the TTL cleanup pass over every topic."""
        return sum(log.expire() for log in list(self._topics.values()))

    # -- consumer groups ------------------------------------------------------------------------

    def _join_group(
        self, topic: str, name: str, acking: bool, creating: TopicLog | None = None
    ) -> Cursor:
        """Join consumer group ``name`` on ``topic``: its shared cursor, created (durable) on
        first use, with one more member. ``creating``: the topic's log while it is being
        created (not yet in the table)."""
        key = (topic, name)
        while True:
            log = self._topic(topic) if creating is None else creating
            found = self._groups.get(key)
            if found is None or found.log is not log or not found.attached:
                made = Cursor(log, 0, name, acking)
                if log.attach(made, -1) == AttachOutcome.GONE:
                    if creating is not None:
                        raise TopicNotFound(topic)
                    continue  # the topic was deleted meanwhile
                with self._lock:
                    current = self._groups.get(key)
                    listed = self._topics.get(topic)
                    if current is found and listed is (log if creating is None else None):
                        self._groups[key] = made
                        current = made
                if current is not made:  # a concurrent join made it first
                    log.detach(made)
                    continue
                found = made
            if found.acking != acking:
                kind = "an acknowledging" if found.acking else "a plain"
                cls = "InMemoryAckSubscriber" if found.acking else "InMemorySubscriber"
                raise InvalidConfig(
                    "group",
                    name,
                    f"{kind} group on topic {topic!r}: join it with {cls}",
                )
            refused = log.join(found, self._max_subscribers)
            if refused == AttachOutcome.FULL:
                raise MaxSubscribersReached(topic, self._max_subscribers)
            if refused == AttachOutcome.ATTACHED:
                return found

    def delete_group(self, topic: str, name: str) -> None:
        """Delete consumer group ``name`` of ``topic``: its cursor goes, and with it the
        messages only it still held; its members' subscriptions to the topic end."""
        check_str(topic, "topic")
        check_str(name, "group")
        with self._lock:
            found = self._groups.pop((topic, name), None)
        if found is None:
            if topic not in self._topics:
                raise TopicNotFound(topic)
            raise GroupNotFound(topic, name)
        found.log.detach(found)

    def list_groups(self, topic: str) -> list[str]:
        """The names of ``topic``'s consumer groups (with or without members)."""
        self._existing(topic)
        return [key[1] for key in list(self._groups) if key[0] == topic]

    def _group_cursor(self, topic: str, name: str) -> Cursor | None:
        """The shared cursor of consumer group ``name`` on ``topic``, or None."""
        return self._groups.get((topic, name))

    # -- lifecycle ------------------------------------------------------------------------------

    def is_shutdown(self) -> bool:
        """True once shutdown() or force_shutdown() was called."""
        return self._state != RUNNING

    def _begin_shutdown(self) -> None:
        """Start the drain (state DRAINING): no new publishes or subscriptions; receives go on
        until ``_drained()``."""
        with self._lock:
            if self._state == RUNNING:
                self._state = DRAINING
            logs = list(self._topics.values())
        self._wake_shutdown_waiters()
        for log in logs:
            log.stop_accepting()

    def _drained(self) -> bool:
        """True when no topic has anything left for a reader (the drain may end)."""
        return all(log.drained() for log in list(self._topics.values()))

    def _dead_letter(self, topic: str, message: Message) -> bool:
        """Publish a dead letter to ``topic``: created if needed outside ``max_topics``, and
        accepted while the broker drains. False if the topic is full under the block policy
        (a dead letter never waits); raises what a publish raises (QueueFull, BrokerShutdown
        once stopped, TopicNotFound)."""
        if self._state == STOPPED:
            raise BrokerShutdown()
        log = self._topics.get(topic)
        if log is None:
            log = self._topic(topic, True)
        return log.append_letter(message)

    def _count_retired(
        self, consumed: int, dropped: int, expired: int, redelivered: int, dead_lettered: int
    ) -> None:
        """Count acknowledgement events of a deleted topic's in-flight messages."""
        with self._lock:
            r = self._retired
            r[1] += consumed
            r[2] += expired
            r[3] += dropped
            r[6] += redelivered
            r[7] += dead_lettered

    def _letters_due(self) -> bool:
        """True while an acknowledging reader still holds unsettled messages: during a drain,
        dead letters may still come to the dead-letter topics."""
        return any(log.in_flight > 0 for log in list(self._topics.values()))

    def _wake_drain(self) -> None:
        """Wake every waiting receive to look again (a settle during the drain may end it)."""
        for log in list(self._topics.values()):
            log.wake_waiters()

    def force_shutdown(self) -> None:
        """Stop at once: drop every topic, with its held messages, and wake every waiter with
        BrokerShutdown (the counters of the dropped topics stay in the statistics)."""
        with self._lock:
            self._state = STOPPED  # from now on no topic is created
            logs = list(self._topics.values())
        self._wake_shutdown_waiters()
        for log in logs:
            log.stop_accepting()
        for log in logs:
            self._remove(log.name)

    def _snapshot(self) -> BrokerSnapshot:
        """A BrokerSnapshot (state, uptime, retired counters, per-topic rows): one read for
        health and stats."""
        if self._orphans:
            self._detach_orphans()
        logs = list(self._topics.values())
        return BrokerSnapshot(
            BrokerState(self._state),
            kernel.monotonic() - self._started,
            RetiredCounts._make(self._retired),
            [log.snapshot() for log in logs],
        )
