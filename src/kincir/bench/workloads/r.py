"""R: a Router stage against the same stage built by hand from queues and threads, and what
each Router option costs against the plain Router, in the same repetitions.

Every side moves the same messages through the same trivial handler (it returns its input);
the producer publishes (puts) one message at a time and the consumer receives (gets) them one
at a time from the output, so the sides differ only in the stage between.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kincir import AckStrategy, Router
from kincir.memory import InMemoryPublisher

from ..drive import call_times, put_payloads, send_messages, thread_pair
from ..harness import STUCK_AFTER, TOPIC, Sample, Sizes, check, fast_broker, subscriber, throughput

T = TypeVar("T")

#: The batch handler's batch size (``Router(batch_size=)``, and the hand-made stage's gets).
BATCH_SIZE = 64
#: The processing timeout of the timed side: long enough never to fire.
TIMEOUT = 30.0
#: How long R/wait's handler waits per message, as one that calls a service would.
WAIT_SECONDS = 0.0005


def kincir_router(workers: int, **options: Any) -> Callable[[Sizes], Sample]:
    """The Router side: ``workers`` threads, with ``options`` (``batch_size``,
    ``processing_timeout``, ``ack_strategy``) passed to ``Router``."""
    return lambda sizes: _kincir_run(sizes, workers, options)


def kincir_router_waiting(workers: int) -> Callable[[Sizes], Sample]:
    """R/wait's Router side: ``workers`` threads whose handler waits ``WAIT_SECONDS`` per
    message (the GIL released meanwhile, as for I/O)."""
    return lambda sizes: _kincir_run(sizes, workers, {}, _wait_then_echo, sizes.r_wait_messages)


def _echo(item: T) -> T:
    """The handler of every side: its input is its output."""
    return item


def _wait_then_echo(item: T) -> T:
    """R/wait's handler: a wait, then its input as its output."""
    time.sleep(WAIT_SECONDS)
    return item


def _kincir_run(
    sizes: Sizes,
    workers: int,
    options: dict[str, Any],
    handler: Callable[[Any], Any] = _echo,
    messages: int | None = None,
) -> Sample:
    n = sizes.r_messages if messages is None else messages
    broker = fast_broker()
    out = subscriber(broker, "bench.out")
    router = Router(broker, TOPIC, "bench.out", handler, concurrency=workers, **options)
    router.start()
    pub = InMemoryPublisher(broker)

    def produce() -> None:
        send_messages(pub.send_nowait, n)

    def consume() -> None:
        receive = out.receive_sync
        for _ in range(n):
            receive(STUCK_AFTER)

    try:
        elapsed = thread_pair(produce, consume, broker.force_shutdown)
    finally:
        router.stop(STUCK_AFTER)
        broker.force_shutdown()
    stats = router.stats()
    settled = stats.acked if options.get("ack_strategy") is not AckStrategy.NEVER_ACK else n
    check(
        stats.processed == n and settled == n and stats.timed_out == 0,
        f"R: the router processed {stats.processed} and settled {settled}, not {n}",
    )
    sample = throughput(n, elapsed)
    sample.raw["workers"] = workers
    sample.raw["batch_size"] = options.get("batch_size") or 1
    return sample


def queue_stage(workers: int, batch: int | None = None) -> Callable[[Sizes], Sample]:
    """The hand-made side: ``workers`` threads between two ``queue.Queue``; with ``batch``,
    each takes up to that many items ready (one ``get``, then ``get_nowait``) per call."""
    return lambda sizes: _queues_run(sizes, workers, batch)


def _queues_run(sizes: Sizes, workers: int, batch: int | None) -> Sample:
    """The same stage by hand: worker threads, queue.Queue in (task_done), queue.Queue out."""
    n = sizes.r_messages
    inbox: queue.Queue[bytes | None] = queue.Queue()
    outbox: queue.Queue[bytes] = queue.Queue()

    def stage() -> None:
        get, put, done = inbox.get, outbox.put, inbox.task_done
        while (item := get()) is not None:
            put(_echo(item))
            done()

    def batch_stage(size: int) -> None:
        get, get_nowait, put, done = inbox.get, inbox.get_nowait, outbox.put, inbox.task_done
        while (item := get()) is not None:
            items = [item]
            try:
                while len(items) < size:
                    more = get_nowait()
                    if more is None:
                        inbox.put(None)  # the end: for the next loop
                        break
                    items.append(more)
            except queue.Empty:
                pass
            for output in _echo(items):
                put(output)
            for _ in items:
                done()

    threads = [
        threading.Thread(
            target=stage if batch is None else batch_stage,
            args=() if batch is None else (batch,),
            name="kincir-bench-stage",
            daemon=True,
        )
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()

    def produce() -> None:
        put_payloads(inbox.put, n)

    def consume() -> None:
        call_times(outbox.get, n)

    try:
        elapsed = thread_pair(produce, consume, lambda: None)
    finally:
        for _ in threads:
            inbox.put(None)
        for thread in threads:
            thread.join(STUCK_AFTER)
    return throughput(n, elapsed)
