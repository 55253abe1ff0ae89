"""Room in a topic (the twin of ``_room.pxi``): what counts against its capacity, expiry, and
the overflow policies that make room. Functions over a TopicLog whose lock the caller holds
(except _wake_room, which takes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import QueueFull
from ._validate import OVERFLOW_BLOCK, OVERFLOW_DROP_NEWEST, OVERFLOW_DROP_OLDEST
from ._waiting_py import _wake_all

if TYPE_CHECKING:
    from ._cursor_py import Cursor
    from ._message_py import Message
    from ._topic_log_py import TopicLog


def _make_room(log: TopicLog, stamped: list[Message], now: float) -> list[Message] | None:
    """Room for ``stamped`` in ``log`` under its capacity, which it overflows by the slot count:
    reclaim expired messages if what counts is over too, then apply the overflow policy. The
    part of the batch to write (drop_newest cuts its end, drop_oldest its start; empty: all
    dropped), or None under the block policy (nothing written: wait for room). Raises QueueFull
    under the error policy. Lock held."""
    count = len(stamped)
    capacity = log.capacity
    assert capacity is not None
    held = _held(log)
    if log.ttl is not None and held + count > capacity:
        _expire(log, now)
        held = _held(log)
    if held + count <= capacity:
        return stamped
    if log.overflow == OVERFLOW_DROP_NEWEST:
        keep = max(0, capacity - held)
        log.dropped += count - keep
        return stamped[:keep]
    if log.overflow == OVERFLOW_DROP_OLDEST:
        if count > capacity:
            # the batch alone overflows: everything held goes, and so does the batch's start,
            # numbered like the rest
            _drop_oldest(log, log.head - log.tail)
            _skip(log, count - capacity)
            return stamped[count - capacity :]
        # the oldest slots go: acked ones behind an in-flight message free nothing, so count
        # them too
        _drop_oldest(log, log.head - log.tail - log.holes + count - capacity)
        return stamped
    if log.overflow == OVERFLOW_BLOCK and count <= capacity:
        return None
    log.queue_full += 1
    raise QueueFull(log.name, capacity)


def _held(log: TopicLog) -> int:
    """Messages held against the capacity: the most any reader holds, unread plus in flight
    (not the acked ones behind an unsettled message; none whose slot the log dropped); with
    no reader, every message the log holds."""
    if not log.cursors:
        return log.head - log.tail - log.holes
    return max(
        log.head
        - c.pos
        - log._holes_in(c.pos, log.head)
        + (min(c.unsettled, c.pos - c.floor) if c.acking else 0)
        for c in log.cursors
    )


def _queued(log: TopicLog) -> int:
    """Messages not yet read by the reader furthest behind (all held ones: no reader)."""
    if not log.cursors:
        return log.head - log.tail - log.holes
    low = min(c.pos for c in log.cursors)
    return log.head - low - log._holes_in(low, log.head)


def _skip_expired(log: TopicLog, cursor: Cursor, now: float) -> None:
    assert log.ttl is not None and log.stamps is not None
    deadline = now - log.ttl
    pos = old = cursor.pos
    head = log.head
    stamps = log.stamps
    mask = log.mask
    while pos < head and stamps[pos & mask] < deadline:
        pos += 1
    if pos != old:
        cursor.pos = pos
        expired = pos - old - log._holes_in(old, pos)
        cursor.expired += expired
        log.expired += expired
        if not cursor.acking:
            log._moved(old)
        elif cursor.floor == old:  # nothing in flight below: the floor follows
            cursor.floor = pos
            log._moved(old)


def _skip(log: TopicLog, count: int) -> None:
    """Number ``count`` messages dropped on arrival (drop_oldest, a batch larger than the
    capacity): every reader loses them, counted as lagged. Lock held, nothing held."""
    log.head += count
    log.tail = log.head
    log.holes = log.hole_end = 0
    log.published += count
    if not log.cursors:
        log.dropped += count
    for cursor in log.cursors:
        cursor.lagged += count
        cursor.dropped += count
        log.lagged += count
        log.dropped += count
        cursor.pos = cursor.floor = log.head
    log.at_tail = len(log.cursors)


def _drop_oldest(log: TopicLog, count: int) -> None:
    """Release the ``count`` oldest held messages (drop_oldest); readers that had not read
    them lose them, counted as lagged. Lock held."""
    if count <= 0:
        return
    new_tail = log._after_live(count)
    if not log.cursors:
        log.dropped += new_tail - log.tail - log._holes_in(log.tail, new_tail)
    for cursor in log.cursors:
        if cursor.pos < new_tail:
            lost = new_tail - cursor.pos - log._holes_in(cursor.pos, new_tail)
            cursor.lagged += lost
            cursor.dropped += lost
            log.lagged += lost
            log.dropped += lost
            cursor.pos = new_tail
        if cursor.floor < new_tail:
            cursor.floor = new_tail
    log._release_to(new_tail)
    if log.cursors:
        low = min(c.tracked() for c in log.cursors)
        log.at_tail = sum(1 for c in log.cursors if c.tracked() == low)


def _wake_room(log: TopicLog) -> None:
    """Wake the publishers waiting for room (after the lock is released)."""
    with log.lock:
        waiters = log.room_waiters
        log.room_waiters = []
        log.room_freed = False
    _wake_all(waiters)


def _expire(log: TopicLog, now: float) -> int:
    """The cleanup pass: move every reader past expired messages; reclaim orphans."""
    before = log.expired
    if log.cursors:
        for cursor in list(log.cursors):
            _skip_expired(log, cursor, now)
    elif log.stamps is not None and log.ttl is not None:
        deadline = now - log.ttl
        pos = log.tail
        while pos < log.head and log.stamps[pos & log.mask] < deadline:
            pos += 1
        log.expired += pos - log.tail - log._holes_in(log.tail, pos)
        log._release_to(pos)
    return log.expired - before
