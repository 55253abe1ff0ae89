"""pytest-benchmark suites for the engine's operations (``pytest bench/``).

Per-message workloads build a Message per send, as a user would; payloads are 64 bytes. Compare
runs with ``pytest bench/ --benchmark-autosave`` then ``--benchmark-compare``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kincir import Message
from kincir.memory import InMemoryBroker, InMemoryConfig, InMemoryPublisher, InMemorySubscriber

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
def test_publish_cost_by_subscriber_count(benchmark, broker: InMemoryBroker,  # type: ignore[no-untyped-def]
                                          subscribers: int) -> None:
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
def test_health_check_cost_ignores_queued_messages(benchmark, broker: InMemoryBroker,  # type: ignore[no-untyped-def]
                                                   queued: int) -> None:
    pub = InMemoryPublisher(broker)
    for _ in range(queued // 1000):
        pub.publish_nowait("t", [PAYLOAD] * 1000)
    pub.publish_nowait("u", [PAYLOAD])
    health = benchmark(broker.health_check)
    assert health.total_queued_messages == queued + 1
