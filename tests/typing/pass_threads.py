"""Threads: blocking and non-blocking calls, a consumer group, limits, errors and health."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import assert_type

from kincir import KincirError, Message, PublisherStats, SubscriberStats
from kincir.memory import (
    BrokerHealth,
    BrokerShutdown,
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
    InvalidTopicName,
    QueueFull,
    TopicInfo,
    TopicNotFound,
)


def work(subscriber: InMemorySubscriber, done: list[Message]) -> None:
    """A worker thread: iteration blocks for the next message and ends at shutdown."""
    for message in subscriber:
        assert_type(message, Message)
        done.append(message)


def main() -> None:
    config = (
        InMemoryConfig.new()
        .with_max_queue_size(1000)
        .with_max_topics(100)
        .with_stats(True)
        .with_maintain_order(True)
        .with_message_ttl(timedelta(minutes=5))
        .with_overflow("block")
    )
    assert_type(config, InMemoryConfig)
    assert config == InMemoryConfig(
        max_queue_size=1000,
        max_topics=100,
        enable_stats=True,
        default_message_ttl=300,
        overflow="block",
    )
    assert_type(config.max_queue_size, int | None)

    with InMemoryBroker(config) as broker:
        publisher = InMemoryPublisher(broker)
        subscriber = InMemorySubscriber(broker)
        subscriber.subscribe("events")  # takes effect now; no await needed in sync code

        publisher.publish_nowait("events", [b"raw payloads are fine", Message(b"so are messages")])
        first = subscriber.receive_sync(timeout=1.0)
        assert_type(first, Message)
        maybe = subscriber.try_receive()
        assert_type(maybe, Message | None)
        assert maybe is not None and maybe.payload == b"so are messages"
        assert subscriber.try_receive() is None

        publisher.send_nowait("events", {"one": "message"}, metadata={"k": "v"})
        publisher.send_sync("events", b"waits for room", timeout=1.0)
        sent = subscriber.try_receive_batch(10)
        assert [m.payload for m in sent] == [{"one": "message"}, b"waits for room"]

        publisher.publish_sync("events", [b"%d" % n for n in range(5)], timeout=1.0)
        batch = subscriber.receive_batch_sync(100, timeout=1.0)
        assert_type(batch, list[Message])
        assert [m.sequence for m in batch] == [5, 6, 7, 8, 9]
        assert_type(subscriber.try_receive_batch(10), list[Message])

        # a consumer group: each message goes to exactly one member
        done: list[Message] = []
        members = [InMemorySubscriber(broker, group="workers") for _ in range(2)]
        for member in members:
            member.subscribe("jobs")
        threads = [threading.Thread(target=work, args=(m, done)) for m in members]
        for thread in threads:
            thread.start()
        publisher.publish_sync("jobs", [Message.new(b"job %d" % n) for n in range(20)])

        # the topics, their counters and the broker's health
        assert_type(broker.list_topics(), list[str])
        info = broker.topic_info("jobs")
        assert_type(info, TopicInfo)
        assert_type(info.total_published, int)
        assert_type(broker.list_topic_info(), list[TopicInfo])
        health = broker.health_check()
        assert_type(health, BrokerHealth)
        assert health.is_healthy and not health.is_overloaded(100, 10_000)
        assert_type(health.memory_usage_mb(), float)
        assert_type(broker.metrics(), str)

        # a publisher's and a subscriber's own counts
        assert_type(publisher.stats(), PublisherStats)
        assert_type(publisher.stats().published, int)
        assert_type(subscriber.stats(), SubscriberStats)
        assert subscriber.stats().received == 9

        # errors are exceptions with typed fields
        small = broker.configure_topic("small", overflow="error", max_queue_size=1)
        assert_type(small, TopicInfo)
        try:
            publisher.publish_nowait("small", [b"1", b"2"])
        except QueueFull as full:
            assert_type(full.topic, str)
            assert_type(full.limit, int | None)
            assert (full.topic, full.limit) == ("small", 1)
        try:
            publisher.publish_nowait("no spaces allowed", [b"x"])
        except InvalidTopicName as bad:
            assert isinstance(bad, ValueError) and isinstance(bad, KincirError)
        try:
            broker.topic_info("missing")
        except TopicNotFound as missing:
            assert isinstance(missing, LookupError)
        assert_type(broker.consume("small"), Message | None)

        drained = broker.shutdown(timeout=5.0)
        assert_type(drained, bool)
        assert drained
        for thread in threads:
            thread.join(5.0)
        assert sorted(m.payload for m in done) == sorted(b"job %d" % n for n in range(20))
        try:
            publisher.publish_nowait("events", [b"too late"])
        except BrokerShutdown:
            pass
        else:
            raise AssertionError("a shut-down broker accepted a publish")


if __name__ == "__main__":
    main()
