"""Bounded topics (max_queue_size) under the default "error" overflow policy."""

from __future__ import annotations

import pytest


def test_queue_full_names_the_real_topic_and_the_limit(k):
    broker, pub, _sub = k.setup(max_queue_size=3, enable_stats=True, subscribe="orders.eu")
    pub.publish_nowait("orders.eu", [b"1", b"2", b"3"])
    with pytest.raises(k.QueueFull) as info:
        pub.publish_nowait("orders.eu", [b"4"])
    err = info.value
    assert err.topic == "orders.eu"
    assert err.topic != "topic"
    assert err.limit == 3
    assert "orders.eu" in str(err)
    assert isinstance(err, k.InMemoryError)
    assert isinstance(err, k.KincirError)
    assert broker.topic_info("orders.eu").queue_full_errors == 1
    assert broker.stats().queue_full_errors() == 1


def test_queue_full_from_every_publish_flavour(k):
    _, pub, sub = k.setup(max_queue_size=1, subscribe="t")
    pub.publish_nowait("t", [b"1"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"x"])
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"x"])
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"x"], timeout=0.05)
    with pytest.raises(k.QueueFull):
        k.run(pub.publish("t", [b"x"]))
    with pytest.raises(k.QueueFull):
        k.run(pub.publish("t", [b"x"], timeout=0.05))
    assert sub.try_receive_batch(10)[0].payload == b"1"
    assert sub.try_receive() is None


def test_batch_that_does_not_fit_publishes_nothing_and_uses_no_sequence(k):
    broker, pub, sub = k.setup(max_queue_size=5, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"a", b"b", b"c"])
    assert broker.topic_info("t").queue_size == 3
    assert broker.topic_info("t").total_published == 3
    assert broker.topic_info("t").next_sequence == 4
    pub.publish_nowait("t", [b"4", b"5"])
    got = sub.try_receive_batch(10)
    assert [m.payload for m in got] == [b"1", b"2", b"3", b"4", b"5"]
    assert [m.sequence for m in got] == [1, 2, 3, 4, 5]


def test_batch_larger_than_capacity_is_refused_whole(k):
    broker, pub, sub = k.setup(max_queue_size=2, subscribe="t")
    with pytest.raises(k.QueueFull) as info:
        pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert info.value.topic == "t"
    assert broker.topic_info("t").queue_size == 0
    assert sub.try_receive() is None
    pub.publish_nowait("t", [b"ok"])
    assert sub.try_receive().sequence == 1


def test_queue_size_drops_as_subscribers_consume(k):
    broker, pub, sub = k.setup(max_queue_size=3, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert broker.topic_info("t").queue_size == 3
    sub.try_receive()
    assert broker.topic_info("t").queue_size == 2
    pub.publish_nowait("t", [b"4"])  # room again
    assert broker.topic_info("t").queue_size == 3
    sub.try_receive_batch(10)
    assert broker.topic_info("t").queue_size == 0


def test_a_topic_whose_subscriber_keeps_up_never_fills(k):
    """The Rust original fails after max_queue_size messages even when every reader kept up."""
    broker, pub, sub = k.setup(max_queue_size=10, subscribe="t")
    for i in range(100):
        pub.publish_nowait("t", [str(i).encode()])
        got = sub.try_receive()
        assert got.sequence == i + 1
    for i in range(10):
        pub.publish_nowait("t", [str(i).encode() for _ in range(10)])
        assert len(sub.try_receive_batch(10)) == 10
    info = broker.topic_info("t")
    assert info.queue_size == 0
    assert info.queue_full_errors == 0
    assert info.total_published == 200


def test_a_topic_whose_subscribers_keep_up_never_fills_async(k):
    broker, pub, sub = k.setup(max_queue_size=4)
    other = k.InMemorySubscriber(broker)
    sub.subscribe("t")
    other.subscribe("t")

    async def main():
        for i in range(40):
            await pub.publish("t", [str(i).encode()])
            await sub.receive(timeout=1)
            await other.receive(timeout=1)

    k.run(main())
    assert broker.topic_info("t").queue_size == 0


def test_the_slowest_of_two_subscribers_holds_messages(k):
    broker, pub, fast = k.setup(max_queue_size=5)
    slow = k.InMemorySubscriber(broker)
    fast.subscribe("t")
    slow.subscribe("t")
    pub.publish_nowait("t", [str(i).encode() for i in range(5)])
    assert len(fast.try_receive_batch(10)) == 5
    assert broker.topic_info("t").queue_size == 5
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"x"])
    assert len(slow.try_receive_batch(2)) == 2
    assert broker.topic_info("t").queue_size == 3
    pub.publish_nowait("t", [b"5", b"6"])
    assert broker.topic_info("t").queue_size == 5
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"x"])
    assert [m.sequence for m in fast.try_receive_batch(10)] == [6, 7]
    assert [m.sequence for m in slow.try_receive_batch(10)] == [3, 4, 5, 6, 7]
    assert broker.topic_info("t").queue_size == 0


def test_capacity_holds_messages_without_readers(k):
    _, pub, sub = k.setup(max_queue_size=2)
    pub.publish_nowait("t", [b"1", b"2"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"3"])
    sub.subscribe("t")
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"1", b"2"]
    pub.publish_nowait("t", [b"3"])
    assert sub.try_receive().sequence == 3


def test_capacity_is_per_topic(k):
    _, pub, _ = k.setup(max_queue_size=1)
    pub.publish_nowait("a", [b"1"])
    pub.publish_nowait("b", [b"1"])
    with pytest.raises(k.QueueFull) as info:
        pub.publish_nowait("b", [b"2"])
    assert info.value.topic == "b"


def test_unbounded_topic_grows(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"x"] * 20_000)
    assert broker.topic_info("t").queue_size == 20_000
    got = sub.try_receive_batch(50_000)
    assert len(got) == 20_000
    assert got[-1].sequence == 20_000
    assert broker.topic_info("t").queue_size == 0


def test_for_testing_profile_limits_queue_to_100(k):
    broker, pub, sub = k.setup(k.InMemoryConfig.for_testing())
    sub.subscribe("t")
    pub.publish_nowait("t", [b"x"] * 100)
    with pytest.raises(k.QueueFull) as info:
        pub.publish_nowait("t", [b"x"])
    assert info.value.limit == 100
    assert broker.stats().queue_full_errors() == 1


def test_queue_full_is_picklable(k):
    import pickle

    with k.activated():
        err = pickle.loads(pickle.dumps(k.QueueFull("orders", 5)))
    assert type(err) is k.QueueFull
    assert (err.topic, err.limit) == ("orders", 5)


def test_a_ring_that_wraps_and_then_grows_keeps_every_message_in_order(k):
    """Held messages that wrapped around the ring's end are still in order after it grows."""
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    slow, fast = k.InMemorySubscriber(broker), k.InMemorySubscriber(broker)
    slow.subscribe("t")
    fast.subscribe("t")
    expected = []
    for round_ in range(6):
        batch = [b"%d-%d" % (round_, i) for i in range(5 + 7 * round_)]
        pub.publish_nowait("t", batch)
        expected += batch
        assert [m.payload for m in fast.try_receive_batch(1000)] == batch
        for _ in range(3):  # the slow reader keeps the tail moving, so the held run wraps
            assert slow.try_receive().payload == expected.pop(0)
    got = [m.payload for m in slow.try_receive_batch(10_000)]
    assert got == expected
    assert broker.topic_info("t").queue_size == 0
