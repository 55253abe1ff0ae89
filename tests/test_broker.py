"""InMemoryBroker: topic management, snapshots (health, topic info, stats), pull consumption."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

# -- construction -------------------------------------------------------------------------------


def test_with_default_config(k):
    broker = k.track(k.InMemoryBroker.with_default_config())
    assert type(broker) is k.InMemoryBroker
    assert broker.config == k.InMemoryConfig.default()
    assert broker.topic_count() == 0
    assert broker.is_shutdown() is False


def test_default_constructor(k):
    broker = k.track(k.InMemoryBroker())
    assert broker.config == k.InMemoryConfig()
    broker2 = k.track(k.InMemoryBroker(config=None))
    assert broker2.config == k.InMemoryConfig()
    broker3 = k.track(k.InMemoryBroker(config=k.InMemoryConfig.for_testing()))
    assert broker3.config.max_topics == 10


# -- topics -------------------------------------------------------------------------------------


def test_topics_are_created_by_publish_and_subscribe(k):
    broker, pub, sub = k.setup()
    assert broker.list_topics() == []
    assert broker.topic_count() == 0
    pub.publish_nowait("orders", [b"1"])
    sub.subscribe("payments")
    assert sorted(broker.list_topics()) == ["orders", "payments"]
    assert broker.topic_count() == 2
    # Publishing again to an existing topic creates nothing.
    pub.publish_nowait("orders", [b"2"])
    assert broker.topic_count() == 2


def test_list_topics_returns_a_fresh_list(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("a", [b"1"])
    names = broker.list_topics()
    names.append("zzz")
    assert broker.list_topics() == ["a"]


def test_topic_info_fields(k):
    broker, pub, sub = k.setup()
    created_before = time.time()
    sub.subscribe("orders")
    pub.publish_nowait("orders", [b"a", b"b", b"c"])
    sub.try_receive()
    info = broker.topic_info("orders")
    assert type(info) is k.TopicInfo
    assert info.name == "orders"
    assert info.queue_size == 2
    assert info.subscriber_count == 1
    assert info.total_published == 3
    assert info.total_consumed == 1
    assert info.next_sequence == 4
    assert created_before - 1 <= info.created_at <= time.time() + 1
    assert info.created_at - 1 <= info.last_activity <= time.time() + 1
    assert 0 <= info.age() < 60
    assert 0 <= info.idle_time() < 60
    assert info.is_active() is True
    assert info.throughput_rate() >= 0


def test_topic_info_of_an_unknown_topic_raises_topic_not_found(k):
    broker, _, _ = k.setup()
    with pytest.raises(k.TopicNotFound) as info:
        broker.topic_info("missing.topic")
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, k.InMemoryError)
    assert info.value.topic == "missing.topic"
    assert "missing.topic" in str(info.value)


def test_topic_info_is_a_frozen_snapshot(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("t", [b"1"])
    info = broker.topic_info("t")
    pub.publish_nowait("t", [b"2"])
    assert info.queue_size == 1
    assert broker.topic_info("t").queue_size == 2
    with pytest.raises(AttributeError):
        info.queue_size = 5  # type: ignore[misc]


def test_topic_info_age_grows_and_activity_updates(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("t", [b"1"])
    first = broker.topic_info("t")
    time.sleep(0.05)
    assert first.age() >= 0.04
    assert first.idle_time() >= 0.04
    pub.publish_nowait("t", [b"2"])
    second = broker.topic_info("t")
    assert second.created_at == first.created_at
    assert second.last_activity > first.last_activity
    assert second.idle_time() < first.idle_time()


def test_topic_info_is_active(k):
    broker, pub, sub = k.setup(subscribe="with.sub")
    assert broker.topic_info("with.sub").is_active() is True
    sub.unsubscribe("with.sub")
    assert broker.topic_info("with.sub").is_active() is False
    pub.publish_nowait("held", [b"x"])
    assert broker.topic_info("held").is_active() is True


def test_list_topic_info(k):
    broker, pub, _sub = k.setup(subscribe="b")
    pub.publish_nowait("a", [b"1", b"2"])
    pub.publish_nowait("b", [b"3"])
    infos = {info.name: info for info in broker.list_topic_info()}
    assert set(infos) == {"a", "b"}
    assert all(type(info) is k.TopicInfo for info in infos.values())
    assert infos["a"].queue_size == 2
    assert infos["a"].subscriber_count == 0
    assert infos["b"].queue_size == 1
    assert infos["b"].subscriber_count == 1


def test_list_topic_info_oldest_first(k):
    broker, pub, _ = k.setup()
    for name in ["c", "a", "b"]:
        pub.publish_nowait(name, [b"x"])
    assert [info.name for info in broker.list_topic_info()] == ["c", "a", "b"]


# -- delete / clear -----------------------------------------------------------------------------


def test_delete_topic_drops_held_messages(k):
    broker, pub, _ = k.setup(enable_stats=True)
    pub.publish_nowait("gone", [b"1", b"2", b"3"])
    pub.publish_nowait("kept", [b"k"])
    broker.delete_topic("gone")
    assert broker.list_topics() == ["kept"]
    assert broker.topic_count() == 1
    with pytest.raises(k.TopicNotFound):
        broker.topic_info("gone")
    assert broker.health_check().total_queued_messages == 1
    stats = broker.stats()
    assert stats.messages_published() == 4
    assert stats.messages_dropped() == 3
    # The name can be used again, starting fresh.
    late = k.subscriber(broker, "gone")
    assert late.try_receive() is None
    pub.publish_nowait("gone", [b"new"])
    got = late.try_receive()
    assert got.payload == b"new"
    assert got.sequence == 1


def test_delete_topic_ends_the_subscription_of_its_only_topic(k):
    broker, pub, sub = k.setup(subscribe="gone")
    pub.publish_nowait("gone", [b"unread"])
    broker.delete_topic("gone")
    assert sub.is_subscribed() is False
    assert sub.subscribed_topics() == []
    with pytest.raises(k.NotSubscribed):
        sub.try_receive()
    with pytest.raises(k.NotSubscribed):
        sub.receive_sync(timeout=0.05)
    with pytest.raises(k.NotSubscribed):
        k.run(sub.receive(timeout=0.05))


def test_delete_topic_keeps_the_subscriber_other_topics(k):
    broker, pub, sub = k.setup(subscribe="gone")
    sub.subscribe("kept")
    pub.publish_nowait("gone", [b"lost"])
    broker.delete_topic("gone")
    assert sub.subscribed_topics() == ["kept"]
    assert sub.try_receive() is None
    pub.publish_nowait("kept", [b"here"])
    assert sub.receive_sync(timeout=1).payload == b"here"


def test_delete_topic_wakes_a_blocked_receiver(k):
    broker, _, sub = k.setup(subscribe="gone")
    worker = k.spawn(sub.receive_sync, 5)
    worker.started.wait(1)
    time.sleep(0.05)
    broker.delete_topic("gone")
    with pytest.raises(k.NotSubscribed):
        worker.join(3)


def test_delete_unknown_topic_raises_topic_not_found(k):
    broker, _, _ = k.setup()
    with pytest.raises(k.TopicNotFound) as info:
        broker.delete_topic("nope")
    assert info.value.topic == "nope"


def test_clear_topic_returns_the_held_count(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert broker.clear_topic("t") == 3
    assert broker.topic_info("t").queue_size == 0
    assert sub.try_receive() is None
    assert broker.clear_topic("t") == 0
    # The topic and the subscription remain; sequence numbers continue.
    assert sub.is_subscribed()
    pub.publish_nowait("t", [b"4"])
    got = sub.try_receive()
    assert got.payload == b"4"
    assert got.sequence == 4


def test_clear_topic_without_subscribers(k):
    broker, pub, _ = k.setup(enable_stats=True)
    pub.publish_nowait("t", [b"1", b"2"])
    assert broker.clear_topic("t") == 2
    assert broker.topic_info("t").queue_size == 0
    assert broker.topic_info("t").total_dropped == 2
    assert broker.stats().messages_dropped() == 2
    assert broker.topic_count() == 1


def test_clear_unknown_topic_raises_topic_not_found(k):
    broker, _, _ = k.setup()
    with pytest.raises(k.TopicNotFound):
        broker.clear_topic("nope")


# -- idle cleanup -------------------------------------------------------------------------------


def test_cleanup_idle_topics_removes_only_idle_topics_without_subscribers(k):
    broker, pub, sub = k.setup(enable_stats=True, subscribe="watched")
    pub.publish_nowait("idle.held", [b"1", b"2"])
    sub2 = k.subscriber(broker, "idle.empty")
    sub2.unsubscribe("idle.empty")
    pub.publish_nowait("busy", [b"x"])
    time.sleep(0.25)
    pub.publish_nowait("busy", [b"y"])  # activity resets the idle clock
    removed = broker.cleanup_idle_topics(0.15)
    assert sorted(removed) == ["idle.empty", "idle.held"]
    assert sorted(broker.list_topics()) == ["busy", "watched"]
    assert broker.stats().messages_dropped() == 2
    assert sub.is_subscribed()


def test_cleanup_idle_topics_keeps_recent_topics(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("fresh", [b"1"])
    assert broker.cleanup_idle_topics(30) == []
    assert broker.cleanup_idle_topics(timedelta(seconds=30)) == []
    assert broker.list_topics() == ["fresh"]


def test_cleanup_idle_topics_accepts_timedelta(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("old", [b"1"])
    time.sleep(0.1)
    assert broker.cleanup_idle_topics(timedelta(milliseconds=20)) == ["old"]
    assert broker.topic_count() == 0


def test_cleanup_idle_topics_ignores_the_pull_group(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("pulled", [b"1"])
    assert broker.consume("pulled").payload == b"1"
    time.sleep(0.1)
    assert broker.cleanup_idle_topics(0.02) == ["pulled"]


def test_cleanup_idle_topics_keeps_a_topic_with_an_idle_subscriber(k):
    broker, _, _sub = k.setup(subscribe="quiet")
    time.sleep(0.1)
    assert broker.cleanup_idle_topics(0.02) == []
    assert broker.list_topics() == ["quiet"]


# -- consume (pull) -----------------------------------------------------------------------------


def test_consume_pulls_one_message_or_none(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("jobs", [b"1", b"2"])
    first = broker.consume("jobs")
    assert first.payload == b"1"
    assert first.sequence == 1
    assert first.topic == "jobs"
    assert broker.consume("jobs").payload == b"2"
    assert broker.consume("jobs") is None
    assert broker.consume("jobs") is None


def test_consume_unknown_topic_raises_topic_not_found(k):
    broker, _, _ = k.setup()
    with pytest.raises(k.TopicNotFound) as info:
        broker.consume("nope")
    assert info.value.topic == "nope"
    assert broker.topic_count() == 0


def test_consume_pull_group_is_durable(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("jobs", [b"before"])
    assert broker.consume("jobs").payload == b"before"
    pub.publish_nowait("jobs", [b"a", b"b"])
    assert broker.topic_info("jobs").queue_size == 2
    assert [broker.consume("jobs").payload for _ in range(2)] == [b"a", b"b"]
    assert broker.consume("jobs") is None
    assert broker.topic_info("jobs").queue_size == 0


def test_consume_and_subscribers_each_see_every_message(k):
    broker, pub, sub = k.setup(subscribe="jobs")
    assert broker.consume("jobs") is None  # creates the pull group at the end
    pub.publish_nowait("jobs", [b"1", b"2"])
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"1", b"2"]
    assert broker.consume("jobs").payload == b"1"
    assert broker.consume("jobs").payload == b"2"


def test_consume_counts_as_consumed(k):
    broker, pub, _ = k.setup(enable_stats=True)
    pub.publish_nowait("jobs", [b"1", b"2"])
    broker.consume("jobs")
    assert broker.topic_info("jobs").total_consumed == 1
    assert broker.stats().messages_consumed() == 1


# -- health -------------------------------------------------------------------------------------


def test_health_check_of_an_empty_broker(k):
    broker, _, _ = k.setup()
    health = broker.health_check()
    assert type(health) is k.BrokerHealth
    assert health.is_healthy is True
    assert health.topic_count == 0
    assert health.total_queued_messages == 0
    assert health.total_subscribers == 0
    assert health.uptime >= 0
    assert health.memory_usage_estimate >= 0
    assert health.is_overloaded(10, 10) is False


def test_health_check_fields(k):
    broker, pub, _sub = k.setup(subscribe="a")
    sub2 = k.subscriber(broker, "a")
    sub2.subscribe("b")
    pub.publish_nowait("a", [b"1", b"2"])
    pub.publish_nowait("c", [b"3"])
    health = broker.health_check()
    assert health.is_healthy is True
    assert health.topic_count == 3
    assert health.total_queued_messages == 3
    assert health.total_subscribers == 3
    assert health.is_overloaded(2, 100) is True
    assert health.is_overloaded(3, 100) is False
    assert health.is_overloaded(10, 2) is True
    assert health.is_overloaded(10, 3) is False


def test_health_memory_estimate_tracks_payloads(k):
    broker, pub, sub = k.setup(subscribe="t")
    empty = broker.health_check().memory_usage_estimate
    pub.publish_nowait("t", [b"x" * 100_000])
    loaded = broker.health_check()
    assert loaded.memory_usage_estimate >= empty + 100_000
    assert loaded.memory_usage_mb() == pytest.approx(loaded.memory_usage_estimate / (1024 * 1024))
    sub.try_receive()
    assert broker.health_check().memory_usage_estimate < empty + 100_000


def test_health_uptime_grows(k):
    broker, _, _ = k.setup()
    first = broker.health_check().uptime
    time.sleep(0.03)
    assert broker.health_check().uptime >= first + 0.02


def test_health_is_unhealthy_after_shutdown(k):
    broker, _, _ = k.setup()
    broker.shutdown()
    assert broker.health_check().is_healthy is False


# -- stats --------------------------------------------------------------------------------------


def test_stats_is_none_when_disabled(k):
    broker, pub, sub = k.setup()
    assert broker.stats() is None
    # a publisher's and a subscriber's own counts are kept anyway (tests/test_own_stats.py)
    assert pub.stats() == k.PublisherStats()
    assert sub.stats() == k.SubscriberStats()


def test_stats_snapshot(k):
    broker, pub, sub = k.setup(enable_stats=True, max_queue_size=3, subscribe="a")
    pub.publish_nowait("a", [b"1", b"2", b"3"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("a", [b"4"])
    sub.try_receive()
    sub.try_receive()
    time.sleep(0.01)
    stats = broker.stats()
    assert type(stats) is k.StatsSnapshot
    assert stats.messages_published() == 3
    assert stats.messages_consumed() == 2
    assert stats.messages_dropped() == 0
    assert stats.messages_expired() == 0
    assert stats.queue_full_errors() == 1
    assert stats.active_topics() == 1
    assert stats.active_subscribers() == 1
    assert stats.uptime() > 0
    assert pub.stats() == k.PublisherStats(published=3, refused=1)
    assert sub.stats() == k.SubscriberStats(received=2)


def test_stats_gauges_never_go_negative(k):
    broker, _, sub = k.setup(enable_stats=True, subscribe="a")
    sub.unsubscribe("a")
    sub.unsubscribe()
    sub.close()
    sub.close()
    stats = broker.stats()
    assert stats.active_subscribers() == 0
    assert stats.active_topics() == 1
    broker.delete_topic("a")
    stats = broker.stats()
    assert stats.active_topics() == 0
    assert stats.active_subscribers() == 0


def test_stats_count_each_delivery(k):
    broker, pub, _ = k.setup(enable_stats=True)
    subs = [k.InMemorySubscriber(broker) for _ in range(3)]
    for s in subs:
        s.subscribe("fan")
    pub.publish_nowait("fan", [b"1", b"2"])
    for s in subs:
        assert len(s.try_receive_batch(10)) == 2
    stats = broker.stats()
    assert stats.messages_published() == 2
    assert stats.messages_consumed() == 6
    assert stats.active_subscribers() == 3


def test_stats_snapshot_is_frozen(k):
    broker, pub, _ = k.setup(enable_stats=True)
    snap = broker.stats()
    pub.publish_nowait("a", [b"1"])
    assert snap.messages_published() == 0
    assert broker.stats().messages_published() == 1


# -- context managers ---------------------------------------------------------------------------


def test_with_block_shuts_down_on_exit(k):
    with k.track(k.InMemoryBroker()) as broker:
        assert type(broker) is k.InMemoryBroker
        assert broker.is_shutdown() is False
        k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    assert broker.is_shutdown() is True
    with pytest.raises(k.BrokerShutdown):
        k.InMemoryPublisher(broker).publish_nowait("t", [b"2"])


def test_with_block_shuts_down_when_an_error_escapes(k):
    broker = k.track(k.InMemoryBroker())
    with pytest.raises(RuntimeError), broker:
        raise RuntimeError("boom")
    assert broker.is_shutdown() is True


def test_async_with_shuts_down_on_exit(k):
    async def main():
        async with k.track(k.InMemoryBroker()) as broker:
            assert broker.is_shutdown() is False
            sub = k.InMemorySubscriber(broker)
            await sub.subscribe("t")
            await k.InMemoryPublisher(broker).publish("t", [b"1"])
            assert (await sub.receive(timeout=1)).payload == b"1"
        return broker

    broker = k.run(main())
    assert broker.is_shutdown() is True


def test_is_shutdown(k):
    broker, _, _ = k.setup()
    assert broker.is_shutdown() is False
    broker.shutdown()
    assert broker.is_shutdown() is True
