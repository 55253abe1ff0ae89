"""R: a Router stage against the same stage built by hand from queues and threads."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from kincir import Router
from kincir.memory import InMemoryPublisher

from ..drive import call_times, publish_messages, put_payloads, thread_pair
from ..harness import STUCK_AFTER, TOPIC, Sample, Sizes, check, fast_broker, subscriber, throughput


def kincir_router(workers: int) -> Callable[[Sizes], Sample]:
    return lambda sizes: _kincir_run(sizes, workers)


def _kincir_run(sizes: Sizes, workers: int) -> Sample:
    n = sizes.r_messages
    broker = fast_broker()
    out = subscriber(broker, "bench.out")
    router = Router(broker, TOPIC, "bench.out", lambda msg: msg, concurrency=workers)
    router.start()
    pub = InMemoryPublisher(broker)

    def produce() -> None:
        publish_messages(pub.publish_nowait, n)

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
    check(stats.acked == n, f"R: the router acked {stats.acked}, not {n}")
    sample = throughput(n, elapsed)
    sample.raw["workers"] = workers
    return sample


def queue_stage(workers: int) -> Callable[[Sizes], Sample]:
    return lambda sizes: _queues_run(sizes, workers)


def _queues_run(sizes: Sizes, workers: int) -> Sample:
    """The same stage by hand: worker threads, queue.Queue in (task_done), queue.Queue out."""
    n = sizes.r_messages
    inbox: queue.Queue[bytes | None] = queue.Queue()
    outbox: queue.Queue[bytes] = queue.Queue()

    def handler(item: bytes) -> bytes:
        return item

    def stage() -> None:
        get, put, done = inbox.get, outbox.put, inbox.task_done
        while (item := get()) is not None:
            put(handler(item))
            done()

    threads = [
        threading.Thread(target=stage, name="kincir-bench-stage", daemon=True)
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
