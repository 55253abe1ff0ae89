"""M: memory per queued message."""

from __future__ import annotations

import gc
import tracemalloc

from kincir import Message
from kincir.memory import InMemoryBroker, InMemoryPublisher

from ..harness import PAYLOAD_SIZE, TOPIC, Sample, Sizes, check, subscriber


def kincir_memory(sizes: Sizes) -> Sample:
    n = sizes.m_messages
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        broker = InMemoryBroker()
        sub = subscriber(broker, TOPIC)
        publish = InMemoryPublisher(broker).publish_nowait
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            publish(TOPIC, [Message(i.to_bytes(PAYLOAD_SIZE, "big"))])
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not already:
            tracemalloc.stop()
    health = broker.health_check()
    check(health.total_queued_messages == n, f"M: {health.total_queued_messages} queued, not {n}")
    check(sub.is_subscribed(), "M: the subscriber left")
    broker.force_shutdown()
    traced = after - before
    return Sample(
        traced / n,
        {
            "messages": n,
            "traced_bytes": traced,
            "memory_usage_estimate": health.memory_usage_estimate,
        },
    )
