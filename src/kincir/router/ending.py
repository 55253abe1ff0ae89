"""How a router's run ends: at the end of its input stream (every worker read the input's end
after settling what it handled: the output topic is closed, so the end flows down a pipeline) or
by a stop (``stop()``, or the broker shutting down). ``join`` and ``wait_closed`` wait for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class RunEnd:
    """The outcome of a router's current (or last) run, and the threads and tasks waiting for it.

    A run ends once all of its ``workers`` exited: reached, when every one of them exited at
    the end of the input (``at_end`` then runs, before anyone is woken); stopped otherwise.
    """

    __slots__ = (
        "_all_at_end",
        "_at_end",
        "_done",
        "_exited",
        "_lock",
        "_reached",
        "_waiters",
        "_workers",
        "run",
    )

    def __init__(self, at_end: Callable[[], None]) -> None:
        self._at_end = at_end
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._reached: bool | None = None
        self._workers = 0
        self._exited = 0
        self._all_at_end = True
        #: The run's number (one per start() or run()): workers of an earlier run do not count.
        self.run = 0

    def begin(self, workers: int) -> int:
        """A run begins with ``workers`` workers; its number."""
        with self._lock:
            self.run += 1
            self._workers = workers
            self._exited = 0
            self._all_at_end = True
            self._reached = None
            self._done.clear()
            return self.run

    def exited(self, run: int, at_end: bool) -> None:
        """A worker of ``run`` exited, having read the end of the input (``at_end``) or not
        (stopped, or the broker shut down)."""
        with self._lock:
            if run != self.run or self._reached is not None:
                return
            self._exited += 1
            self._all_at_end = self._all_at_end and at_end
            if self._exited < self._workers:
                return
            reached = self._all_at_end
        if reached:
            self._at_end()
        self._settle(run, reached)

    def stopped(self) -> None:
        """The run was stopped (``stop()``, the end of ``run()``, the broker shutting down),
        unless all of its workers had already read the end (``exited`` concludes it then)."""
        with self._lock:
            if self._exited >= self._workers and self._all_at_end:
                return
            run = self.run
        self._settle(run, False)

    def _settle(self, run: int, reached: bool) -> None:
        with self._lock:
            if run != self.run or self._reached is not None:
                return
            self._reached = reached
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                pass

    def join(self, timeout: float | None) -> bool:
        if not self._done.wait(timeout):
            raise TimeoutError(f"the router's input did not end within {timeout:g} s")
        return self._reached is True

    async def wait(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return self._reached is True
            self._waiters.append((loop, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(f"the router's input did not end within {timeout:g} s") from None
        finally:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))
        return self._reached is True


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
