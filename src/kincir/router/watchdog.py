"""The processing timeout of thread workers: one watchdog thread per router, not a thread per
handler call.

A worker runs its handler itself, between ``Slot.begin`` (which stamps a deadline) and
``Slot.end``. The watchdog sleeps until the earliest deadline of the calls in progress (a call
that begins later has a later deadline, so a sleep never misses one), and takes over a call
past its deadline: it settles the call's messages as timed out and marks the slot ``expired``.
``end`` then tells the worker whether its call was still its own: the late result of an
expired one is discarded. The slot's lock decides which of the two, worker or watchdog, settles
a call that ends at its deadline; in time, a call costs a clock read and one uncontended lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kincir_core import Message


class Slot:
    """One worker thread's handler call in progress, as the watchdog sees it."""

    __slots__ = ("deadline", "expired", "handles", "lock", "messages", "sub")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: When the call in progress times out (monotonic); None between calls.
        self.deadline: float | None = None
        #: The watchdog took the call over: its worker is still in the handler, holding nothing.
        self.expired = False
        self.sub: Any = None
        self.messages: list[Message] = []
        self.handles: list[Any] = []

    def begin(self, sub: Any, messages: list[Message], handles: list[Any], timeout: float) -> None:
        self.sub = sub
        self.messages = messages
        self.handles = handles
        self.deadline = time.monotonic() + timeout  # last: the watchdog looks at it first

    def end(self) -> bool:
        """The handler returned (or raised): True if the call is still the worker's to settle,
        False if it timed out and the watchdog settled it."""
        with self.lock:
            expired = self.expired
            self.expired = False
            self.deadline = None
        return not expired


#: What the watchdog calls for an expired call: (subscriber, messages, handles).
OnExpiry = Callable[[Any, list[Message], list[Any]], None]


class Watchdog:
    """The thread that times out the handler calls of a router's worker threads."""

    __slots__ = ("_done", "_on_expiry", "_slots", "_thread", "_timeout")

    def __init__(self, timeout: float, slots: Sequence[Slot], on_expiry: OnExpiry) -> None:
        self._timeout = timeout
        self._slots = tuple(slots)
        self._on_expiry = on_expiry
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="kincir-router-watchdog", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        timeout, done = self._timeout, self._done
        while not done.is_set():
            now = time.monotonic()
            wake = now + timeout
            for slot in self._slots:
                deadline = slot.deadline
                if deadline is None:
                    continue
                if deadline <= now:
                    self._expire(slot, now)
                elif deadline < wake:
                    wake = deadline
            done.wait(wake - now)

    def _expire(self, slot: Slot, now: float) -> None:
        with slot.lock:
            deadline = slot.deadline
            if deadline is None or deadline > now:
                return  # the call ended meanwhile (and maybe a new one began)
            slot.deadline = None
            # settled under the lock, so that a worker ending now waits for it, and stop() sees
            # ``expired`` only once the call's messages are settled
            self._on_expiry(slot.sub, slot.messages, slot.handles)
            slot.expired = True
            slot.sub, slot.messages, slot.handles = None, [], []
