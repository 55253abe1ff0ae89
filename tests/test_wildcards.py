"""Wildcard subscriptions: ``*`` one segment, ``>`` one or more trailing segments."""

from __future__ import annotations

import asyncio
import time

import pytest


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.paid", False),
        ("orders.*", "orders", False),
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.paid", True),
        ("orders.>", "orders", False),
        ("*.paid", "eu.paid", True),
        ("*.paid", "eu.unpaid", False),
        ("*.*", "a.b", True),
        ("*.*", "a.b.c", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("a.*.c.>", "a.b.c.d.e", True),
        ("a.*.c.>", "a.b.c", False),
        ("*", "abc", True),
        ("*", "a.b", False),
    ],
)
def test_matching_rules(k, pattern, topic, expected):
    broker = k.new_broker()
    sub = k.InMemorySubscriber(broker)
    sub.subscribe(pattern)
    k.InMemoryPublisher(broker).publish_nowait(topic, [b"x"])
    got = sub.try_receive()
    assert (got is not None) == expected
    if expected:
        assert got.topic == topic


def test_pattern_joins_existing_and_later_topics(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    pub.publish_nowait("orders.eu", [b"held"])  # no reader yet: held for the first one
    pub.publish_nowait("users.new", [b"other"])
    sub = k.subscriber(broker, "orders.*")
    assert sub.subscribed_topics() == ["orders.eu"]
    assert sub.subscribed_patterns() == ["orders.*"]
    pub.publish_nowait("orders.us", [b"new topic"])
    assert sorted(sub.subscribed_topics()) == ["orders.eu", "orders.us"]
    got = sorted(m.payload for m in sub.try_receive_batch(10) + sub.try_receive_batch(10))
    assert got == [b"held", b"new topic"]
    assert sub.try_receive() is None


def test_a_receive_waiting_on_a_pattern_with_no_topic_yet_gets_the_first_message(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "sensors.>")
    assert sub.try_receive() is None  # no topic yet: nothing, not NotSubscribed
    waiting = k.spawn(sub.receive_sync, 5)
    time.sleep(0.05)
    k.InMemoryPublisher(broker).publish_nowait("sensors.kitchen.temp", [b"21"])
    msg = waiting.join()
    assert (msg.topic, msg.payload) == ("sensors.kitchen.temp", b"21")


def test_async_receive_on_a_pattern_sees_topics_created_by_threads(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "jobs.*")
    pub = k.InMemoryPublisher(broker)

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: k.spawn(pub.publish_nowait, "jobs.a", [b"1"]))
        first = await sub.receive(timeout=5)
        loop.call_later(0.05, lambda: k.spawn(pub.publish_nowait, "jobs.b", [b"2"]))
        second = await sub.receive(timeout=5)
        return first.topic, second.topic

    assert k.run(main()) == ("jobs.a", "jobs.b")


def test_unsubscribe_pattern_leaves_only_the_topics_it_joined(k):
    _broker, pub, sub = k.setup(subscribe="a.x")
    sub.subscribe("a.*")
    pub.publish_nowait("a.y", [b"1"])
    assert sorted(sub.subscribed_topics()) == ["a.x", "a.y"]
    sub.unsubscribe("a.*")
    assert sub.subscribed_topics() == ["a.x"]
    assert sub.subscribed_patterns() == []
    pub.publish_nowait("a.z", [b"2"])  # the pattern is gone: not joined
    assert sub.subscribed_topics() == ["a.x"]
    with pytest.raises(k.NotSubscribed):
        sub.unsubscribe("a.*")


def test_overlapping_patterns_keep_a_topic_until_the_last_one_leaves(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "a.*")
    sub.subscribe("a.>")
    k.InMemoryPublisher(broker).publish_nowait("a.b", [b"1"])
    assert sub.subscribed_topics() == ["a.b"]
    sub.unsubscribe("a.>")
    assert sub.subscribed_topics() == ["a.b"]
    sub.unsubscribe("a.*")
    assert sub.subscribed_topics() == []
    with pytest.raises(k.NotSubscribed):
        sub.try_receive()


def test_unsubscribe_all_and_close_drop_patterns(k):
    _broker, pub, sub = k.setup(subscribe="p.*")
    sub.unsubscribe()
    pub.publish_nowait("p.a", [b"1"])
    assert sub.subscribed_topics() == []
    sub.subscribe("p.*")
    assert sub.subscribed_topics() == ["p.a"]
    sub.close()
    pub.publish_nowait("p.b", [b"1"])
    assert sub.subscribed_topics() == []
    with pytest.raises(k.NotSubscribed):
        sub.subscribe("p.*")


def test_a_dropped_pattern_subscriber_is_forgotten(k):
    import gc

    broker = k.new_broker()
    sub = k.subscriber(broker, "g.*")
    del sub
    gc.collect()
    k.InMemoryPublisher(broker).publish_nowait("g.a", [b"1"])
    assert broker.topic_info("g.a").subscriber_count == 0


def test_pattern_with_a_group_spreads_each_topic_over_members(k):
    broker = k.new_broker()
    members = k.members(broker, "q.*")
    pub = k.InMemoryPublisher(broker)
    pub.publish_nowait("q.a", [b"1", b"2", b"3", b"4"])
    got = [members[0].try_receive(), members[1].try_receive()]
    got += members[0].try_receive_batch(10) + members[1].try_receive_batch(10)
    assert sorted(m.sequence for m in got) == [1, 2, 3, 4]
    assert broker.topic_info("q.a").subscriber_count == 2


def test_pattern_skips_topics_at_their_subscriber_limit(k):
    broker = k.new_broker(max_subscribers_per_topic=1)
    first = k.subscriber(broker, "full.a")
    sub = k.subscriber(broker, "full.*")
    assert sub.subscribed_topics() == []
    k.InMemoryPublisher(broker).publish_nowait("full.b", [b"1"])
    assert sub.subscribed_topics() == ["full.b"]
    assert first.subscribed_topics() == ["full.a"]


def test_pattern_subscription_after_shutdown_is_refused(k):
    broker = k.new_broker()
    sub = k.InMemorySubscriber(broker)
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        sub.subscribe("a.*")


def test_pattern_receive_ends_at_shutdown(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "z.*")
    k.InMemoryPublisher(broker).publish_nowait("z.a", [b"1"])
    broker.shutdown()
    assert [m.payload for m in sub] == [b"1"]


def test_pattern_with_ack_subscriber(k):
    broker = k.new_broker()
    sub = k.ack_subscriber(broker, "acks.>")
    k.InMemoryPublisher(broker).publish_nowait("acks.one.two", [b"1"])
    msg, handle = sub.receive_with_ack_sync(timeout=2)
    assert msg.topic == "acks.one.two"
    sub.ack(handle)


def test_leaving_a_pattern_keeps_topics_subscribed_by_name(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "a.*")
    k.InMemoryPublisher(broker).publish_nowait("a.b", [b"1"])
    sub.subscribe("a.b")  # already joined by the pattern; now also by name
    sub.unsubscribe("a.*")
    assert sub.subscribed_topics() == ["a.b"]
    sub.unsubscribe("a.b")
    assert sub.subscribed_topics() == []


def _pattern_only_receive(k, broker, kind):
    """A callable that blocks in ``kind`` of receive on a new subscriber whose only
    subscription is a pattern matching no topic, and returns what ended the wait."""
    if kind.startswith("ack"):
        sub = k.InMemoryAckSubscriber(broker)
    else:
        sub = k.InMemorySubscriber(broker)
    sub.subscribe("nothing.yet.>")

    def wait() -> str:
        if kind.endswith("iteration"):
            assert list(sub) == []
            return "iteration ended"
        try:
            if kind == "ack receive_with_ack_sync":
                sub.receive_with_ack_sync()
            elif kind.endswith("batch"):
                sub.receive_batch_sync(10)
            else:
                sub.receive_sync()
        except k.BrokerShutdown:
            return "BrokerShutdown"
        return "message"

    return wait


@pytest.mark.parametrize("how", ["shutdown", "force_shutdown"])
@pytest.mark.parametrize(
    "kind",
    [
        "receive_sync",
        "receive_batch",
        "iteration",
        "ack receive_sync",
        "ack receive_with_ack_sync",
        "ack iteration",
    ],
)
def test_shutdown_wakes_a_thread_waiting_on_a_pattern_with_no_topic(k, how, kind):
    broker = k.new_broker()
    wait = _pattern_only_receive(k, broker, kind)
    worker = k.spawn(wait)
    worker.started.wait(2)
    time.sleep(0.05)  # let it block
    getattr(broker, how)()
    expected = "iteration ended" if kind.endswith("iteration") else "BrokerShutdown"
    assert worker.join(2.0) == expected


@pytest.mark.parametrize("how", ["shutdown", "force_shutdown"])
@pytest.mark.parametrize("kind", ["plain", "ack"])
def test_shutdown_wakes_a_task_waiting_on_a_pattern_with_no_topic(k, how, kind):
    broker = k.new_broker()
    sub = k.InMemoryAckSubscriber(broker) if kind == "ack" else k.InMemorySubscriber(broker)
    sub.subscribe("nothing.*")

    async def main() -> list[str]:
        tasks = [
            asyncio.ensure_future(sub.receive()),
            asyncio.ensure_future(sub.receive_batch(5)),
            asyncio.ensure_future(anext(aiter(sub), "iteration ended")),
        ]
        if kind == "ack":
            tasks.append(asyncio.ensure_future(sub.receive_with_ack()))
        await asyncio.sleep(0.05)
        getattr(broker, how)()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)
        return [r if isinstance(r, str) else type(r).__name__ for r in done]

    got = k.run(main())
    assert got[2] == "iteration ended"
    assert got[:2] + got[3:] == ["BrokerShutdown"] * (len(got) - 1)


def test_a_pattern_subscriber_drains_its_topics_then_ends_at_shutdown(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "d.*")
    sub.subscribe("never.*")
    k.InMemoryPublisher(broker).publish_nowait("d.a", [b"1", b"2"])
    assert sub.receive_sync(timeout=1).payload == b"1"
    worker = k.spawn(lambda: [m.payload for m in sub])
    broker.shutdown()
    assert worker.join(2.0) == [b"2"]


@pytest.mark.parametrize("first_left", ["orders.*", "orders.>"])
@pytest.mark.parametrize("topic_first", [True, False])
def test_leaving_one_of_two_overlapping_patterns_keeps_what_the_other_matches(
    k, first_left, topic_first
):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    if topic_first:
        broker.configure_topic("orders.eu")
        broker.configure_topic("orders.eu.paid")
    sub.subscribe("orders.*")
    sub.subscribe("orders.>")
    pub.publish_nowait("orders.eu", [b"1"])
    pub.publish_nowait("orders.eu.paid", [b"1"])
    assert sorted(sub.subscribed_topics()) == ["orders.eu", "orders.eu.paid"]
    sub.unsubscribe(first_left)
    remaining = "orders.>" if first_left == "orders.*" else "orders.*"
    assert sub.subscribed_patterns() == [remaining]
    kept = ["orders.eu", "orders.eu.paid"] if remaining == "orders.>" else ["orders.eu"]
    assert sorted(sub.subscribed_topics()) == kept
    sub.try_receive_batch(10)
    sub.try_receive_batch(10)
    pub.publish_nowait("orders.eu", [b"2"])
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"2"]
    sub.unsubscribe(remaining)
    assert sub.subscribed_topics() == []
    assert sub.subscribed_patterns() == []


def test_leaving_a_pattern_keeps_a_topic_another_pattern_or_a_name_covers(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "a.b")
    sub.subscribe("a.*")
    sub.subscribe("*.c")
    sub.subscribe("a.>")
    for name in ("a.b", "a.c", "a.d", "x.c"):
        broker.configure_topic(name)
    assert sorted(sub.subscribed_topics()) == ["a.b", "a.c", "a.d", "x.c"]
    sub.unsubscribe("a.>")
    assert sorted(sub.subscribed_topics()) == ["a.b", "a.c", "a.d", "x.c"]
    sub.unsubscribe("a.*")
    assert sorted(sub.subscribed_topics()) == ["a.b", "a.c", "x.c"]
    sub.unsubscribe("*.c")
    assert sub.subscribed_topics() == ["a.b"]
