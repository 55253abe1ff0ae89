"""G: a producer thread -> a consumer group of worker threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kincir.memory import InMemoryAckSubscriber, InMemoryPublisher, InMemorySubscriber

from ..drive import put_payloads, run_threads, send_messages
from ..harness import TOPIC, Sample, Sizes, check, fast_broker, throughput

WORKERS = 4


def kincir_group(acking: bool) -> Callable[[Sizes], Sample]:
    """A producer thread -> a group of WORKERS member threads (acking: each message acked)."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.g_messages
        broker = fast_broker()
        members: list[Any] = [
            InMemoryAckSubscriber(broker, "workers")
            if acking
            else InMemorySubscriber(broker, "workers")
            for _ in range(WORKERS)
        ]
        for member in members:
            member.subscribe(TOPIC)
        pub = InMemoryPublisher(broker)
        counts = [0] * WORKERS

        def produce() -> None:
            send_messages(pub.send_nowait, n)
            broker.shutdown()  # members drain what is left, then their loops end

        def work(i: int) -> Callable[[], None]:
            member = members[i]

            def loop() -> None:
                got = 0
                if acking:
                    receive, ack = member.receive_with_ack_sync, member.ack
                    while True:
                        try:
                            _, handle = receive()
                        except Exception:  # BrokerShutdown: drained
                            break
                        ack(handle)
                        got += 1
                else:
                    for _ in member:
                        got += 1
                counts[i] = got

            return loop

        elapsed = run_threads([produce, *(work(i) for i in range(WORKERS))], broker.force_shutdown)
        check(sum(counts) == n, f"G: the group received {sum(counts)}, not {n}")
        broker.force_shutdown()
        sample = throughput(n, elapsed)
        sample.raw["workers"] = WORKERS
        return sample

    return run


def stdlib_queue(factory: Callable[[], Any], task_done: bool) -> Callable[[Sizes], Sample]:
    """A producer thread -> WORKERS threads sharing one stdlib queue (``task_done`` per item,
    the stdlib's acknowledgement, with ``queue.Queue``)."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.g_messages
        q = factory()
        counts = [0] * WORKERS

        def produce() -> None:
            put_payloads(q.put, n)
            for _ in range(WORKERS):
                q.put(None)

        def work(i: int) -> Callable[[], None]:
            def loop() -> None:
                get = q.get
                done = q.task_done if task_done else None
                got = 0
                while get() is not None:
                    got += 1
                    if done is not None:
                        done()
                counts[i] = got

            return loop

        elapsed = run_threads([produce, *(work(i) for i in range(WORKERS))], lambda: None)
        check(sum(counts) == n, f"G: the queue's workers got {sum(counts)}, not {n}")
        return throughput(n, elapsed)

    return run
