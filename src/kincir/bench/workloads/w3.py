"""W3: producer thread -> consumer thread. W3o: the same with a dict per message
(``harness.orders``), the stdlib queues putting the same dicts."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..drive import (
    call_times,
    close_janus,
    load_janus,
    put_each,
    put_payloads,
    send_each,
    send_messages,
    thread_pair,
)
from ..harness import STUCK_AFTER, Order, Sample, Sizes, check, fast_setup, orders, throughput


def kincir_messages(sizes: Sizes) -> Sample:
    n = sizes.w3_messages
    broker, (sub,), pub = fast_setup()

    def produce() -> None:
        send_messages(pub.send_nowait, n)

    def consume() -> None:
        call_times(sub.receive_sync, n)

    elapsed = thread_pair(produce, consume, broker.force_shutdown)
    check(sub.try_receive() is None, "W3: kincir delivered too few")
    broker.force_shutdown()
    return throughput(n, elapsed)


def stdlib_queue(
    factory: Callable[[], queue.SimpleQueue[bytes] | queue.Queue[bytes]],
) -> Callable[[Sizes], Sample]:
    def run(sizes: Sizes) -> Sample:
        n = sizes.w3_messages
        q = factory()

        def produce() -> None:
            put_payloads(q.put, n)

        def consume() -> None:
            call_times(q.get, n)

        return throughput(n, thread_pair(produce, consume, lambda: None))

    return run


def kincir_objects(sizes: Sizes) -> Sample:
    """W3o: ``kincir_messages`` with a dict per message."""
    n = sizes.w3_messages
    payloads = orders(n)
    broker, (sub,), pub = fast_setup()

    def produce() -> None:
        send_each(pub.send_nowait, payloads)

    def consume() -> None:
        call_times(sub.receive_sync, n)

    elapsed = thread_pair(produce, consume, broker.force_shutdown)
    check(sub.try_receive() is None, "W3o: kincir delivered too few")
    broker.force_shutdown()
    return throughput(n, elapsed)


def stdlib_objects(
    factory: Callable[[], queue.SimpleQueue[Order] | queue.Queue[Order]],
) -> Callable[[Sizes], Sample]:
    """W3o's baselines: ``stdlib_queue`` putting the dicts of ``orders``."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.w3_messages
        payloads = orders(n)
        q = factory()

        def produce() -> None:
            put_each(q.put, payloads)

        def consume() -> None:
            call_times(q.get, n)

        return throughput(n, thread_pair(produce, consume, lambda: None))

    return run


def janus_sync(sizes: Sizes) -> Sample:
    """janus's sync side on both threads; its queue lives on an event loop in a third thread."""
    janus = load_janus()
    n = sizes.w3_messages
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="kincir-bench-janus-loop", daemon=True)
    runner.start()
    try:

        async def make() -> Any:
            return janus.Queue()

        q = asyncio.run_coroutine_threadsafe(make(), loop).result(STUCK_AFTER)
        sync_q = q.sync_q

        def produce() -> None:
            put_payloads(sync_q.put, n)

        def consume() -> None:
            call_times(sync_q.get, n)

        elapsed = thread_pair(produce, consume, lambda: None)
        asyncio.run_coroutine_threadsafe(close_janus(q), loop).result(STUCK_AFTER)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(STUCK_AFTER)
        loop.close()
    return throughput(n, elapsed)
