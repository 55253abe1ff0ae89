"""W9: fan-out across processes: one producer process, FANOUT consumer processes that each
get every message."""

from __future__ import annotations

from ..harness import Sample, Sizes, throughput
from ..processes import _SPAWN, elapsed, run_processes
from .w8 import kincir_consume, kincir_produce, queue_consume, shared_broker

#: Consumer processes.
FANOUT = 4


def queue_fan_out(queues: list[object], n: int, hand: object) -> None:
    """The producer of the baseline: every message put into each consumer's queue."""
    from ..harness import PAYLOAD, clock

    puts = [q.put for q in queues]  # type: ignore[attr-defined]
    payload = PAYLOAD
    hand.go()  # type: ignore[attr-defined]
    started = clock()
    for _ in range(n):
        for put in puts:
            put(payload)
    hand.report(started)  # type: ignore[attr-defined]


def kincir_fanout(sizes: Sizes) -> Sample:
    n = sizes.w9_messages
    broker = shared_broker()
    try:
        reports = run_processes(
            (kincir_produce, (broker, n, 1)),
            [(kincir_consume, (broker, n, 1)) for _ in range(FANOUT)],
        )
    finally:
        broker.close()
    return throughput(n * FANOUT, elapsed(reports))


def mp_queues(sizes: Sizes) -> Sample:
    n = sizes.w9_messages
    queues = [_SPAWN.Queue() for _ in range(FANOUT)]
    reports = run_processes((queue_fan_out, (queues, n)), [(queue_consume, (q, n)) for q in queues])
    return throughput(n * FANOUT, elapsed(reports))
