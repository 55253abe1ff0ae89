"""H: ``health_check()`` and ``stats()`` cost, with a million queued messages against none."""

from __future__ import annotations

import gc
from collections.abc import Callable

from kincir.memory import InMemoryBroker, InMemoryConfig, InMemoryPublisher

from ..harness import PAYLOAD, TOPIC, Sample, Sizes, check, clock, cost, subscriber


def kincir_calls(sizes: Sizes) -> dict[str, Sample]:
    queued, calls = sizes.h_queued, sizes.h_calls
    broker = InMemoryBroker(InMemoryConfig(enable_stats=True))
    subscriber(broker, TOPIC)
    publish = InMemoryPublisher(broker).publish_nowait

    def per_call(fn: Callable[[], object]) -> Sample:
        started = clock()
        for _ in range(calls):
            fn()
        return cost(calls, clock() - started)

    out = {"health empty": per_call(broker.health_check), "stats empty": per_call(broker.stats)}
    batch = [PAYLOAD] * 1000
    for _ in range(queued // len(batch)):
        publish(TOPIC, batch)
    if queued % len(batch):
        publish(TOPIC, batch[: queued % len(batch)])
    held = broker.health_check().total_queued_messages
    check(held == queued, f"H: {held} queued, not {queued}")
    gc.collect()
    out["health full"] = per_call(broker.health_check)
    out["stats full"] = per_call(broker.stats)
    broker.force_shutdown()
    for name, sample in out.items():
        sample.raw["queued"] = queued if name.endswith("full") else 0
    return out
