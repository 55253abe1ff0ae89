"""Pure-Python twin of ``_broker.pyx``: topic logs, cursors, waiting, and the broker core.

Same names, behaviour and errors as the compiled engine; read that file's header for the design.
In short: a topic is a ring of message slots addressed by sequence number; every reader owns a
cursor (a sequence number) into it; a slot is released once every cursor has passed it. One lock
per topic guards its ring, cursors and counters; the broker's lock guards the topic table. A
topic's pattern subscriptions join it before it enters the table, under the broker's
topic-creation lock.
Waiters are one-shot: a publish takes the topic's waiter list and wakes each one after unlocking.
A consumer group's members wait in line on its cursor, and only the first is on the topic's list:
a publish wakes one member, which passes the wake on to the next when it stops waiting with
messages still unread (one member woken per message, none left waiting beside unread messages).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from ._codes import AttachOutcome, BrokerState
from ._errors import (
    BrokerShutdown,
    GroupNotFound,
    InvalidConfig,
    InvalidTopicName,
    MaxSubscribersReached,
    MaxTopicsReached,
    NotSubscribed,
    QueueFull,
    TopicNotFound,
)
from ._message_py import Message, payload_size, stamp_all
from ._rows import BrokerSnapshot, CursorCounts, RetiredCounts, TopicRow

RUNNING, DRAINING, STOPPED = BrokerState.RUNNING, BrokerState.DRAINING, BrokerState.STOPPED

# Estimated bytes a held message costs beyond its payload and its ring slot: the message object
# and the bytes object header. Used by the memory estimate, which is kept incrementally.
MESSAGE_OVERHEAD = 80 + 33
TOPIC_OVERHEAD = 512
MAX_TOPIC_LENGTH = 255
_MIN_RING = 16
# A ring that grew shrinks back once it is less than 1/8 full, to four times what it holds but
# never below _RING_FLOOR slots: it grows only when full, so a steady queue never resizes.
_RING_FLOOR = 1024
# Bytes one allocated ring slot costs (the memory estimate counts the whole ring): a list item,
# and with a TTL a float and its list item.
_SLOT_BYTES = 8
_STAMP_BYTES = 8 + 24
_INVALID_TOPIC_CHAR = re.compile(r"[\s\x00-\x1f\x7f*>]")
_INVALID_GROUP_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")

#: The overflow policies, indexed by the code the engine stores per topic.
OVERFLOW_POLICIES = ("error", "block", "drop_oldest", "drop_newest")
OVERFLOW_ERROR, OVERFLOW_BLOCK, OVERFLOW_DROP_OLDEST, OVERFLOW_DROP_NEWEST = range(4)


def validate_topic_name(name: Any) -> str:
    """Return ``name`` if it is a valid topic name, else raise TypeError / InvalidTopicName."""
    if type(name) is not str:
        raise TypeError(f"topic must be str, not {type(name).__name__}")
    if not name:
        raise InvalidTopicName(name, "it is empty")
    if len(name) > MAX_TOPIC_LENGTH:
        raise InvalidTopicName(name, f"it is longer than {MAX_TOPIC_LENGTH} characters")
    bad = _INVALID_TOPIC_CHAR.search(name)
    if bad is not None:
        raise InvalidTopicName(
            name,
            f"it contains {bad.group()!r}; "
            "whitespace, control characters, '*' and '>' are not allowed",
        )
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise InvalidTopicName(name, "it has an empty dot-separated segment")
    return name


def validate_group_name(name: Any) -> str | None:
    """Return ``name`` (None, or a valid consumer group name), else raise TypeError/ValueError."""
    if name is None:
        return None
    if type(name) is not str:
        raise TypeError(f"group must be str or None, not {type(name).__name__}")
    if not name or len(name) > MAX_TOPIC_LENGTH or _INVALID_GROUP_CHAR.search(name):
        raise ValueError(
            f"invalid group name {name!r}: 1-{MAX_TOPIC_LENGTH} characters, "
            "no whitespace or control characters"
        )
    return name


# Added to every clock read of the engine's TTL and waiting logic; moved forward only by
# _advance_clock, for tests that must step time (TTL, ack deadlines) without sleeping.
_clock_offset = 0.0


def monotonic() -> float:
    """The engine's monotonic clock, in seconds (TTL and ack deadlines are measured on it)."""
    return time.monotonic() + _clock_offset


def wall_ms() -> int:
    """Unix time in milliseconds, moved by _advance_clock like the engine's monotonic clock
    (the age of a delivered message is measured against its ``enqueued_at`` on it)."""
    return _now_ms()


def _reset_clock() -> None:
    """Undo every _advance_clock (tests only: call it when no broker that saw the stepped
    clock is still in use)."""
    global _clock_offset
    _clock_offset = 0.0


def _advance_clock(seconds: float) -> None:
    """Move the engine's clock forward by ``seconds`` (tests only: it is process-wide)."""
    global _clock_offset
    if not seconds >= 0:
        raise ValueError("the clock only moves forward")
    _clock_offset += seconds


def _now_ms() -> int:
    """Unix milliseconds, for ``enqueued_at`` (moved by _advance_clock too)."""
    return time.time_ns() // 1_000_000 + int(_clock_offset * 1000)


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    if type(timeout) is bool or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    seconds = float(timeout)
    if seconds != seconds or seconds < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {seconds}")
    return seconds


def _check_count(value: Any, name: str) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_batch_size(value: Any, name: str) -> int:
    """A batch receive's size: 0 asks for nothing (an empty batch at once)."""
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


class SyncWaiter:
    """A thread blocked in a receive: woken once by a release of its lock."""

    __slots__ = ("_lock", "_woken")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._woken = False

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                self._lock.release()
            except RuntimeError:  # a concurrent waker released it first
                pass

    def wait(self, timeout: float | None) -> None:
        # Lock.acquire is interruptible by signals on POSIX, so Ctrl-C reaches the waiter.
        self._lock.acquire(timeout=-1 if timeout is None else min(timeout, threading.TIMEOUT_MAX))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncWaiter:
    """A task awaiting a receive on an event loop: woken by resolving its future."""

    __slots__ = ("_future", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self._loop = loop
        self._future = future
        self._thread = threading.get_ident()

    def wake(self) -> None:
        try:
            if threading.get_ident() == self._thread:
                _resolve(self._future)
            else:
                self._loop.call_soon_threadsafe(_resolve, self._future)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            pass


def _wake_all(waiters: list[Any]) -> None:
    for waiter in waiters:
        waiter.wake()


class Cursor:
    """One reader's position in a topic log: the sequence number it reads next.

    An acknowledging reader also has a ``floor``, its oldest unsettled sequence: the log holds
    slots from there, so in-flight messages keep their slot; ``unsettled`` counts its messages
    in flight, which (not the span from the floor) count against the topic's capacity.
    """

    __slots__ = (
        "ack",
        "acking",
        "attached",
        "delivered",
        "dropped",
        "expired",
        "floor",
        "group",
        "lagged",
        "line_woken",
        "log",
        "members",
        "pos",
        "unsettled",
        "waiters",
    )

    def __init__(
        self, log: TopicLog, members: int, group: str | None = None, acking: bool = False
    ) -> None:
        self.log = log
        # a group's waiting members, in line: the first is on the topic's waiter list
        self.waiters: list[Any] | None = [] if group is not None else None
        # the first in line was woken and has not come back yet: the next publish must not
        # count on it (it may never run: a blocked or stopped event loop), so it wakes the line
        self.line_woken = False
        self.pos = 0
        self.floor = 0
        self.members = members
        self.group = group
        self.acking = acking
        self.ack: Any = None
        self.delivered = 0
        self.expired = 0
        self.dropped = 0
        self.lagged = 0
        self.unsettled = 0
        self.attached = False

    def tracked(self) -> int:
        """The position that holds this reader's slots."""
        return self.floor if self.acking else self.pos

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages for this reader (the acknowledgement layer's read)."""
        return self.log.take(self, limit)

    def settle(self, floor: int, count: int, consumed: int = 0) -> int:
        """An acknowledging reader settled ``count`` messages, ``consumed`` of them acked:
        ``floor`` is its oldest unsettled sequence whose slot the log holds (0: none is left).
        Returns the floor the log holds from (it may have dropped slots meanwhile), or -1 when
        the topic was deleted: nothing is counted (the caller counts on the broker's totals)."""
        return self.log.settle(self, floor, count, consumed)

    def counts(self) -> CursorCounts:
        """This reader's own counters (a CursorCounts)."""
        return CursorCounts(self.delivered, self.expired, self.dropped, self.lagged)

    def floor_now(self) -> int:
        """The oldest sequence the log still holds for this reader (its settled floor)."""
        with self.log.lock:
            return self.floor if self.acking else self.pos

    def pending(self) -> int:
        """Messages this reader has not read yet (0 once detached)."""
        if not self.attached:
            return 0
        log = self.log
        with log.lock:
            return log.head - self.pos if self.attached else 0


class TopicLog:
    """A topic: a ring of message slots addressed by sequence number, read through cursors."""

    def __init__(
        self,
        name: str,
        capacity: int | None,
        ttl: float | None,
        persistence: bool,
        overflow: int = OVERFLOW_ERROR,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.room_waiters: list[Any] = []
        self.room_freed = False
        self.lagged = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.in_flight = 0
        self.ttl = ttl
        self.persistence = persistence
        self.lock = threading.Lock()
        self.ring: list[Message | None] = [None] * _MIN_RING
        self.mask = _MIN_RING - 1
        self.stamps: list[float] | None = [0.0] * _MIN_RING if ttl is not None else None
        self.head = 1
        self.tail = 1
        self.cursors: list[Cursor] = []
        self.at_tail = 0
        self.waiters: list[Any] = []
        self.lined = 0  # cursors whose line of waiting group members is not empty
        self.published = 0
        self.delivered = 0
        self.expired = 0
        self.dropped = 0
        self.queue_full = 0
        self.held_bytes = 0
        self.created_at = time.time()
        # wall-clock seconds of the last publish, subscribe, unsubscribe, pull or clear; a
        # subscriber's receive is not stamped (the clock read would cost more than the receive)
        self.last_activity = self.created_at
        self.closed = False
        self.accepting = True

    # -- ring management (lock held) ------------------------------------------------------------

    def _resize(self, size: int) -> None:
        ring: list[Message | None] = [None] * size
        stamps = [0.0] * size if self.stamps is not None else None
        mask = size - 1
        for seq in range(self.tail, self.head):
            ring[seq & mask] = self.ring[seq & self.mask]
            if stamps is not None and self.stamps is not None:
                stamps[seq & mask] = self.stamps[seq & self.mask]
        self.ring = ring
        self.stamps = stamps
        self.mask = mask

    def _release_to(self, new_tail: int) -> None:
        """Drop the log's references to the slots before ``new_tail``."""
        ring = self.ring
        mask = self.mask
        freed = 0
        for seq in range(self.tail, new_tail):
            msg = ring[seq & mask]
            ring[seq & mask] = None
            if msg is not None:
                freed += payload_size(msg)
        self.held_bytes -= freed + (new_tail - self.tail) * MESSAGE_OVERHEAD
        self.tail = new_tail
        if self.room_waiters:
            self.room_freed = True
        size = self.mask + 1
        held = self.head - new_tail
        if size > _RING_FLOOR and held * 8 < size:
            fit = _RING_FLOOR
            while fit < held * 4:
                fit *= 2
            self._resize(fit)

    def _held(self) -> int:
        """Messages held against the capacity: the most any reader holds, unread plus in flight
        (not the acked ones behind an unsettled message; none whose slot the log dropped); with
        no reader, every message the log holds."""
        if not self.cursors:
            return self.head - self.tail
        return max(
            self.head - c.pos + (min(c.unsettled, c.pos - c.floor) if c.acking else 0)
            for c in self.cursors
        )

    def _queued(self) -> int:
        """Messages not yet read by the reader furthest behind (all held ones: no reader)."""
        if not self.cursors:
            return self.head - self.tail
        return self.head - min(c.pos for c in self.cursors)

    def _recompute_tail(self) -> None:
        cursors = self.cursors
        if not cursors:
            self.at_tail = 0
            return
        low = min(c.tracked() for c in cursors)
        self.at_tail = sum(1 for c in cursors if c.tracked() == low)
        if low != self.tail:
            self._release_to(low)

    def _moved(self, old_pos: int) -> None:
        """A cursor advanced from ``old_pos``: release slots every reader has passed."""
        if old_pos == self.tail:
            self.at_tail -= 1
            if self.at_tail == 0:
                self._recompute_tail()

    def _skip_expired(self, cursor: Cursor, now: float) -> None:
        assert self.ttl is not None and self.stamps is not None
        deadline = now - self.ttl
        pos = old = cursor.pos
        head = self.head
        stamps = self.stamps
        mask = self.mask
        while pos < head and stamps[pos & mask] < deadline:
            pos += 1
        if pos != old:
            cursor.pos = pos
            cursor.expired += pos - old
            self.expired += pos - old
            if not cursor.acking:
                self._moved(old)
            elif cursor.floor == old:  # nothing in flight below: the floor follows
                cursor.floor = pos
                self._moved(old)

    def _skip(self, count: int) -> None:
        """Number ``count`` messages dropped on arrival (drop_oldest, a batch larger than the
        capacity): every reader loses them, counted as lagged. Lock held, nothing held."""
        self.head += count
        self.tail = self.head
        self.published += count
        if not self.cursors:
            self.dropped += count
        for cursor in self.cursors:
            cursor.lagged += count
            cursor.dropped += count
            self.lagged += count
            self.dropped += count
            cursor.pos = cursor.floor = self.head
        self.at_tail = len(self.cursors)

    def _drop_oldest(self, count: int) -> None:
        """Release the ``count`` oldest held messages (drop_oldest); readers that had not read
        them lose them, counted as lagged. Lock held."""
        if count <= 0:
            return
        new_tail = min(self.tail + count, self.head)
        if not self.cursors:
            self.dropped += new_tail - self.tail
        for cursor in self.cursors:
            if cursor.pos < new_tail:
                lost = new_tail - cursor.pos
                cursor.lagged += lost
                cursor.dropped += lost
                self.lagged += lost
                self.dropped += lost
                cursor.pos = new_tail
            if cursor.floor < new_tail:
                cursor.floor = new_tail
        self._release_to(new_tail)
        if self.cursors:
            low = min(c.tracked() for c in self.cursors)
            self.at_tail = sum(1 for c in self.cursors if c.tracked() == low)

    def _wake_room(self) -> None:
        """Wake the publishers waiting for room (after the lock is released)."""
        with self.lock:
            waiters = self.room_waiters
            self.room_waiters = []
            self.room_freed = False
        _wake_all(waiters)

    def _expire(self, now: float) -> int:
        """The cleanup pass: move every reader past expired messages; reclaim orphans."""
        before = self.expired
        if self.cursors:
            for cursor in list(self.cursors):
                self._skip_expired(cursor, now)
        elif self.stamps is not None and self.ttl is not None:
            deadline = now - self.ttl
            pos = self.tail
            while pos < self.head and self.stamps[pos & self.mask] < deadline:
                pos += 1
            self.expired += pos - self.tail
            self._release_to(pos)
        return self.expired - before

    # -- publishing -----------------------------------------------------------------------------

    def append(self, stamped: list[Message], letter: bool = False) -> bool:
        """Append a stamped batch atomically: all of it gets consecutive sequence numbers, or
        none does. Returns True, writing nothing, when the topic is full under the block policy
        (the caller waits for room and retries). ``letter``: a dead letter, accepted while the
        broker drains."""
        try:
            return self._append(stamped, letter)
        finally:
            if self.room_freed:
                self._wake_room()

    def _append(self, stamped: list[Message], letter: bool = False) -> bool:
        count = len(stamped)
        if not count:
            return False
        now = monotonic()
        with self.lock:
            # first: a force_shutdown closes the topics too; a dead letter passes a draining
            # topic
            if not self.accepting and not letter:
                raise BrokerShutdown()
            if self.closed:
                raise TopicNotFound(self.name)
            self.last_activity = stamped[0]._enqueued_at * 1e-3
            if not self.cursors and not self.persistence:
                self.dropped += count
                return False
            held = self.head - self.tail
            capacity = self.capacity
            if capacity is not None and held + count > capacity:
                if self.ttl is not None:
                    self._expire(now)
                held = self._held()
                if held + count > capacity:
                    if self.overflow == OVERFLOW_DROP_NEWEST:
                        keep = max(0, capacity - held)
                        self.dropped += count - keep
                        if keep == 0:
                            return False
                        stamped = stamped[:keep]
                    elif self.overflow == OVERFLOW_DROP_OLDEST:
                        if count > capacity:
                            # the batch alone overflows: everything held goes, and so does the
                            # batch's start, numbered like the rest
                            self._drop_oldest(self.head - self.tail)
                            self._skip(count - capacity)
                            stamped = stamped[count - capacity :]
                        else:
                            # the oldest slots go: acked ones behind an in-flight message free
                            # nothing, so count them too
                            self._drop_oldest(self.head - self.tail + count - capacity)
                    elif self.overflow == OVERFLOW_BLOCK and count <= capacity:
                        return True
                    else:
                        self.queue_full += 1
                        raise QueueFull(self.name, capacity)
                    count = len(stamped)
                held = self.head - self.tail
            if held + count > self.mask + 1:
                size = self.mask + 1
                while size < held + count:
                    size *= 2
                self._resize(size)
            ring = self.ring
            mask = self.mask
            seq = self.head
            added = 0
            for msg in stamped:
                msg._sequence = seq
                ring[seq & mask] = msg
                if self.stamps is not None:
                    self.stamps[seq & mask] = now
                added += payload_size(msg)
                seq += 1
            self.head = seq
            self.published += count
            self.held_bytes += added + count * MESSAGE_OVERHEAD
            waiters = self.waiters
            if waiters:
                self.waiters = []
            if self.lined and self._lines_woken():
                # (an empty ``waiters`` is still the topic's list, which this takes too)
                waiters = (
                    waiters + self._take_all_waiters() if waiters else self._take_all_waiters()
                )
        if waiters:
            _wake_all(waiters)
        return False

    def _lines_woken(self) -> bool:
        """A publish woke the first member of each line (lock held). True if a line's first
        member had already been woken and has not come back: that line must be woken whole."""
        stale = False
        for cursor in self.cursors:
            if cursor.waiters:
                if cursor.line_woken:
                    stale = True
                else:
                    cursor.line_woken = True
        return stale

    def wait_room(self, waiter: Any, count: int) -> bool:
        """Register ``waiter`` to be woken when ``count`` messages fit: True if registered,
        False if the publisher should retry now (room, a policy change, deletion, shutdown)."""
        try:
            with self.lock:
                if self.ttl is not None:
                    self._expire(monotonic())
                if (
                    not self.closed
                    and self.accepting
                    and self.overflow == OVERFLOW_BLOCK
                    and self.capacity is not None
                    and self._held() + count > self.capacity
                ):
                    self.room_waiters.append(waiter)
                    return True
                return False
        finally:
            if self.room_freed:
                self._wake_room()

    def remove_room_waiter(self, waiter: Any) -> None:
        with self.lock:
            try:
                self.room_waiters.remove(waiter)
            except ValueError:
                pass

    def note_queue_full(self) -> None:
        """Count a publish refused for want of room (a block-policy timeout or nowait)."""
        with self.lock:
            self.queue_full += 1

    def configure(self, overflow: int, capacity: int) -> None:
        """Change the topic's overflow policy and capacity (-1: unbounded); wakes blocked
        publishers to look again."""
        with self.lock:
            self.overflow = overflow
            self.capacity = None if capacity < 0 else capacity
        self._wake_room()

    def count_acks(
        self, redelivered: int, dead_lettered: int, dropped: int, in_flight: int, expired: int = 0
    ) -> bool:
        """Add the acknowledgement layer's events to the topic's counters; False, counting
        nothing, when the topic was deleted (the caller counts on the broker's totals)."""
        with self.lock:
            if self.closed:
                return False
            self.redelivered += redelivered
            self.dead_lettered += dead_lettered
            self.dropped += dropped
            self.expired += expired
            self.delivered += dead_lettered  # settled out of the topic: consumed
            self.in_flight = max(0, self.in_flight + in_flight)
        return True

    def settle(self, cursor: Cursor, floor: int, count: int, consumed: int = 0) -> int:
        with self.lock:
            if self.closed:  # retired: its counters are already in the broker's totals
                return -1
            self.in_flight = max(0, self.in_flight - count)
            cursor.unsettled = max(0, cursor.unsettled - count)
            cursor.delivered += consumed
            self.delivered += consumed
            if self.room_waiters and count:  # an in-flight message no longer counts
                self.room_freed = True
            if cursor.attached and cursor.acking:
                new = floor if floor and floor < cursor.pos else cursor.pos
                if new > cursor.floor:
                    old = cursor.floor
                    cursor.floor = new
                    self._moved(old)
            held_from = cursor.floor
        if self.room_freed:
            self._wake_room()
        return held_from

    # -- reading --------------------------------------------------------------------------------

    def take(self, cursor: Cursor, limit: int) -> list[Message]:
        """Up to ``limit`` messages for ``cursor``, in sequence order."""
        try:
            return self._take(cursor, limit)
        finally:
            if self.room_freed:
                self._wake_room()

    def _take(self, cursor: Cursor, limit: int) -> list[Message]:
        with self.lock:
            if not cursor.attached or cursor.pos == self.head:
                return []
            now = monotonic()
            if self.ttl is not None:
                self._skip_expired(cursor, now)
            old = cursor.pos
            end = min(self.head, old + limit)
            if end == old:
                return []
            ring = self.ring
            mask = self.mask
            out: list[Message] = [ring[seq & mask] for seq in range(old, end)]  # type: ignore[misc]
            cursor.pos = end
            if not cursor.acking:
                cursor.delivered += end - old
                self.delivered += end - old
                self._moved(old)
            else:  # its floor stays: in flight (not consumed) until settled
                cursor.unsettled += end - old
                self.in_flight += end - old
            return out

    # -- readers joining and leaving ------------------------------------------------------------

    def attach(self, cursor: Cursor, limit: int | None) -> AttachOutcome:
        """Start ``cursor``: the first reader inherits held messages, later ones start at the end.

        Returns AttachOutcome.FULL if ``limit`` subscribers are already attached,
        AttachOutcome.GONE if the topic was deleted (nothing changed in either case), else
        AttachOutcome.ATTACHED.
        """
        with self.lock:
            if self.closed:
                return AttachOutcome.GONE
            if limit is not None and cursor.members and self.subscriber_count() >= limit:
                return AttachOutcome.FULL
            cursor.pos = self.tail if not self.cursors else self.head
            cursor.floor = cursor.pos
            self.cursors.append(cursor)
            cursor.attached = True
            if cursor.pos == self.tail:
                self.at_tail += 1
            self.last_activity = time.time()
            return AttachOutcome.ATTACHED

    def join(self, cursor: Cursor, limit: int | None) -> AttachOutcome:
        """One more subscriber on an attached group cursor: ATTACHED, or FULL if ``limit``
        subscribers are already attached, or GONE if the group or topic is gone (nothing
        changed)."""
        with self.lock:
            if self.closed or not cursor.attached:
                return AttachOutcome.GONE
            if limit is not None and self.subscriber_count() >= limit:
                return AttachOutcome.FULL
            cursor.members += 1
            self.last_activity = time.time()
            return AttachOutcome.ATTACHED

    def leave(self, cursor: Cursor) -> None:
        """One subscriber fewer on a group cursor; the group keeps its place (durable)."""
        with self.lock:
            if cursor.members > 0:
                cursor.members -= 1
            self.last_activity = time.time()
            waiters = self._take_all_waiters()
        _wake_all(waiters)

    def detach(self, cursor: Cursor) -> None:
        """Stop ``cursor``; the last reader's unread messages stay held if persistence is on."""
        try:
            self._detach(cursor)
        finally:
            if self.room_freed:
                self._wake_room()

    def _detach(self, cursor: Cursor) -> None:
        with self.lock:
            if not cursor.attached:
                return
            cursor.attached = False
            self.cursors.remove(cursor)
            self.last_activity = time.time()
            if self.cursors:
                self._moved(cursor.tracked())
            else:
                self.at_tail = 0
                if not self.persistence:
                    self.dropped += self.head - self.tail
                    self._release_to(self.head)
            waiters = self._take_all_waiters()
            if cursor.waiters:
                waiters.extend(cursor.waiters)
        _wake_all(waiters)

    def _take_all_waiters(self) -> list[Any]:
        """Every waiter, group members in line included, to wake after unlocking (lock held):
        something other than a publish happened that each must look at."""
        waiters = self.waiters
        self.waiters = []
        for cursor in self.cursors:
            if cursor.waiters:
                cursor.line_woken = True
                waiters.extend(
                    cursor.waiters[1:] if cursor.waiters[0] in waiters else cursor.waiters
                )
        return waiters

    def add_waiter(self, waiter: Any, cursor: Cursor | None = None) -> None:
        """Register ``waiter`` to be woken by the next publish; a member of ``cursor``'s group
        joins the line instead when another member is first."""
        with self.lock:
            line = cursor.waiters if cursor is not None else None
            if line is not None:
                line.append(waiter)
                if len(line) > 1:
                    return
                self.lined += 1
                cursor.line_woken = False  # type: ignore[union-attr]
            self.waiters.append(waiter)

    def remove_waiter(self, waiter: Any, cursor: Cursor | None = None) -> None:
        """Unregister ``waiter``. The first member of a group's line hands its place to the
        next: woken at once if messages are unread (it may have taken none), else put on the
        topic's waiter list."""
        after = None
        with self.lock:
            try:
                self.waiters.remove(waiter)
            except ValueError:
                pass
            line = cursor.waiters if cursor is not None else None
            if line:
                if line[0] is waiter:
                    del line[0]
                    if not line:
                        self.lined -= 1
                    elif cursor is not None and cursor.attached and cursor.pos != self.head:
                        after = line[0]
                        cursor.line_woken = True
                    else:
                        self.waiters.append(line[0])
                        cursor.line_woken = False  # type: ignore[union-attr]
                else:
                    try:
                        line.remove(waiter)
                    except ValueError:
                        pass
        if after is not None:
            after.wake()

    def waiter_count(self) -> int:
        """Waiters registered and not yet woken (a gauge for tests and debugging)."""
        with self.lock:
            return len(self.waiters) + sum(len(c.waiters) - 1 for c in self.cursors if c.waiters)

    def wake_waiters(self) -> None:
        with self.lock:
            waiters = self._take_all_waiters()
        _wake_all(waiters)

    def stop_accepting(self) -> None:
        """Refuse publishes from now on (shutdown) and wake the waiters to notice."""
        with self.lock:
            self.accepting = False
            waiters = self._take_all_waiters()
        _wake_all(waiters)
        self._wake_room()  # blocked publishers retry and meet BrokerShutdown

    # -- maintenance ----------------------------------------------------------------------------

    def expire(self) -> int:
        """Run the TTL cleanup pass now; return how many (reader, message) pairs expired."""
        if self.ttl is None:
            return 0
        with self.lock:
            n = self._expire(monotonic())
        if self.room_freed:
            self._wake_room()
        return n

    def clear(self) -> int:
        """Drop every held message (each reader's unread ones counted as dropped)."""
        with self.lock:
            held = self._held()
            for cursor in self.cursors:
                lost = self.head - cursor.pos
                cursor.dropped += lost
                self.dropped += lost
                cursor.pos = self.head
                cursor.floor = self.head
            if not self.cursors:
                self.dropped += held
            self._release_to(self.head)
            self.at_tail = len(self.cursors)
            self.last_activity = time.time()
        if self.room_freed:
            self._wake_room()
        return held

    def close(self) -> int:
        """Detach every reader and drop everything held (the topic is being deleted)."""
        with self.lock:
            self.closed = True  # first: a publish racing the deletion is refused, not lost
        held = self.clear()
        with self.lock:
            waiters = self._take_all_waiters()
            for cursor in self.cursors:
                cursor.attached = False
            self.cursors = []
            self.at_tail = 0
        _wake_all(waiters)
        self._wake_room()  # blocked publishers retry and meet TopicNotFound
        return held

    def close_if_idle(self, threshold: float) -> bool:
        """Refuse publishes and readers from now on (True) if no subscriber is attached and
        nothing happened for ``threshold`` seconds; the caller then closes the topic."""
        with self.lock:
            idle = time.time() - self.last_activity
            if self.closed or self.subscriber_count() or idle <= threshold:
                return False
            self.closed = True
            return True

    def drained(self) -> bool:
        """True when every reader with an attached subscriber has read everything."""
        with self.lock:
            return all(
                c.pos == self.head and not (c.acking and c.floor < c.pos)
                for c in self.cursors
                if c.members
            )

    def subscriber_count(self) -> int:
        return sum(c.members for c in self.cursors)

    def ring_slots(self) -> int:
        """The slots the ring has allocated (a gauge for tests and debugging)."""
        return self.mask + 1

    def _ring_bytes(self) -> int:
        return (self.mask + 1) * (_SLOT_BYTES + (_STAMP_BYTES if self.stamps is not None else 0))

    def snapshot(self) -> TopicRow:
        """One consistent read of the topic's gauges and counters: a TopicRow."""
        with self.lock:
            wall = time.time()
            return TopicRow(
                self.name,
                self._queued(),
                self.subscriber_count(),
                self.published,
                self.delivered,
                self.expired,
                self.dropped,
                self.queue_full,
                self.created_at,
                self.last_activity,
                self.head,
                self.held_bytes + self._ring_bytes(),
                max(0.0, wall - self.last_activity),
                self.lagged,
                self.redelivered,
                self.dead_lettered,
                self.in_flight,
                OVERFLOW_POLICIES[self.overflow],
                self.capacity,
            )


class BrokerCore:
    """The engine behind ``InMemoryBroker``: the topic table, lifecycle and retired counters."""

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
        self._overflow = OVERFLOW_POLICIES.index(overflow)
        self._on_new_topic: Callable[[str], Any] | None = None
        self._on_topic_creating: Callable[[TopicLog], Any] | None = None
        # held while a topic is created (and by whoever must not interleave with a creation:
        # pattern registration); reentrant, so a finalizer that publishes cannot deadlock
        self._topic_creation = threading.RLock()
        # receives of subscribers that may gain topics (patterns): no topic wakes them at
        # shutdown, so the broker does
        self._shutdown_waiters: list[Any] = []
        self._groups: dict[tuple[str, str], Cursor] = {}
        self._max_queue_size = max_queue_size
        self._max_topics = max_topics
        self._persistence = persistence
        self._ordered = ordered
        self._ttl = ttl
        self._max_subscribers = max_subscribers
        self._topics: dict[str, TopicLog] = {}
        self._pull: dict[str, Cursor] = {}
        self._lock = threading.Lock()
        self._state = RUNNING
        self._started = monotonic()
        # published, delivered, expired, dropped, queue_full, lagged, redelivered, dead_lettered
        self._retired = [0] * 8
        self._orphans: list[Cursor] = []  # cursors of subscribers freed by the GC
        self._letter_topics: set[str] = set()  # dead-letter topics of ack subscribers

    # -- topics ---------------------------------------------------------------------------------

    def _detach_orphans(self) -> None:
        """Detach the cursors of subscribers the GC freed (see SubscriberCore._release_on_gc)."""
        orphans = self._orphans
        while orphans:
            try:
                cursor = orphans.pop()
            except IndexError:  # another thread took the last one
                return
            _leave(cursor)

    def _log_for(self, name: Any, letters: bool = False) -> TopicLog:
        """The log of topic ``name``, created if needed (publish and subscribe). ``letters``: a
        dead-letter topic, created outside ``max_topics`` and while the broker drains."""
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

    def _create(self, name: str, letters: bool) -> tuple[TopicLog, bool]:
        """Topic ``name``'s log and whether it was created now (the creation lock held): the
        pattern subscriptions join a new topic before it is visible, so no publish can reach
        it before them."""
        with self._lock:
            found = self._topics.get(name)
            if self._state != RUNNING and not (letters and self._state == DRAINING):
                raise BrokerShutdown()
            if found is not None:
                return found, False
            full = self._max_topics is not None and len(self._topics) >= self._max_topics
            if full and not letters:
                raise MaxTopicsReached(self._max_topics)  # type: ignore[arg-type]  # a limit refused
        log = TopicLog(name, self._max_queue_size, self._ttl, self._persistence, self._overflow)
        if self._on_topic_creating is not None:
            try:
                self._on_topic_creating(log)  # pattern subscriptions join the new topic
            except BaseException:
                log.close()
                raise
        with self._lock:
            found = self._topics.get(name)  # only a finalizer run meanwhile could have made it
            refused = self._state != RUNNING and not (letters and self._state == DRAINING)
            if found is None and not refused:
                if self._state != RUNNING:
                    log.accepting = False  # a dead-letter topic made during the drain
                self._topics[name] = log
                return log, True
        log.close()  # never visible: the subscriptions it was given end
        if refused:
            raise BrokerShutdown()
        assert found is not None
        return found, False

    def _topic(self, name: Any) -> TopicLog:
        """The log of topic ``name``, created if needed."""
        return self._log_for(name)

    def _join_group(
        self, topic: str, name: str, acking: bool, creating: TopicLog | None = None
    ) -> Cursor:
        """Join consumer group ``name`` on ``topic``: its shared cursor, created (durable) on
        first use, with one more member. ``creating``: the topic's log while it is being
        created (not yet in the table)."""
        key = (topic, name)
        while True:
            log = self._log_for(topic) if creating is None else creating
            found = self._groups.get(key)
            if found is None or found.log is not log or not found.attached:
                made = Cursor(log, 0, name, acking)
                if log.attach(made, None) == AttachOutcome.GONE:
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
                raise MaxSubscribersReached(topic, self._max_subscribers)  # type: ignore[arg-type]  # a limit refused
            if refused == AttachOutcome.ATTACHED:
                return found

    def delete_group(self, topic: Any, name: Any) -> None:
        """Delete consumer group ``name`` of ``topic``: its cursor goes, and with it the
        messages only it still held; its members' subscriptions to the topic end."""
        if type(topic) is not str:
            raise TypeError(f"topic must be str, not {type(topic).__name__}")
        if type(name) is not str:
            raise TypeError(f"group must be str, not {type(name).__name__}")
        with self._lock:
            found = self._groups.pop((topic, name), None)
        if found is None:
            if topic not in self._topics:
                raise TopicNotFound(topic)
            raise GroupNotFound(topic, name)
        found.log.detach(found)

    def list_groups(self, topic: Any) -> list[str]:
        """The names of ``topic``'s consumer groups (with or without members)."""
        self._existing(topic)
        return [key[1] for key in list(self._groups) if key[0] == topic]

    def _group_cursor(self, topic: str, name: str) -> Cursor | None:
        return self._groups.get((topic, name))

    def _configure_topic(self, name: Any, overflow: int, capacity: int) -> TopicLog:
        log = self._log_for(name)
        log.configure(overflow, capacity)
        return log

    def _existing(self, name: Any) -> TopicLog:
        if self._orphans:
            self._detach_orphans()
        if type(name) is not str:
            raise TypeError(f"topic must be str, not {type(name).__name__}")
        log = self._topics.get(name)
        if log is None:
            raise TopicNotFound(name)
        return log

    def _retire(self, log: TopicLog) -> None:
        r = self._retired
        r[0] += log.published
        r[1] += log.delivered
        r[2] += log.expired
        r[3] += log.dropped
        r[4] += log.queue_full
        r[5] += log.lagged
        r[6] += log.redelivered
        r[7] += log.dead_lettered

    def _remove(self, name: str) -> TopicLog | None:
        with self._lock:
            log = self._topics.pop(name, None)
            self._pull.pop(name, None)
            for key in [key for key in self._groups if key[0] == name]:
                del self._groups[key]
            if log is not None:
                log.close()
                self._retire(log)
            return log

    def list_topics(self) -> list[str]:
        """The names of the existing topics, oldest first."""
        return list(self._topics)

    def topic_count(self) -> int:
        """How many topics exist."""
        return len(self._topics)

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its held messages are dropped and its subscriptions end."""
        self._existing(name)
        if self._remove(name) is None:
            raise TopicNotFound(name)

    def clear_topic(self, name: str) -> int:
        """Drop every message a topic holds; return how many were held."""
        return self._existing(name).clear()

    def cleanup_idle_topics(self, idle: Any) -> list[str]:
        """Remove topics with no attached subscriber and no activity for ``idle`` seconds."""
        threshold = _check_timeout(idle)
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
                    self._pull.pop(name, None)
                    for key in [key for key in self._groups if key[0] == name]:
                        del self._groups[key]
                    removed.append(log)
        for log in removed:
            log.close()
            with self._lock:
                self._retire(log)
        return [log.name for log in removed]

    def consume(self, name: str) -> Message | None:
        """Pull one message through the topic's built-in pull group, or None if none is ready."""
        if self._state == STOPPED:  # force_shutdown dropped the topics
            raise BrokerShutdown()
        log = self._existing(name)
        cursor = self._pull.get(name)
        if cursor is None:
            with self._lock:
                cursor = self._pull.get(name)
                if cursor is None:
                    cursor = Cursor(log, 0)
                    if log.attach(cursor, None):
                        raise TopicNotFound(name)
                    self._pull[name] = cursor
        got = log.take(cursor, 1)
        log.last_activity = time.time()
        if got:
            return got[0]
        if self._state != RUNNING:
            raise BrokerShutdown()
        return None

    def expire_all(self) -> int:
        """Run the TTL cleanup pass over every topic."""
        return sum(log.expire() for log in list(self._topics.values()))

    # -- lifecycle ------------------------------------------------------------------------------

    def is_shutdown(self) -> bool:
        """True once shutdown() or force_shutdown() was called."""
        return self._state != RUNNING

    def _begin_shutdown(self) -> None:
        with self._lock:
            if self._state == RUNNING:
                self._state = DRAINING
            logs = list(self._topics.values())
        self._wake_shutdown_waiters()
        for log in logs:
            log.stop_accepting()

    def _add_shutdown_waiter(self, waiter: Any) -> None:
        with self._lock:
            self._shutdown_waiters.append(waiter)

    def _remove_shutdown_waiter(self, waiter: Any) -> None:
        with self._lock:
            try:
                self._shutdown_waiters.remove(waiter)
            except ValueError:
                pass

    def _wake_shutdown_waiters(self) -> None:
        """Wake the receives no topic may wake (the state changed first: a receive that
        registers after this sees it)."""
        with self._lock:
            waiters = self._shutdown_waiters
            self._shutdown_waiters = []
        _wake_all(waiters)

    def _drained(self) -> bool:
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
            log = self._log_for(topic, True)
        stamped = stamp_all([message], topic, _now_ms(), self._ordered)
        return not log.append(stamped, True)

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
        return any(log.in_flight for log in list(self._topics.values()))

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
            self._state,
            monotonic() - self._started,
            RetiredCounts._make(self._retired),
            [log.snapshot() for log in logs],
        )


class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    def __init__(self, broker: BrokerCore) -> None:
        if not isinstance(broker, BrokerCore):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        self.broker = broker

    def publish_nowait(self, topic: str, messages: Any) -> None:
        """Publish a batch now; never waits. Raises QueueFull when the topic has no room."""
        blocked = self._publish(topic, messages)
        if blocked is not None:
            _refuse_full(blocked)

    def publish_sync(self, topic: str, messages: Any, timeout: Any = None) -> None:
        """Publish a batch from a thread (same rules as ``publish``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        seconds = _check_timeout(timeout)
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
                            _refuse_full(blocked)
                    waiter.wait(remaining)
                finally:
                    blocked.remove_room_waiter(waiter)
                if not waiter._woken and deadline is not None and monotonic() >= deadline:
                    _refuse_full(blocked)

    async def publish(self, topic: str, messages: Any, timeout: Any = None) -> None:
        """Publish a batch: all of it, with consecutive sequence numbers, or none of it.

        Under the ``block`` overflow policy waits for room, up to ``timeout`` seconds (then
        QueueFull); other policies never wait.
        """
        seconds = _check_timeout(timeout)
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
            _refuse_full(log if blocked is None else blocked)

    def _publish(
        self, topic: Any, messages: Any, target: TopicLog | None = None
    ) -> TopicLog | None:
        """Publish, or return the topic's log when it is full under the block policy (nothing
        written: the caller waits for room and calls again with it as ``target``, so a topic
        deleted meanwhile raises TopicNotFound); None once published."""
        broker = self.broker
        if broker._state != RUNNING:
            raise BrokerShutdown()
        if broker._orphans:
            broker._detach_orphans()
        log = target
        if log is None:
            log = broker._topics.get(topic) if type(topic) is str else None
            if log is None:
                validate_topic_name(topic)
        # every item is checked before the topic is created or anything is written
        stamped = stamp_all(messages, topic, _now_ms(), broker._ordered)
        if not stamped:
            return None
        if log is None:
            log = broker._log_for(topic)
        return log if log.append(stamped) else None


def _refuse_full(log: TopicLog) -> None:
    log.note_queue_full()
    raise QueueFull(log.name, log.capacity)


def _leave(cursor: Cursor) -> None:
    """A subscriber lets go of ``cursor``: a group member leaves, a plain reader detaches."""
    if cursor.group is not None:
        cursor.log.leave(cursor)
    else:
        cursor.log.detach(cursor)


class SubscriberCore:
    """The engine behind ``InMemorySubscriber``: one cursor per subscribed topic."""

    def __init__(self, broker: BrokerCore, group: Any = None, acking: bool = False) -> None:
        if not isinstance(broker, BrokerCore):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        self.group = validate_group_name(group)
        self.broker = broker
        self.acking = acking
        self._cursors: tuple[Cursor, ...] = ()
        self._topics: dict[str, Cursor] = {}
        self._next = 0
        self._closed = False
        self._patterned = False  # has pattern subscriptions: may gain topics later
        self._lock = threading.Lock()
        self._waiting: list[Any] = []

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, topic: str) -> None:
        broker = self.broker
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        if broker._state != RUNNING:
            raise BrokerShutdown()
        current = self._topics.get(topic)
        if current is not None and current.attached:
            return
        if self.group is not None:
            if type(topic) is not str:
                validate_topic_name(topic)
            cursor = broker._join_group(topic, self.group, self.acking)
        else:
            refused = AttachOutcome.GONE
            while refused == AttachOutcome.GONE:  # the topic was deleted meanwhile: look again
                log = broker._log_for(topic)
                cursor = Cursor(log, 1, None, self.acking)
                refused = log.attach(cursor, broker._max_subscribers)
            if refused:
                raise MaxSubscribersReached(topic, broker._max_subscribers)  # type: ignore[arg-type]  # a limit refused
        self._adopt(topic, cursor)

    def _join_created(self, log: TopicLog) -> None:
        """Subscribe to the topic of ``log`` while the broker creates it (from its
        ``_on_topic_creating`` hook: nothing is published to it yet)."""
        broker = self.broker
        topic = log.name
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        current = self._topics.get(topic)
        if current is not None and current.attached:
            return
        if self.group is not None:
            cursor = broker._join_group(topic, self.group, self.acking, log)
        else:
            cursor = Cursor(log, 1, None, self.acking)
            if log.attach(cursor, broker._max_subscribers):
                raise MaxSubscribersReached(topic, broker._max_subscribers)  # type: ignore[arg-type]  # a limit refused
        self._adopt(topic, cursor)

    def _adopt(self, topic: str, cursor: Cursor) -> None:
        """Record the new subscription ``cursor`` to ``topic``."""
        displaced = None
        with self._lock:
            current = self._topics.get(topic)
            if current is not None and current.attached:
                displaced = cursor  # a concurrent subscribe won: undo ours
            else:
                self._topics[topic] = cursor
            self._cursors = tuple(c for c in self._topics.values() if c.attached)
        if displaced is not None:
            _leave(displaced)
        self._subscriptions_changed()

    def _unsubscribe(self, topic: str | None) -> None:
        if topic is not None and type(topic) is not str:
            raise TypeError(f"topic must be str or None, not {type(topic).__name__}")
        with self._lock:
            if topic is None:
                dropped = list(self._topics.values())
                self._topics.clear()
            else:
                cursor = self._topics.pop(topic, None)
                if cursor is None:
                    raise NotSubscribed(f"this subscriber is not subscribed to {topic!r}")
                dropped = [cursor]
            self._cursors = tuple(c for c in self._topics.values() if c.attached)
        self._subscriptions_changed()
        for cursor in dropped:
            _leave(cursor)

    def _close(self) -> None:
        self._closed = True
        self._unsubscribe(None)

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
        cursors = list(self._topics.values())
        self._topics = {}
        self._cursors = ()
        deferred = False
        for cursor in cursors:
            lock = cursor.log.lock
            if lock.acquire(blocking=False):
                lock.release()
                _leave(cursor)
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

    def _wait_ready(self, timeout: Any, ready: Callable[[], bool]) -> bool:
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken."""
        seconds = _check_timeout(timeout)
        waiter = SyncWaiter()
        cursors = self._register(waiter)
        try:
            if any(c.attached and c.log.head != c.pos for c in cursors) or ready():
                return True
            waiter.wait(seconds)
            return waiter._woken
        finally:
            self._unregister(waiter, cursors)

    async def _wait_ready_async(self, ready: Callable[[], bool]) -> None:
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = AsyncWaiter(loop, future)
        cursors = self._register(waiter)
        try:
            if any(c.attached and c.log.head != c.pos for c in cursors) or ready():
                return
            await future
        finally:
            self._unregister(waiter, cursors)

    def is_subscribed(self) -> bool:
        """True while at least one subscription is live."""
        return any(c.attached for c in self._cursors)

    def subscribed_topics(self) -> list[str]:
        """The topics this subscriber reads, in subscription order."""
        return [c.log.name for c in self._cursors if c.attached]

    def subscribed_topic(self) -> str | None:
        """The first subscribed topic, or None (the seed's single-topic query)."""
        topics = self.subscribed_topics()
        return topics[0] if topics else None

    # -- receiving ------------------------------------------------------------------------------

    def _take(self, limit: int) -> list[Message]:
        cursors = self._cursors
        count = len(cursors)
        if count == 1:
            got = cursors[0].log.take(cursors[0], limit)
            if got:
                return got
        elif count:
            start = self._next
            self._next = (start + 1) % count
            for i in range(count):
                cursor = cursors[(start + i) % count]
                got = cursor.log.take(cursor, limit)
                if got:
                    return got
        return self._nothing()

    def _nothing(self) -> list[Message]:
        """No message is ready: raise if none can come, else return an empty batch."""
        state = self.broker._state
        if state == STOPPED:
            raise BrokerShutdown()
        if state == DRAINING:
            # Ended only once every topic refuses publishes (so none can still land) and
            # nothing is left for this reader; else the caller looks again.
            # An acknowledging reader also waits while its cursor holds unsettled messages
            # (one may come back, to any member of its group), and a reader of a dead-letter
            # topic while any message is in flight (it may be dead-lettered).
            letters = self.broker._letter_topics
            for cursor in self._cursors:
                if cursor.attached and (
                    cursor.log.accepting
                    or cursor.pending()
                    or (cursor.acking and cursor.floor_now() < cursor.pos)
                    or (cursor.log.name in letters and self.broker._letters_due())
                ):
                    return []
            raise BrokerShutdown()
        if not self._cursors or not any(c.attached for c in self._cursors):
            if self._patterned:
                return []  # waits for a topic its patterns match
            if self._closed:
                raise NotSubscribed("this subscriber is closed")
            raise NotSubscribed("subscribe to a topic before receiving")
        return []

    def try_receive(self) -> Message | None:
        """The next message if one is ready, else None."""
        got = self._take(1)
        return got[0] if got else None

    def try_receive_batch(self, max_messages: int) -> list[Message]:
        """Up to ``max_messages`` ready messages (possibly none; none at once for 0)."""
        limit = _check_batch_size(max_messages, "max_messages")
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
            self._cursors = tuple(c for c in self._topics.values() if c.attached)
        _wake_all(list(self._waiting))

    def _receive_blocking(self, limit: int, timeout: Any) -> list[Message]:
        seconds = _check_timeout(timeout)
        got = self._take(limit)
        if got:
            return got
        deadline = None if seconds is None else monotonic() + seconds
        while True:
            waiter = SyncWaiter()
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
        seconds = _check_timeout(timeout)  # bad input is refused before any take
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

    def receive_batch_sync(self, max_messages: int, timeout: Any = None) -> list[Message]:
        """Block until at least one message is ready, then return up to ``max_messages``
        (0: an empty batch at once)."""
        limit = _check_batch_size(max_messages, "max_messages")
        if not limit:
            _check_timeout(timeout)
            return []
        return self._receive_blocking(limit, timeout)


def check_timeout(timeout: Any) -> float | None:
    """Validate a timeout (seconds as int/float or a timedelta; None waits forever)."""
    return _check_timeout(timeout)


def check_count(value: Any, name: str) -> int:
    """Validate a positive count argument."""
    return _check_count(value, name)


def check_batch_size(value: Any, name: str) -> int:
    """Validate a batch receive's size (>= 0; 0 asks for an empty batch)."""
    return _check_batch_size(value, name)
