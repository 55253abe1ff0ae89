"""Leaks: subscribers dropped without close give their references back, and dropped brokers
(with their subscribers, topics and TTL cleanup thread) are freed, with and without the cycle
collector. Both engines; step counts and the refcount checks are test_leaks_refcounts.py's.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest
from test_leaks_refcounts import (  # quiet_kincir_log: autouse, for these tests too
    Tracked,
    assert_restored,
    quiet_kincir_log,  # noqa: F401
    steps,
)

# -- subscribers dropped without close --------------------------------------------------------


def test_subscribers_dropped_without_close(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    keeper = k.InMemorySubscriber(broker)  # keeps up, so only the dropped ones hold messages
    keeper.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg]

    def step():
        plain = k.InMemorySubscriber(broker)
        member = k.InMemorySubscriber(broker, group="g")
        acker = k.InMemoryAckSubscriber(broker)
        plain.subscribe("t")
        plain.subscribe("u")
        member.subscribe("t")
        acker.subscribe("t")
        pub.publish_nowait("t", batch)
        while keeper.try_receive() is not None:
            pass
        _, handle = acker.try_receive_with_ack()
        acker.ack(handle)  # nothing in flight (see test_ack_subscriber_dropped_with_...)
        member.try_receive_batch(2)  # the group is durable: it must not fall behind
        # all three dropped here, none closed, each holding unread messages

    assert_restored(t, step, steps(k, 200))
    assert broker.topic_info("t").subscriber_count == 1
    assert broker.topic_info("t").queue_size == 0


def test_pattern_subscribers_dropped_without_close(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    keeper = k.subscriber(broker, "t.sub")
    t = Tracked(k)
    batch = [t.raw, t.msg]

    def step():
        pattern = k.subscriber(broker, "t.>")
        pub.publish_nowait("t.sub", batch)
        pattern.try_receive()
        while keeper.try_receive() is not None:
            pass
        # dropped here without close(): the broker's pattern registry must forget it

    assert_restored(t, step, steps(k, 200))
    assert broker.topic_info("t.sub").subscriber_count == 1


@pytest.mark.parametrize("group", [None, "g"])
def test_ack_subscriber_dropped_with_a_delivery_in_flight(k, group):
    """A dropped ack subscriber must be freed (and leave its topics) even with an unsettled
    delivery; its in-flight message is then held for, or redelivered to, the next reader.
    Run on a worker thread: freeing a subscriber from inside the acknowledgement layer's lock
    once deadlocked (a finalizer taking the same lock), which must fail, not hang, the test."""
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    keeper = k.subscriber(broker, "t")
    t = Tracked(k)
    before = t.counts()

    def scenario() -> weakref.ref[Any]:
        acker = k.InMemoryAckSubscriber(broker, group)
        acker.subscribe("t")
        pub.publish_nowait("t", [t.raw, t.msg])
        acker.try_receive_with_ack()  # in flight; the handle is dropped at once
        dropped = weakref.ref(acker)
        del acker
        gc.collect()
        for _ in range(100):
            pub.publish_nowait("t", [t.raw])
            keeper.try_receive()
        while keeper.try_receive() is not None:
            pass
        if group is not None:
            broker.delete_group("t", group)  # a group holds its messages by design
        gc.collect()
        return dropped

    dropped = k.spawn(scenario).join(10.0)
    assert dropped() is None, "the broker keeps the dropped subscriber alive"
    assert broker.topic_info("t").queue_size == 0
    assert t.counts() == before


# -- brokers are freed ------------------------------------------------------------------------


def _plain(k, broker, pub):
    sub = k.subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    sub.try_receive()
    return [sub]


def _held(k, broker, pub):
    pub.publish_nowait("t", [b"held"] * 100)
    return []


def _group_and_pull(k, broker, pub):
    member = k.subscriber(broker, "t", group="g")
    pub.publish_nowait("t", [b"1", b"2"])
    member.try_receive()
    broker.consume("t")
    return [member]


def _pattern(k, broker, pub):
    sub = k.subscriber(broker, "t.*")
    pub.publish_nowait("t.a", [b"1"])
    return [sub]


def _ttl(k, broker, pub):
    sub = k.subscriber(broker, "t")
    pub.publish_nowait("t", [b"1"])
    return [sub]


def _closed_and_shut_down(k, broker, pub):
    sub = k.subscriber(broker, "t")
    pub.publish_nowait("t", [b"1"])
    sub.close()
    broker.shutdown()
    return [sub]


def _waited(k, broker, pub):
    sub = k.subscriber(broker, "t")
    with pytest.raises(TimeoutError):
        sub.receive_sync(timeout=0.001)

    async def main():
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=0.001)
        await pub.publish("t", [b"1"])
        await sub.receive()

    asyncio.run(main())
    return [sub]


def _ack(k, broker, pub):
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    _, handle = sub.try_receive_with_ack()
    sub.ack(handle)
    return [sub]


def _ack_group_in_flight(k, broker, pub):
    sub = k.ack_subscriber(broker, "t", group="g", dead_letter_topic="dlq")
    pub.publish_nowait("t", [b"1", b"2"])
    _, handle = sub.try_receive_with_ack()
    sub.nack(handle, requeue=False)
    sub.try_receive_with_ack()
    return [sub]


def _ack_closed(k, broker, pub):
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1"])
    sub.try_receive()
    sub.close()
    return [sub]


SETUPS = {
    "plain": _plain,
    "held": _held,
    "group_and_pull": _group_and_pull,
    "pattern": _pattern,
    "ttl": _ttl,
    "closed_and_shut_down": _closed_and_shut_down,
    "waited": _waited,
    "ack": _ack,
    "ack_group_in_flight": _ack_group_in_flight,
    "ack_closed": _ack_closed,
}


def _build(k: Any, name: str) -> tuple[weakref.ref[Any], list[weakref.ref[Any]]]:
    config = k.InMemoryConfig(default_message_ttl=30.0 if name == "ttl" else None)
    broker = k.InMemoryBroker(config)
    pub = k.InMemoryPublisher(broker)
    subs = SETUPS[name](k, broker, pub)
    return weakref.ref(broker), [weakref.ref(sub) for sub in subs]


def _topic_logs(k: Any) -> int:
    probe = k.InMemoryBroker()
    log_type = type(probe._topic("probe"))
    del probe
    return sum(1 for obj in gc.get_objects() if type(obj) is log_type)


@pytest.mark.parametrize("name", list(SETUPS))
def test_dropped_broker_is_collected(k, name):
    gc.collect()
    logs_before = _topic_logs(k)
    broker_ref, sub_refs = _build(k, name)
    gc.collect()
    assert broker_ref() is None, gc.get_referrers(broker_ref())
    assert all(ref() is None for ref in sub_refs)
    assert gc.garbage == []
    assert _topic_logs(k) == logs_before


@pytest.mark.parametrize("name", list(SETUPS))
def test_dropped_broker_is_freed_without_the_cycle_collector(k, name):
    """No reference cycle keeps a dropped broker (and the memory of its topics, which the
    collector's thresholds do not see) alive until the next collection."""
    gc.collect()
    gc.disable()
    try:
        broker_ref, sub_refs = _build(k, name)
        freed = broker_ref() is None
        subs_freed = [ref() is None for ref in sub_refs]
    finally:
        gc.enable()
        gc.collect()
    assert freed, "the broker is only freed by the cycle collector"
    assert all(subs_freed), "a subscriber is only freed by the cycle collector"


def test_ttl_cleanup_thread_ends_with_its_broker(k):
    def cleaners() -> int:
        return sum(1 for th in threading.enumerate() if th.name == "kincir-ttl-cleanup")

    before = cleaners()
    broker = k.InMemoryBroker(k.InMemoryConfig(default_message_ttl=1.0, cleanup_interval=0.01))
    assert cleaners() == before + 1
    ref = weakref.ref(broker)
    del broker
    gc.collect()
    assert ref() is None
    deadline = time.monotonic() + 5.0
    while cleaners() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cleaners() == before
