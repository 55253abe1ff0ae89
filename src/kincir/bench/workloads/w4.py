"""W4: fan-out to subscribers on one thread, and the cost of one publish by subscriber count."""

from __future__ import annotations

import queue
from collections.abc import Callable

from ..harness import PAYLOAD, TOPIC, Sample, Sizes, check, clock, cost, fast_setup, throughput

#: Subscribers in W4's fan-out throughput, and the two counts its publish-cost rows compare.
FANOUT = 8
FANOUT_MANY = 64
#: Most messages W4's subscribers take per ``try_receive_batch``.
DRAIN_BATCH = 1000


def kincir_fanout(sizes: Sizes) -> Sample:
    n = sizes.w4_messages
    broker, subs, pub = fast_setup(TOPIC, FANOUT)
    send = pub.send_nowait
    payload = PAYLOAD
    counts = []
    started = clock()
    for _ in range(n):
        send(TOPIC, payload)
    for sub in subs:
        take = sub.try_receive_batch
        got = 0
        while True:
            batch = take(DRAIN_BATCH)
            if not batch:
                break
            got += len(batch)
        counts.append(got)
    elapsed = clock() - started
    check(counts == [n] * FANOUT, f"W4: subscribers got {counts}, not {n} each")
    broker.force_shutdown()
    sample = throughput(n * FANOUT, elapsed)
    sample.raw["subscribers"] = FANOUT
    return sample


def simple_queues(sizes: Sizes) -> Sample:
    n = sizes.w4_messages
    queues: list[queue.SimpleQueue[bytes]] = [queue.SimpleQueue() for _ in range(FANOUT)]
    puts = [q.put for q in queues]
    gets = [q.get for q in queues]
    payload = PAYLOAD
    started = clock()
    for _ in range(n):
        for put in puts:
            put(payload)
    for get in gets:
        for _ in range(n):
            get()
    elapsed = clock() - started
    sample = throughput(n * FANOUT, elapsed)
    sample.raw["subscribers"] = FANOUT
    return sample


def publish_cost(subscribers: int) -> Callable[[Sizes], Sample]:
    def run(sizes: Sizes) -> Sample:
        n = sizes.w4_publishes
        broker, subs, pub = fast_setup(TOPIC, subscribers)
        send = pub.send_nowait
        payload = PAYLOAD
        started = clock()
        for _ in range(n):
            send(TOPIC, payload)
        elapsed = clock() - started
        check(subs[-1].try_receive() is not None, "W4: the last subscriber got nothing")
        broker.force_shutdown()
        sample = cost(n, elapsed, "publishes")
        sample.raw["subscribers"] = subscribers
        return sample

    return run
