"""Broker limits: max_topics and max_subscribers_per_topic."""

from __future__ import annotations

import pytest


def test_max_topics_by_publish(k):
    broker, pub, _ = k.setup(max_topics=2)
    pub.publish_nowait("a", [b"1"])
    pub.publish_nowait("b", [b"1"])
    with pytest.raises(k.MaxTopicsReached) as info:
        pub.publish_nowait("c", [b"1"])
    assert info.value.limit == 2
    assert "2" in str(info.value)
    assert isinstance(info.value, k.InMemoryError)
    assert sorted(broker.list_topics()) == ["a", "b"]
    # Existing topics still accept messages.
    pub.publish_nowait("a", [b"2"])
    assert broker.topic_info("a").queue_size == 2


def test_max_topics_by_subscribe(k):
    broker, pub, sub = k.setup(max_topics=1, subscribe="a")
    with pytest.raises(k.MaxTopicsReached) as info:
        sub.subscribe("b")
    assert info.value.limit == 1
    assert sub.subscribed_topics() == ["a"]
    assert broker.list_topics() == ["a"]
    with pytest.raises(k.MaxTopicsReached):
        k.run(pub.publish("b", [b"x"]))
    with pytest.raises(k.MaxTopicsReached):
        pub.publish_sync("b", [b"x"])


def test_max_topics_frees_a_slot_when_a_topic_is_deleted(k):
    broker, pub, _ = k.setup(max_topics=1)
    pub.publish_nowait("a", [b"1"])
    with pytest.raises(k.MaxTopicsReached):
        pub.publish_nowait("b", [b"1"])
    broker.delete_topic("a")
    pub.publish_nowait("b", [b"1"])
    assert broker.list_topics() == ["b"]


def test_max_topics_lookup_methods_do_not_create(k):
    broker, _, _ = k.setup(max_topics=1)
    with pytest.raises(k.TopicNotFound):
        broker.consume("ghost")
    with pytest.raises(k.TopicNotFound):
        broker.topic_info("ghost")
    assert broker.topic_count() == 0


def test_max_subscribers_per_topic(k):
    broker, _, first = k.setup(max_subscribers_per_topic=2)
    second = k.InMemorySubscriber(broker)
    third = k.InMemorySubscriber(broker)
    first.subscribe("t")
    second.subscribe("t")
    with pytest.raises(k.MaxSubscribersReached) as info:
        third.subscribe("t")
    err = info.value
    assert err.topic == "t"
    assert err.limit == 2
    assert isinstance(err, k.InMemoryError)
    assert third.is_subscribed() is False
    assert broker.topic_info("t").subscriber_count == 2
    # Other topics are unaffected.
    third.subscribe("other")
    assert third.subscribed_topics() == ["other"]


def test_max_subscribers_frees_a_slot_on_unsubscribe(k):
    broker, pub, first = k.setup(max_subscribers_per_topic=1)
    second = k.InMemorySubscriber(broker)
    first.subscribe("t")
    with pytest.raises(k.MaxSubscribersReached):
        second.subscribe("t")
    first.unsubscribe("t")
    second.subscribe("t")
    pub.publish_nowait("t", [b"x"])
    assert second.try_receive().payload == b"x"


def test_max_subscribers_subscribing_twice_is_not_counted(k):
    broker, _, sub = k.setup(max_subscribers_per_topic=1, subscribe="t")
    sub.subscribe("t")
    assert broker.topic_info("t").subscriber_count == 1


def test_max_subscribers_awaited_subscribe_raises(k):
    broker, _, _first = k.setup(max_subscribers_per_topic=1, subscribe="t")
    second = k.InMemorySubscriber(broker)

    async def main():
        with pytest.raises(k.MaxSubscribersReached):
            await second.subscribe("t")

    k.run(main())


def test_for_testing_profile_limits(k):
    broker, pub, _ = k.setup(k.InMemoryConfig.for_testing())
    for i in range(10):
        pub.publish_nowait(f"t{i}", [b"x"])
    with pytest.raises(k.MaxTopicsReached) as info:
        pub.publish_nowait("t10", [b"x"])
    assert info.value.limit == 10
    subs = [k.InMemorySubscriber(broker) for _ in range(6)]
    for s in subs[:5]:
        s.subscribe("t0")
    with pytest.raises(k.MaxSubscribersReached) as info2:
        subs[5].subscribe("t0")
    assert info2.value.limit == 5
