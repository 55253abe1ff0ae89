"""Join, in the pure-Python twin of the kernel (``_join.pxi`` in the compiled one): waiting
until every reader of a topic has read, and settled, what was published before the wait
(``InMemoryBroker.join`` / ``join_async``). A join waits with the publishers blocked for room
(``room_waiters``): both are woken when slots are released, and a join looks again each time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._room_py import _expire
from ._topic_log_py import TopicLog
from ._waiting_py import AsyncWaiter, SyncWaiter, monotonic

__all__ = ["settled", "wait_settled"]


def _settled_to(log: TopicLog, mark: int) -> bool:
    """Whether no message before sequence ``mark`` is still held for a reader (every reader
    read it and, acknowledging, settled it; with no reader, it was dropped). Lock held."""
    if log.ttl is not None:
        _expire(log, monotonic())
    end = min(mark, log.head)
    return log.closed or log.tail >= end or end - log.tail == log._holes_in(log.tail, end)


def _watch_settled(log: TopicLog, waiter: Any, mark: int) -> bool:
    """Register ``waiter`` to be woken as slots are released; False, registering nothing, when
    everything before ``mark`` is settled already."""
    try:
        with log.lock:
            if _settled_to(log, mark):
                return False
            log.room_waiters.append(waiter)
            return True
    finally:
        if log.room_freed or log.graves:
            log._after_unlock()


def _wait_bound(log: TopicLog, deadline: float | None) -> float | None:
    """How long one wait of a join may last: to its deadline, and no longer than the TTL (a
    message that expires meanwhile releases its slot only when a reader or the cleanup pass
    comes by, so the join looks itself)."""
    bound = None if deadline is None else max(0.0, deadline - monotonic())
    if log.ttl is not None and (bound is None or log.ttl < bound):
        bound = log.ttl
    return bound


def wait_settled(log: TopicLog, timeout: float | None) -> bool:
    """Block until every message published to ``log`` before this call was read and settled by
    every reader (True), or ``timeout`` seconds pass (False)."""
    with log.lock:
        mark = log.head
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        waiter = SyncWaiter()
        if not _watch_settled(log, waiter, mark):
            return True
        try:
            waiter.wait(_wait_bound(log, deadline))
        finally:
            log.remove_room_waiter(waiter)
        if deadline is not None and monotonic() >= deadline:
            with log.lock:
                return _settled_to(log, mark)


async def settled(log: TopicLog) -> None:
    """``wait_settled`` on the running event loop (bound it with ``asyncio.timeout``)."""
    with log.lock:
        mark = log.head
    loop = asyncio.get_running_loop()
    while True:
        future = loop.create_future()
        waiter = AsyncWaiter(loop, future)
        if not _watch_settled(log, waiter, mark):
            return
        try:
            async with asyncio.timeout(log.ttl):
                await future
        except TimeoutError:
            pass  # under a TTL: look again
        finally:
            log.remove_room_waiter(waiter)
