"""The processing timeout of thread workers: one watchdog thread per router, not a thread per
handler call.

A worker runs its handler itself, after stamping its ``Slot`` with a deadline. The watchdog
sleeps until the earliest deadline of the calls in progress (a call that begins later has a
later deadline, so a sleep never misses one), and takes over a call past its deadline: it
settles the call's messages as timed out and marks the slot ``expired``; the worker, once its
handler returns, finds the mark and discards the late result. The slot's lock decides which of
the two, worker or watchdog, settles a call that ends at its deadline; in time, a call costs a
clock read and one uncontended lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kincir_core import Message


class Slot:
    """One worker thread's handler call in progress, as the watchdog sees it.

    The worker, around each call (inline, as ``Router._call_sync`` does: it is every message's
    path): ``call = (sub, messages, handles)``, then ``deadline = now + timeout``; after the
    call, under ``lock``: read ``expired``, clear it and ``deadline``. An expired call was
    settled by the watchdog: its result is discarded.
    """

    __slots__ = ("call", "deadline", "expired", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: What the call in progress handles: (subscriber, messages, handles).
        self.call: tuple[Any, list[Message], list[Any]] | None = None
        #: When the call in progress times out (monotonic); None between calls.
        self.deadline: float | None = None
        #: The watchdog took the call over: its worker is still in the handler, holding nothing.
        self.expired = False


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
            call, slot.call = slot.call, None
            # settled under the lock, so that a worker ending now waits for it, and stop() sees
            # ``expired`` only once the call's messages are settled
            if call is not None:
                self._on_expiry(*call)
            slot.expired = True
