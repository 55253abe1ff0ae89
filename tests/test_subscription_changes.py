"""Subscriptions that change while a receive waits, subscribers dropped without close(), and
messages that stay immutable once shared."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest


def test_waiting_receive_sync_sees_a_topic_subscribed_meanwhile(k):
    _broker, pub, sub = k.setup(subscribe="a")
    waiting = k.spawn(sub.receive_sync, 5.0)
    time.sleep(0.1)
    sub.subscribe("b")
    pub.publish_nowait("b", [b"on b"])
    started = time.monotonic()
    got = waiting.join(5.0)
    assert got.payload == b"on b"
    assert time.monotonic() - started < 2.0


def test_waiting_async_receive_sees_a_topic_subscribed_meanwhile(k):
    _broker, pub, sub = k.setup(subscribe="a")

    async def main():
        task = asyncio.ensure_future(sub.receive(timeout=5.0))
        await asyncio.sleep(0.05)
        sub.subscribe("b")
        await pub.publish("b", [b"on b"])
        return await task

    assert k.run(main()).payload == b"on b"


def test_receive_sync_accepts_an_infinite_timeout(k):
    _broker, pub, sub = k.setup(subscribe="t")
    waiting = k.spawn(sub.receive_sync, float("inf"))
    time.sleep(0.1)
    pub.publish_nowait("t", [b"late"])
    assert waiting.join(5.0).payload == b"late"


def test_a_dropped_subscriber_leaves_its_topics(k):
    broker = k.new_broker(max_queue_size=10, max_subscribers_per_topic=2)
    pub = k.InMemoryPublisher(broker)
    keep = k.subscriber(broker, "t")

    def join_and_forget():
        k.InMemorySubscriber(broker).subscribe("t")

    join_and_forget()
    gc.collect()
    assert broker.topic_info("t").subscriber_count == 1
    for i in range(50):  # the remaining reader keeps up, so the bounded topic never fills
        pub.publish_nowait("t", [b"%d" % i])
        assert keep.try_receive().payload == b"%d" % i
    k.InMemorySubscriber(broker).subscribe("t")  # the freed place can be taken again


def test_a_delivered_message_cannot_be_reinitialised(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    first, second = k.InMemorySubscriber(broker), k.InMemorySubscriber(broker)
    first.subscribe("t")
    second.subscribe("t")
    pub.publish_nowait("t", [b"original"])
    got = first.try_receive()
    with pytest.raises(TypeError, match="immutable"):
        got.__init__(b"tampered")
    other = second.try_receive()
    assert other.payload == b"original"
    assert other.sequence == 1
    assert broker.health_check().memory_usage_estimate >= 0
