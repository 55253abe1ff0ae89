"""W2: one thread, batches of raw payloads (a reader that keeps up, or a backlog)."""

from __future__ import annotations

import dataclasses

from ..harness import BATCH, PAYLOAD, TOPIC, Sample, Sizes, check, clock, fast_setup, throughput
from .w1 import simple_queue as w1_simple_queue


def kincir_batches(sizes: Sizes, backlog: bool = False) -> Sample:
    n = sizes.w2_messages
    batches = n // BATCH
    broker, (sub,), pub = fast_setup()
    publish = pub.publish_nowait
    take = sub.try_receive_batch
    batch = [PAYLOAD] * BATCH
    got = 0
    started = clock()
    if backlog:  # every batch published before the first is read: n messages held at once
        for _ in range(batches):
            publish(TOPIC, batch)
        for _ in range(batches):
            got += len(take(BATCH))
    else:  # a reader that keeps up: each batch read after it is published
        for _ in range(batches):
            publish(TOPIC, batch)
            got += len(take(BATCH))
    elapsed = clock() - started
    check(got == n, f"W2: kincir delivered {got} of {n}")
    broker.force_shutdown()
    return throughput(n, elapsed)


def kincir_backlog(sizes: Sizes) -> Sample:
    """Every batch published before the first is read: N messages held at once."""
    return kincir_batches(sizes, backlog=True)


def simple_queue(sizes: Sizes) -> Sample:
    """SimpleQueue put/get per message, as W1's baseline, at W2's size."""
    return w1_simple_queue(dataclasses.replace(sizes, w1_messages=sizes.w2_messages))
