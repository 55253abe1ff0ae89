"""Pure-Python twin of ``_broker.pyx``, the engine's kernel: topic logs, cursors, waiting, and
the hot calls. The broker and subscriber management above it is written once (``_topics.py``,
``_subscriptions.py``) and runs on either kernel.

Same names, behaviour and errors as the compiled engine; read that file's header for the design.
In short: a topic is a ring of message slots addressed by sequence number; every reader owns a
cursor (a sequence number) into it; a slot is released once every cursor has passed it. One lock
per topic guards its ring, cursors and counters.
Waiters are one-shot: a publish takes the topic's waiter list and wakes each one after unlocking.
A consumer group's members wait in line on its cursor, and only the first is on the topic's list:
a publish wakes one member, which passes the wake on to the next when it stops waiting with
messages still unread (one member woken per message, none left waiting beside unread messages).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from ._codes import AttachOutcome, BrokerState
from ._errors import (
    BrokerShutdown,
    QueueFull,
    TopicNotFound,
)
from ._message_py import Message, payload_size, stamp_all
from ._rows import CursorCounts, TopicRow
from ._validate import (
    OVERFLOW_BLOCK,
    OVERFLOW_DROP_NEWEST,
    OVERFLOW_DROP_OLDEST,
    OVERFLOW_POLICIES,
    check_batch_size,
    check_timeout,
    validate_topic_name,
)

RUNNING = BrokerState.RUNNING

# Estimated bytes a held message costs beyond its payload and its ring slot: the message object
# and the bytes object header. Used by the memory estimate, which is kept incrementally.
MESSAGE_OVERHEAD = 80 + 33
_MIN_RING = 16
# A ring that grew shrinks back once it is less than 1/8 full, to four times what it holds but
# never below _RING_FLOOR slots: it grows only when full, so a steady queue never resizes.
_RING_FLOOR = 1024
# Bytes one allocated ring slot costs (the memory estimate counts the whole ring): a list item,
# and with a TTL a float and its list item.
_SLOT_BYTES = 8
_STAMP_BYTES = 8 + 24

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
        ordered: bool,
        overflow: int,
    ) -> None:
        self.name = name
        self.ordered = ordered
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

    def attach(self, cursor: Cursor, limit: int) -> AttachOutcome:
        """Start ``cursor``: the first reader inherits held messages, later ones start at the end.

        Returns AttachOutcome.FULL if ``limit`` subscribers are already attached,
        AttachOutcome.GONE if the topic was deleted (nothing changed in either case), else
        AttachOutcome.ATTACHED.
        """
        with self.lock:
            if self.closed:
                return AttachOutcome.GONE
            if limit >= 0 and cursor.members and self.subscriber_count() >= limit:
                return AttachOutcome.FULL
            cursor.pos = self.tail if not self.cursors else self.head
            cursor.floor = cursor.pos
            self.cursors.append(cursor)
            cursor.attached = True
            if cursor.pos == self.tail:
                self.at_tail += 1
            self.last_activity = time.time()
            return AttachOutcome.ATTACHED

    def join(self, cursor: Cursor, limit: int) -> AttachOutcome:
        """One more subscriber on an attached group cursor: ATTACHED, or FULL if ``limit``
        subscribers are already attached (-1: no limit), or GONE if the group or topic is gone
        (nothing changed)."""
        with self.lock:
            if self.closed or not cursor.attached:
                return AttachOutcome.GONE
            if limit >= 0 and self.subscriber_count() >= limit:
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

    def touch(self) -> None:
        """Stamp the topic active now (a pull through ``consume``)."""
        self.last_activity = time.time()

    def append_letter(self, message: Message) -> bool:
        """Append a dead letter (accepted while the broker drains): False if the topic is full
        under the block policy (a dead letter never waits); raises what a publish raises."""
        stamped = stamp_all([message], self.name, _now_ms(), self.ordered)
        return not self.append(stamped, True)

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

    def publish_nowait(self, topic: str, messages: Any) -> None:
        """Publish a batch now; never waits. Raises QueueFull when the topic has no room."""
        blocked = self._publish(topic, messages)
        if blocked is not None:
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
        stamped = stamp_all(messages, topic, _now_ms(), broker._ordered)  # type: ignore[attr-defined]
        if not stamped:
            return None
        if log is None:
            log = broker._topic(topic)  # type: ignore[attr-defined]
        return log if log.append(stamped) else None


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

    def _wait_ready(self, timeout: Any, ready: Callable[[], bool]) -> bool:
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken."""
        seconds = check_timeout(timeout)
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
        """No message is ready: an empty batch while one may come, else raise (SubscriberCore's
        ``_nothing_ready`` decides)."""
        if self.broker._state != RUNNING or not any(c.attached for c in self._cursors):
            self._nothing_ready()  # type: ignore[attr-defined]
        return []

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
        limit = check_batch_size(max_messages, "max_messages")
        if not limit:
            check_timeout(timeout)
            return []
        return self._receive_blocking(limit, timeout)


# A receive never awaited warns under the public class's name, as the compiled engine's does.
SubscriberKernel.receive.__qualname__ = "SubscriberCore.receive"
