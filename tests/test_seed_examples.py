"""Every example of the founding document (reference/kincir-in-memory-broker.md), in Python.

Each test is the Rust example translated line by line (``Arc`` -> the object, ``Result`` ->
exceptions, ``Option`` -> None, ``Duration`` -> seconds or ``timedelta``), then checked.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest


def test_basic_usage(k, capsys):
    async def main():
        # Create broker with default configuration
        broker = k.track(k.InMemoryBroker.with_default_config())

        # Create publisher and subscriber
        publisher = k.InMemoryPublisher(broker)
        subscriber = k.InMemorySubscriber(broker)

        # Subscribe to a topic
        await subscriber.subscribe("orders")

        # Publish a message
        message = (
            k.Message.new(b"Order #1234")
            .with_metadata("customer", "Alice")
            .with_metadata("priority", "high")
        )
        await publisher.publish("orders", [message])

        # Receive the message
        received = await subscriber.receive()
        print(f"Received: {received.payload.decode('utf-8', 'replace')}")
        return message, received

    message, received = k.run(main())
    assert capsys.readouterr().out == "Received: Order #1234\n"
    assert received.payload == b"Order #1234"
    assert received.metadata["customer"] == "Alice"
    assert received.metadata["priority"] == "high"
    assert received.uuid == message.uuid


def test_basic_configuration(k):
    config = (
        k.InMemoryConfig.new()
        .with_max_queue_size(1000)  # Limit queue size per topic
        .with_max_topics(100)  # Limit number of topics
        .with_stats(True)  # Enable statistics collection
        .with_maintain_order(True)  # Enable message ordering
        .with_message_ttl(timedelta(seconds=300))  # 5-minute TTL
    )
    assert (config.max_queue_size, config.max_topics) == (1000, 100)
    assert config.enable_stats is True
    assert config.maintain_order is True
    assert config.default_message_ttl == 300.0
    broker = k.new_broker(config)
    assert broker.stats() is not None


def test_configuration_with_seconds_and_none(k):
    # Option<usize>/Option<Duration> translate to an int/seconds or None.
    config = (
        k.InMemoryConfig.new()
        .with_max_queue_size(None)
        .with_max_topics(None)
        .with_message_ttl(None)
        .with_message_ttl(300)
    )
    assert config.max_queue_size is None
    assert config.default_message_ttl == 300.0


def test_pre_configured_profiles(k):
    # High-performance configuration
    config = k.InMemoryConfig.high_performance()
    assert config.maintain_order is False
    # Testing configuration (optimized for tests)
    config = k.InMemoryConfig.for_testing()
    assert config.max_queue_size == 100
    # Default configuration
    config = k.InMemoryConfig.default()
    assert config == k.InMemoryConfig()
    for profile in (
        k.InMemoryConfig.high_performance(),
        k.InMemoryConfig.for_testing(),
        k.InMemoryConfig.default(),
    ):
        broker = k.new_broker(profile)
        sub = k.subscriber(broker, "t")
        k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
        assert sub.receive_sync(timeout=1).payload == b"x"


def test_configuration_options_table(k):
    config = k.InMemoryConfig()
    assert config.max_queue_size is None
    assert config.max_topics is None
    assert config.enable_persistence is True
    assert config.maintain_order is True
    assert config.enable_stats is False
    assert config.default_message_ttl is None
    assert config.cleanup_interval == 60.0


def test_message_ordering(k):
    config = k.InMemoryConfig.new().with_maintain_order(True)
    broker = k.new_broker(config)
    publisher = k.InMemoryPublisher(broker)
    subscriber = k.subscriber(broker, "ordered")
    publisher.publish_nowait("ordered", [k.Message.new(b"a"), k.Message.new(b"b")])
    publisher.publish_nowait("ordered", [k.Message.new(b"c")])
    # Messages will have _sequence metadata: "1", "2", "3", etc.
    got = [subscriber.receive_sync(timeout=1) for _ in range(3)]
    assert [m.metadata["_sequence"] for m in got] == ["1", "2", "3"]
    assert [m.payload for m in got] == [b"a", b"b", b"c"]


def test_message_ttl(k):
    config = (
        k.InMemoryConfig.new()
        .with_message_ttl(timedelta(seconds=300))  # 5 minutes
        .with_cleanup_interval(timedelta(seconds=60))  # Check every minute
    )
    broker = k.new_broker(config)
    assert broker.config.default_message_ttl == 300.0
    assert broker.config.cleanup_interval == 60.0
    sub = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"fresh"])
    assert sub.receive_sync(timeout=1).payload == b"fresh"


def test_health_monitoring(k, capsys):
    broker = k.new_broker()
    publisher = k.InMemoryPublisher(broker)
    publisher.publish_nowait("orders", [b"1", b"2"])
    publisher.publish_nowait("payments", [b"3"])

    # Get broker health information
    health = broker.health_check()
    print(f"Healthy: {health.is_healthy}")
    print(f"Topics: {health.topic_count}")
    print(f"Queued messages: {health.total_queued_messages}")
    print(f"Memory usage: {health.memory_usage_estimate} bytes")

    # Get detailed topic information
    topics = broker.list_topic_info()
    for topic in topics:
        print(f"Topic: {topic.name}, Messages: {topic.queue_size}, Age: {topic.age()!r}")

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Healthy: True"
    assert out[1] == "Topics: 2"
    assert out[2] == "Queued messages: 3"
    assert out[3].startswith("Memory usage: ") and out[3].endswith(" bytes")
    assert int(out[3].split()[2]) > 0
    assert out[4].startswith("Topic: orders, Messages: 2, Age: ")
    assert out[5].startswith("Topic: payments, Messages: 1, Age: ")
    assert all(topic.age() >= 0 for topic in topics)


def test_statistics_collection(k, capsys):
    config = k.InMemoryConfig.new().with_stats(True)
    broker = k.new_broker(config)
    publisher = k.InMemoryPublisher(broker)
    subscriber = k.subscriber(broker, "stats")

    # Publish some messages...
    publisher.publish_nowait("stats", [b"1", b"2", b"3"])
    subscriber.receive_sync(timeout=1)

    # Get statistics (the founding example asks the publisher, whose stats() now returns its
    # own counts: the broker's snapshot is the broker's)
    assert publisher.stats().published == 3
    if (stats := broker.stats()) is not None:
        print(f"Messages published: {stats.messages_published()}")
        print(f"Messages consumed: {stats.messages_consumed()}")
        print(f"Active topics: {stats.active_topics()}")
        print(f"Uptime: {stats.uptime()!r}")

    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["Messages published: 3", "Messages consumed: 1", "Active topics: 1"]
    assert out[3].startswith("Uptime: ")
    assert stats.uptime() >= 0


def test_graceful_shutdown(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"in flight"])
    # Graceful shutdown (waits for in-flight operations): the queued message is still delivered.
    broker.shutdown()
    assert sub.receive_sync(timeout=1).payload == b"in flight"
    with pytest.raises(k.BrokerShutdown):
        sub.receive_sync(timeout=1)


def test_force_shutdown(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"dropped"])
    # Force shutdown (immediate)
    broker.force_shutdown()
    with pytest.raises(k.BrokerShutdown):
        sub.receive_sync(timeout=1)


def handle(k, publisher, topic, messages):
    """The seed's error-handling ``match``, as Python exception handling."""
    try:
        asyncio.run(publisher.publish(topic, messages))
    except k.QueueFull as e:
        return f"Queue full for topic: {e.topic}"
    except k.MaxTopicsReached as e:
        return f"Cannot create more topics, limit: {e.limit}"
    except k.BrokerShutdown:
        return "Broker is shutdown"
    except k.InMemoryError as e:
        return f"Other error: {e}"
    else:
        return "Published successfully"


def test_error_handling(k):
    broker = k.new_broker(max_queue_size=1, max_topics=1)
    publisher = k.InMemoryPublisher(broker)
    messages = [k.Message.new(b"x")]
    assert handle(k, publisher, "topic.a", messages) == "Published successfully"
    assert handle(k, publisher, "topic.a", messages) == "Queue full for topic: topic.a"
    assert handle(k, publisher, "topic.b", messages) == "Cannot create more topics, limit: 1"
    assert handle(k, publisher, "bad name", messages).startswith("Other error: ")
    broker.shutdown()
    assert handle(k, publisher, "topic.a", messages) == "Broker is shutdown"


def test_error_handling_with_match(k):
    broker = k.new_broker(max_queue_size=1, max_topics=1)
    publisher = k.InMemoryPublisher(broker)
    outcomes = []
    for topic in ["orders", "orders", "other"]:
        try:
            publisher.publish_nowait(topic, [b"x"])
            outcomes.append("ok")
        except k.InMemoryError as err:
            match err:
                case k.QueueFull(topic=name):
                    outcomes.append(f"full:{name}")
                case k.MaxTopicsReached(limit=limit):
                    outcomes.append(f"topics:{limit}")
                case k.BrokerShutdown():
                    outcomes.append("shutdown")
                case _:
                    outcomes.append(f"other:{err}")
    assert outcomes == ["ok", "full:orders", "topics:1"]


def test_testing_integration(k):
    """The seed's ``#[tokio::test] async fn test_message_flow``."""

    async def test_message_flow():
        broker = k.track(k.InMemoryBroker(k.InMemoryConfig.for_testing()))
        publisher = k.InMemoryPublisher(broker)
        subscriber = k.InMemorySubscriber(broker)

        await subscriber.subscribe("test")

        message = k.Message.new(b"test data")
        await publisher.publish("test", [message])

        received = await subscriber.receive()
        assert received.payload == message.payload

    k.run(test_message_flow())


def test_migration_from_external_brokers(k):
    """Code written against the Publisher protocol works unchanged with the in-memory broker."""

    async def send_all(publisher: object, messages: list) -> None:
        # Same API, no code changes needed!
        assert isinstance(publisher, k.Publisher)
        await publisher.publish("topic", messages)

    broker = k.track(k.InMemoryBroker.with_default_config())
    publisher = k.InMemoryPublisher(broker)
    subscriber = k.InMemorySubscriber(broker)
    assert isinstance(subscriber, k.Subscriber)
    subscriber.subscribe("topic")
    messages = [k.Message.new(b"one"), k.Message.new(b"two")]
    k.run(send_all(publisher, messages))
    assert [m.payload for m in subscriber.try_receive_batch(10)] == [b"one", b"two"]
