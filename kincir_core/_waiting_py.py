"""The twin's clock and waiters (part of the pure-Python kernel; see ``_broker_py.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

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

    __slots__ = ("_lock", "_woken", "want")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._woken = False
        # the messages its receive takes at most: what it covers when a group's line wakes it
        self.want = 1

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

    __slots__ = ("_future", "_loop", "_thread", "want")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self._loop = loop
        self._future = future
        self._thread = threading.get_ident()
        self.want = 1  # as SyncWaiter's

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
