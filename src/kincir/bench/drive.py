"""How a workload's sides run: two threads, two tasks, a thread feeding an event loop, N threads.

Each driver times what it runs, turns a failure of either side into a ``BenchError`` (waking the
other side through ``abort``), and gives up on a side still running after ``STUCK_AFTER``.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import ModuleType
from typing import Any

from .harness import (
    PAYLOAD,
    STUCK_AFTER,
    TOPIC,
    BenchError,
    Order,
    Sample,
    check,
    clock,
    latency,
)


def _guarded(
    fn: Callable[[], object], errors: list[BaseException], abort: Callable[[], None]
) -> Callable[[], None]:
    """``fn`` for a thread: a failure is kept in ``errors`` and ``abort`` wakes the other side."""

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
            abort()

    return run


def _raise_first(errors: list[BaseException], who: str) -> None:
    """``BenchError`` for the first of ``errors``, if any: ``who`` failed, and why."""
    if errors:
        raise BenchError(f"{who} failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]


def thread_pair(
    produce: Callable[[], None], consume: Callable[[], None], abort: Callable[[], None]
) -> int:
    """Run ``consume`` and ``produce`` on two threads; nanoseconds from go until consumed.

    The consumer starts first (it waits); the clock starts as the producer is released. A
    failing side calls ``abort`` (which must wake the other) and the error is raised here.
    """
    go = threading.Event()
    finished = [0]
    errors: list[BaseException] = []

    def consumer() -> None:
        try:
            consume()
            finished[0] = clock()
        except BaseException as exc:
            errors.append(exc)

    guarded = _guarded(produce, errors, abort)

    def producer() -> None:
        go.wait()
        guarded()

    threads = [
        threading.Thread(target=consumer, name="kincir-bench-consumer", daemon=True),
        threading.Thread(target=producer, name="kincir-bench-producer", daemon=True),
    ]
    try:
        for thread in threads:
            thread.start()
        started = clock()
        go.set()
        for thread in threads:
            thread.join(STUCK_AFTER)
    except BaseException:
        go.set()
        abort()
        raise
    if any(thread.is_alive() for thread in threads):
        abort()
        raise BenchError(f"producer/consumer threads still running after {STUCK_AFTER:g} s")
    _raise_first(errors, "a worker thread")
    return finished[0] - started


def ping_pong_threads(
    ping: Callable[[], list[int]], pong: Callable[[], None], abort: Callable[[], None]
) -> Sample:
    """``pong`` answers on a thread while ``ping`` times round trips on this one."""
    errors: list[BaseException] = []
    answer = _guarded(pong, errors, abort)
    thread = threading.Thread(target=answer, name="kincir-bench-pong", daemon=True)
    thread.start()
    try:
        times = ping()
    except BaseException:
        abort()
        thread.join(5.0)
        _raise_first(errors, "the pong thread")
        raise
    thread.join(STUCK_AFTER)
    check(not thread.is_alive(), "the pong thread did not finish")
    if errors:
        raise BenchError(f"the pong thread failed: {errors[0]!r}") from errors[0]
    return latency(times)


async def together(
    first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]
) -> tuple[Any, Any]:
    """Run two coroutines as tasks (``first`` created, so started, first); both results.

    If either fails, the other is cancelled and the failure raised.
    """
    tasks = [asyncio.create_task(first), asyncio.create_task(second)]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise BenchError(f"a task failed: {task.exception()!r}") from task.exception()
    return tasks[0].result(), tasks[1].result()


async def thread_to_loop(produce: Callable[[], None], consume: Coroutine[Any, Any, int]) -> int:
    """``produce`` on a thread feeds ``consume`` (a task on this loop, returning its end time).

    Nanoseconds from releasing the producer until the consumer finished.
    """
    loop = asyncio.get_running_loop()
    consumer = loop.create_task(consume)
    go = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        go.wait()
        try:
            produce()
        except BaseException as exc:
            errors.append(exc)
            try:
                loop.call_soon_threadsafe(consumer.cancel)
            except RuntimeError:  # the loop is closed already
                pass

    thread = threading.Thread(target=producer, name="kincir-bench-producer", daemon=True)
    thread.start()
    try:
        await asyncio.sleep(0)  # the consumer starts and waits for the first message
        started = clock()
        go.set()
        try:
            finished = await consumer
        except asyncio.CancelledError:
            if errors:
                raise BenchError(f"the producer thread failed: {errors[0]!r}") from errors[0]
            raise
    finally:
        go.set()
        if not consumer.done():
            consumer.cancel()
        thread.join(STUCK_AFTER)
    return finished - started


def run_threads(targets: Sequence[Callable[[], None]], abort: Callable[[], None]) -> int:
    """Run each target on a thread; nanoseconds until all of them returned."""
    errors: list[BaseException] = []
    threads = [
        threading.Thread(
            target=_guarded(fn, errors, abort), name="kincir-bench-worker", daemon=True
        )
        for fn in targets
    ]
    started = clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STUCK_AFTER)
    elapsed = clock() - started
    if any(thread.is_alive() for thread in threads):
        abort()
        raise BenchError(f"worker threads still running after {STUCK_AFTER:g} s")
    _raise_first(errors, "a worker thread")
    return elapsed


async def close_janus(q: Any) -> None:
    aclose = getattr(q, "aclose", None)
    if aclose is not None:
        await aclose()
    else:
        q.close()
        await q.wait_closed()


def load_janus() -> ModuleType:
    """The ``janus`` module (the sides that need it run only when it was found)."""
    return importlib.import_module("janus")


async def ping_pong_tasks(
    trips: int,
    ping_sub: Any,
    pong_sub: Any,
    ping_pub: Any,
    pong_pub: Any,
    ping_topic: str,
    pong_topic: str,
) -> list[int]:
    """Two tasks: ``pong`` answers each message on ``ping_topic`` with one on ``pong_topic``, while
    ``ping`` times ``trips`` round trips (a one-message ``send`` each way); the times in
    nanoseconds."""

    async def pong() -> None:
        receive = ping_sub.receive
        send = pong_pub.send
        payload = PAYLOAD
        for _ in range(trips):
            await receive()
            await send(pong_topic, payload)

    async def ping() -> list[int]:
        receive = pong_sub.receive
        send = ping_pub.send
        payload = PAYLOAD
        now = clock
        times = [0] * trips
        for i in range(trips):
            started = now()
            await send(ping_topic, payload)
            await receive()
            times[i] = now() - started
        return times

    _, times = await together(pong(), ping())
    return list(times)


def send_messages(send: Callable[[str, bytes], object], n: int) -> None:
    """The producer of the threaded workloads: ``n`` one-message sends to TOPIC."""
    payload = PAYLOAD
    for _ in range(n):
        send(TOPIC, payload)


def put_payloads(put: Callable[[bytes], object], n: int) -> None:
    """The queue baselines' producer: ``n`` puts of the payload."""
    payload = PAYLOAD
    for _ in range(n):
        put(payload)


def send_each(send: Callable[[str, Order], object], payloads: list[Order]) -> None:
    """The object workloads' threaded producer: a one-message send to TOPIC per dict."""
    for payload in payloads:
        send(TOPIC, payload)


def put_each(put: Callable[[Order], object], payloads: list[Order]) -> None:
    """The queue baselines' producer in the object workloads: a put per payload."""
    for payload in payloads:
        put(payload)


def call_times(take: Callable[[], object], n: int) -> None:
    """A consumer: ``n`` calls of ``take`` (a blocking receive or get)."""
    for _ in range(n):
        take()
