"""The twin's cursors and topic logs (part of the pure-Python kernel; see ``_broker_py.py``)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ._codes import AttachOutcome
from ._cursor_py import Cursor
from ._errors import BrokerShutdown, TopicClosed, TopicNotFound
from ._message_py import Message, payload_size, stamp_all
from ._room_py import _expire, _held, _make_room, _queued, _skip_expired, _wake_room
from ._rows import TopicRow
from ._validate import (
    OVERFLOW_BLOCK,
    OVERFLOW_POLICIES,
)
from ._waiting_py import AsyncWaiter, _now_ms, _wake_all, monotonic

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
        self.graves: list[Message] = []  # released messages with object payloads: _wake_room
        self.ring: list[Message | None] = [None] * _MIN_RING
        self.mask = _MIN_RING - 1
        self.stamps: list[float] | None = [0.0] * _MIN_RING if ttl is not None else None
        self.head = 1
        self.tail = 1
        # tombstones: slots (None) in [tail, hole_end) of settled messages that the last
        # acknowledging reader to leave had delivered behind an unsettled one. Every read skips
        # them and no count or size includes them; ``holes`` counts them (0: hole_end is 0)
        self.holes = 0
        self.hole_end = 0
        self.cursors: list[Cursor] = []
        self.at_tail = 0
        self.waiters: list[Any] = []
        self.lined = 0  # cursors whose line of waiting group members is not empty
        self.wakes = 0  # receives it woke (wake_count)
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
        self.ended = False  # closed for writing (close_topic): readers end once drained

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
        holes = self._holes_in(self.tail, new_tail)
        for seq in range(self.tail, new_tail):
            msg = ring[seq & mask]
            ring[seq & mask] = None
            if msg is not None:
                freed += payload_size(msg)
                if type(msg._payload) is not bytes:
                    # freeing an object may run Python code (``__del__``, a weakref callback
                    # that calls the broker): never under the lock; _wake_room drops it
                    self.graves.append(msg)
        self.held_bytes -= freed + (new_tail - self.tail - holes) * MESSAGE_OVERHEAD
        self.tail = new_tail
        if holes:
            self.holes -= holes
            if not self.holes:
                self.hole_end = 0
        if self.room_waiters:
            self.room_freed = True
        size = self.mask + 1
        held = self.head - new_tail
        if size > _RING_FLOOR and held * 8 < size:
            fit = _RING_FLOOR
            while fit < held * 4:
                fit *= 2
            self._resize(fit)

    def _holes_in(self, start: int, end: int) -> int:
        """The tombstones among the slots [start, end) (lock held)."""
        if start >= self.hole_end:
            return 0
        start = max(start, self.tail)
        end = min(end, self.hole_end)
        if start == self.tail and end == self.hole_end:
            return self.holes
        ring = self.ring
        mask = self.mask
        return sum(1 for seq in range(start, end) if ring[seq & mask] is None)

    def _after_live(self, count: int) -> int:
        """The sequence after the ``count`` oldest held messages (tombstones skipped)."""
        if not self.holes:
            return min(self.tail + count, self.head)
        ring = self.ring
        mask = self.mask
        seq = self.tail
        while count and seq < self.head:
            if ring[seq & mask] is not None:
                count -= 1
            seq += 1
        return seq

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

    def _after_unlock(self) -> None:
        """Drop the payloads the log let go of under its lock, then wake the publishers
        waiting for room if some was freed."""
        if self.graves:
            # list.clear empties the list before dropping the items: a payload's finalizer
            # that publishes and reads (adding graves) finds a consistent list
            self.graves.clear()
        if self.room_freed:
            _wake_room(self)

    # -- publishing -----------------------------------------------------------------------------

    def append(self, stamped: list[Message], letter: bool = False) -> bool:
        """Append a stamped batch atomically: all of it gets consecutive sequence numbers, or
        none does. Returns True, writing nothing, when the topic is full under the block policy
        (the caller waits for room and retries). ``letter``: a dead letter, accepted while the
        broker drains."""
        try:
            return self._append(stamped, letter)
        finally:
            if self.room_freed or self.graves:
                self._after_unlock()

    def _append(self, stamped: list[Message], letter: bool = False) -> bool:
        count = len(stamped)
        if not count:
            return False
        now = monotonic()
        with self.lock:
            # first: a force_shutdown closes the topics too; a dead letter passes a draining
            # topic
            if not self.accepting and not letter:
                if self.ended:
                    raise TopicClosed(self.name)
                raise BrokerShutdown()
            if self.closed:
                raise TopicNotFound(self.name)
            self.last_activity = stamped[0]._enqueued_at * 1e-3
            if not self.cursors and not self.persistence:
                self.dropped += count
                return False
            # the slots (not tombstones) bound what counts against the capacity; only when
            # that count (unread plus in flight, not the settled messages pinned behind an
            # unsettled one) is over does a publish reclaim expired messages
            held = self.head - self.tail - self.holes
            capacity = self.capacity
            if capacity is not None and held + count > capacity:
                room = _make_room(self, stamped, now)
                if room is None:
                    return True
                if not room:
                    return False
                stamped = room
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
                self.wakes += len(waiters)
            if self.lined:
                called = [w for c in self.cursors if c.waiters for w in self._call_line(c)]
                # (an empty ``waiters`` is still the topic's list: not extended)
                waiters = waiters + called if waiters else called
        if waiters:
            _wake_all(waiters)
        return False

    def _call_line(self, cursor: Cursor, every: bool = False) -> list[Any]:
        """Take the members of ``cursor``'s line the unread messages call for (``every``: all
        of them) off it, into its called list, and return them to wake (lock held).

        A member the line woke covers ``want`` messages until it comes back (remove_waiter):
        members are woken only while the unread messages exceed what the called ones cover, so
        a publish of k messages wakes at most k members.
        """
        line = cursor.waiters
        if not line:
            return []
        unread = self.head - cursor.pos if cursor.attached else 0
        woken = []
        while line and (every or cursor.covered < unread):
            waiter = line.pop(0)
            cursor.called.append(waiter)
            cursor.covered += waiter.want
            woken.append(waiter)
        if not line:
            self.lined -= 1
        self.wakes += len(woken)
        return woken

    def wait_room(self, waiter: Any, count: int) -> bool:
        """Register ``waiter`` to be woken when ``count`` messages fit: True if registered,
        False if the publisher should retry now (room, a policy change, deletion, shutdown)."""
        try:
            with self.lock:
                if self.ttl is not None:
                    _expire(self, monotonic())
                if (
                    not self.closed
                    and self.accepting
                    and self.overflow == OVERFLOW_BLOCK
                    and self.capacity is not None
                    and _held(self) + count > self.capacity
                ):
                    self.room_waiters.append(waiter)
                    return True
                return False
        finally:
            if self.room_freed or self.graves:
                self._after_unlock()

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
        _wake_room(self)

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
        if self.room_freed or self.graves:
            self._after_unlock()
        return held_from

    # -- reading --------------------------------------------------------------------------------

    def take(self, cursor: Cursor, limit: int) -> list[Message]:
        """Up to ``limit`` messages for ``cursor``, in sequence order."""
        try:
            return self._take(cursor, limit)
        finally:
            if self.room_freed or self.graves:
                self._after_unlock()

    def _take(self, cursor: Cursor, limit: int) -> list[Message]:
        with self.lock:
            if not cursor.attached or cursor.pos == self.head:
                return []
            now = monotonic()
            if self.ttl is not None:
                _skip_expired(self, cursor, now)
            old = cursor.pos
            if old < self.hole_end:
                return self._take_past_holes(cursor, limit)
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

    def _take_past_holes(self, cursor: Cursor, limit: int) -> list[Message]:
        """``_take`` for a reader among tombstones: skips them, and those after its last
        message too (a reader never rests on one). Lock held."""
        ring = self.ring
        mask = self.mask
        head = self.head
        old = pos = cursor.pos
        first = 0  # the first message taken
        out: list[Message] = []
        while pos < head and len(out) < limit:
            msg = ring[pos & mask]
            if msg is not None:
                if not out:
                    first = pos
                out.append(msg)
            pos += 1
        while pos < self.hole_end and pos < head and ring[pos & mask] is None:
            pos += 1
        cursor.pos = pos
        taken = len(out)
        if not cursor.acking:
            cursor.delivered += taken
            self.delivered += taken
            self._moved(old)
        else:  # its floor stays at its oldest unsettled message, past the tombstones before
            cursor.unsettled += taken
            self.in_flight += taken
            if cursor.floor == old:
                cursor.floor = first if taken else pos
                if cursor.floor != old:
                    self._moved(old)
        return out

    def _drop_settled(self, cursor: Cursor) -> None:
        """The last reader, an acknowledging one, left: of the messages it delivered, drop the
        settled ones, keeping the unsettled ones (``cursor.kept``) for the next reader. Their
        slots become tombstones. Lock held."""
        kept = set(cursor.kept or ())
        end = min(cursor.pos, cursor.kept_end)
        ring = self.ring
        mask = self.mask
        freed = 0
        for seq in range(max(cursor.floor, self.tail), end):
            msg = ring[seq & mask]
            if seq in kept or msg is None:
                continue
            ring[seq & mask] = None
            freed += payload_size(msg) + MESSAGE_OVERHEAD
            if type(msg._payload) is not bytes:
                self.graves.append(msg)  # never freed under the lock (see _release_to)
            self.holes += 1
        if not freed:
            return
        self.held_bytes -= freed
        if end > self.hole_end:
            self.hole_end = end
        if self.room_waiters:
            self.room_freed = True
        tail = self.tail
        while tail < self.hole_end and ring[tail & mask] is None:
            tail += 1
        if tail != self.tail:
            self._release_to(tail)

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
            if self.room_freed or self.graves:
                self._after_unlock()

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
                    self.dropped += self.head - self.tail - self.holes
                    self._release_to(self.head)
                elif cursor.kept is not None and cursor.floor < cursor.pos:
                    self._drop_settled(cursor)
            cursor.kept = None
            waiters = self._take_all_waiters()
            waiters.extend(self._call_line(cursor, every=True))
        _wake_all(waiters)

    def _take_all_waiters(self) -> list[Any]:
        """Every waiter, group members in line included, to wake after unlocking (lock held):
        something other than a publish happened that each must look at."""
        waiters = self.waiters
        self.waiters = []
        for cursor in self.cursors:
            waiters.extend(self._call_line(cursor, every=True))
        return waiters

    def add_waiter(self, waiter: Any, cursor: Cursor | None = None) -> None:
        """Register ``waiter`` to be woken by the next publish; a member of ``cursor``'s group
        joins the line (it takes what is unread itself before it waits)."""
        with self.lock:
            line = cursor.waiters if cursor is not None else None
            if line is None:
                self.waiters.append(waiter)
                return
            line.append(waiter)
            if len(line) == 1:
                self.lined += 1

    def remove_waiter(self, waiter: Any, cursor: Cursor | None = None) -> None:
        """Unregister ``waiter``. A member the line woke no longer covers a message: the next in
        line is woken if the unread messages call for it (it may have taken none)."""
        line = cursor.waiters if cursor is not None else None
        with self.lock:
            if line is None or cursor is None:
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass
                return
            called = cursor.called
            for i in range(len(called) - 1, -1, -1):
                if called[i] is waiter:
                    # the members woken before it on an event loop it overtook: that loop may
                    # never run them (stopped, blocked), so they cover nothing any more
                    for j in range(i, -1, -1):
                        other = called[j]
                        if j == i or isinstance(other, AsyncWaiter):
                            cursor.covered -= other.want
                            del called[j]
                    break
            else:
                for i in range(len(line) - 1, -1, -1):
                    if line[i] is waiter:
                        del line[i]
                        if not line:
                            self.lined -= 1
                        break
            after = self._call_line(cursor)
        _wake_all(after)

    def waiter_count(self) -> int:
        """Waiters registered and not yet woken (a gauge for tests and debugging)."""
        with self.lock:
            return len(self.waiters) + sum(len(c.waiters) for c in self.cursors if c.waiters)

    def wake_count(self) -> int:
        """Waiting receives this topic woke so far: its publishes' plain readers, and every
        group member a line woke (a gauge for tests and debugging)."""
        return self.wakes

    def wake_waiters(self) -> None:
        with self.lock:
            waiters = self._take_all_waiters()
        _wake_all(waiters)

    def stop_accepting(self, end: bool = False) -> None:
        """Refuse publishes from now on and wake the waiters to notice: the broker shuts down,
        or (``end``) the topic is closed for writing."""
        with self.lock:
            self.accepting = False
            self.ended = self.ended or end
            waiters = self._take_all_waiters()
        _wake_all(waiters)
        _wake_room(self)  # blocked publishers retry and meet BrokerShutdown or TopicClosed

    # -- maintenance ----------------------------------------------------------------------------

    def expire(self) -> int:
        """Run the TTL cleanup pass now; return how many (reader, message) pairs expired."""
        if self.ttl is None:
            return 0
        with self.lock:
            n = _expire(self, monotonic())
        if self.room_freed or self.graves:
            self._after_unlock()
        return n

    def clear(self) -> int:
        """Drop every held message (each reader's unread ones counted as dropped)."""
        with self.lock:
            held = _held(self)
            for cursor in self.cursors:
                lost = self.head - cursor.pos - self._holes_in(cursor.pos, self.head)
                cursor.dropped += lost
                self.dropped += lost
                cursor.pos = self.head
                cursor.floor = self.head
            if not self.cursors:
                self.dropped += held
            self._release_to(self.head)
            self.at_tail = len(self.cursors)
            self.last_activity = time.time()
        if self.room_freed or self.graves:
            self._after_unlock()
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
        _wake_room(self)  # blocked publishers retry and meet TopicNotFound
        self.graves.clear()
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
                c.pos + self._holes_in(c.pos, self.head) == self.head
                and not (c.acking and c.floor < c.pos)
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
                _queued(self),
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
