"""pytest-benchmark suites for the engine's operations (``pytest bench/``).

Per-message workloads build a Message per send, as a user would; payloads are 64 bytes. Compare
runs with ``pytest bench/ --benchmark-autosave`` then ``--benchmark-compare``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from kincir import Message, Router
from kincir.memory import (
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
)

PAYLOAD = b"x" * 64
N = 1000


@pytest.fixture
def broker() -> Iterator[InMemoryBroker]:
    b = InMemoryBroker(InMemoryConfig.high_performance())
    yield b
    b.force_shutdown()


@pytest.mark.benchmark(group="publish+receive")
def test_publish_receive_one_by_one(benchmark, broker: InMemoryBroker) -> None:  # type: ignore[no-untyped-def]
    pub = InMemoryPublisher(broker)
    sub = InMemorySubscriber(broker)
    sub.subscribe("t")

    def run() -> None:
        for _ in range(N):
            pub.publish_nowait("t", [Message(PAYLOAD)])
        for _ in range(N):
            sub.try_receive()

    benchmark(run)
    assert sub.try_receive() is None


@pytest.mark.benchmark(group="publish+receive")
def test_publish_receive_batches(benchmark, broker: InMemoryBroker) -> None:  # type: ignore[no-untyped-def]
    pub = InMemoryPublisher(broker)
    sub = InMemorySubscriber(broker)
    sub.subscribe("t")
    batch = [PAYLOAD] * 100

    def run() -> None:
        for _ in range(N // 100):
            pub.publish_nowait("t", batch)
        for _ in range(N // 100):
            sub.try_receive_batch(100)

    benchmark(run)


@pytest.mark.parametrize("subscribers", [1, 8, 64])
@pytest.mark.benchmark(group="fan-out publish")
def test_publish_cost_by_subscriber_count(
    benchmark,
    broker: InMemoryBroker,  # type: ignore[no-untyped-def]
    subscribers: int,
) -> None:
    pub = InMemoryPublisher(broker)
    subs = [InMemorySubscriber(broker) for _ in range(subscribers)]
    for sub in subs:
        sub.subscribe("t")

    def run() -> None:
        for _ in range(N):
            pub.publish_nowait("t", [Message(PAYLOAD)])
        for sub in subs:
            while sub.try_receive_batch(1000):
                pass

    benchmark(run)


@pytest.mark.benchmark(group="topics")
def test_topic_creation(benchmark) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        b = InMemoryBroker()
        pub = InMemoryPublisher(b)
        for i in range(N):
            pub.publish_nowait(f"topic.{i}", [PAYLOAD])
        b.force_shutdown()

    benchmark(run)


@pytest.mark.parametrize("queued", [0, 100_000])
@pytest.mark.benchmark(group="health")
def test_health_check_cost_ignores_queued_messages(
    benchmark,
    broker: InMemoryBroker,  # type: ignore[no-untyped-def]
    queued: int,
) -> None:
    pub = InMemoryPublisher(broker)
    for _ in range(queued // 1000):
        pub.publish_nowait("t", [PAYLOAD] * 1000)
    pub.publish_nowait("u", [PAYLOAD])
    health = benchmark(broker.health_check)
    assert health.total_queued_messages == queued + 1


@pytest.mark.benchmark(group="delivery semantics")
def test_group_of_four_worker_threads(benchmark, broker: InMemoryBroker) -> None:  # type: ignore[no-untyped-def]
    """N messages published, then drained by a consumer group of 4 threads."""
    pub = InMemoryPublisher(broker)
    members = [InMemorySubscriber(broker, group="workers") for _ in range(4)]
    for member in members:
        member.subscribe("t")

    def drain(member: InMemorySubscriber, counts: list[int]) -> None:
        got = 0
        while batch := member.try_receive_batch(100):
            got += len(batch)
        counts.append(got)

    def run() -> None:
        for _ in range(N):
            pub.publish_nowait("t", [Message(PAYLOAD)])
        counts: list[int] = []
        threads = [threading.Thread(target=drain, args=(m, counts)) for m in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(counts) == N

    benchmark(run)


@pytest.mark.benchmark(group="delivery semantics")
def test_receive_with_ack_and_ack(benchmark, broker: InMemoryBroker) -> None:  # type: ignore[no-untyped-def]
    pub = InMemoryPublisher(broker)
    sub = InMemoryAckSubscriber(broker)
    sub.subscribe("t")
    receive, ack = sub.try_receive_with_ack, sub.ack

    def run() -> None:
        for _ in range(N):
            pub.publish_nowait("t", [Message(PAYLOAD)])
        for _ in range(N):
            ack(receive()[1])  # type: ignore[index]

    benchmark(run)
    assert broker.topic_info("t").queue_size == 0


@pytest.mark.benchmark(group="delivery semantics")
def test_router_four_threads(benchmark, broker: InMemoryBroker) -> None:  # type: ignore[no-untyped-def]
    """N messages through a Router with 4 worker threads (ack on success)."""
    pub = InMemoryPublisher(broker)
    out = InMemorySubscriber(broker)
    out.subscribe("out")
    router = Router(broker, "in", "out", lambda msg: msg, concurrency=4).start()

    def run() -> None:
        for _ in range(N):
            pub.publish_nowait("in", [Message(PAYLOAD)])
        for _ in range(N):
            out.receive_sync(timeout=30)

    try:
        benchmark(run)
    finally:
        router.stop()
