"""Message time-to-live: expired messages are never delivered, are counted, and are reclaimed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest


def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_expired_message_is_never_delivered_and_is_counted(k):
    broker, pub, sub = k.setup(default_message_ttl=0.05, enable_stats=True, subscribe="t")
    pub.publish_nowait("t", [b"old"])
    time.sleep(0.15)
    assert sub.try_receive() is None
    with pytest.raises(TimeoutError):
        sub.receive_sync(timeout=0.02)
    info = broker.topic_info("t")
    assert info.total_expired == 1
    assert info.queue_size == 0
    assert broker.stats().messages_expired() == 1
    assert broker.stats().messages_consumed() == 0


def test_fresh_messages_are_delivered(k):
    _, pub, sub = k.setup(default_message_ttl=5.0, subscribe="t")
    pub.publish_nowait("t", [b"fresh"])
    assert sub.receive_sync(timeout=1).payload == b"fresh"


def test_only_the_expired_part_is_skipped(k):
    broker, pub, sub = k.setup(default_message_ttl=0.2, enable_stats=True, subscribe="t")
    pub.publish_nowait("t", [b"old1", b"old2"])
    time.sleep(0.4)
    pub.publish_nowait("t", [b"new"])
    got = sub.receive_sync(timeout=1)
    assert got.payload == b"new"
    assert got.sequence == 3  # expiry does not renumber
    assert broker.stats().messages_expired() == 2
    assert broker.topic_info("t").queue_size == 0


def test_expired_messages_are_skipped_by_async_receive(k):
    _, pub, sub = k.setup(default_message_ttl=0.05, subscribe="t")
    pub.publish_nowait("t", [b"old"])
    time.sleep(0.15)

    async def main():
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=0.02)
        await pub.publish("t", [b"new"])
        return await sub.receive(timeout=1)

    assert k.run(main()).payload == b"new"


def test_held_messages_expire_before_the_first_subscriber(k):
    broker, pub, sub = k.setup(default_message_ttl=0.05, enable_stats=True)
    pub.publish_nowait("t", [b"old"])
    time.sleep(0.15)
    sub.subscribe("t")
    assert sub.try_receive() is None
    assert broker.stats().messages_expired() == 1


def test_ttl_accepts_timedelta(k):
    broker, pub, sub = k.setup(default_message_ttl=timedelta(milliseconds=50))
    sub.subscribe("t")
    pub.publish_nowait("t", [b"old"])
    time.sleep(0.15)
    assert sub.try_receive() is None
    assert broker.topic_info("t").total_expired == 1


def test_cleanup_pass_reclaims_expired_messages_without_a_receive(k):
    broker, pub, sub = k.setup(
        default_message_ttl=0.05, cleanup_interval=0.05, enable_stats=True, subscribe="t"
    )
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4", b"5"])
    assert broker.topic_info("t").queue_size == 5
    assert wait_until(lambda: broker.topic_info("t").queue_size == 0), broker.topic_info("t")
    assert broker.health_check().total_queued_messages == 0
    assert broker.topic_info("t").total_expired == 5
    assert broker.stats().messages_expired() == 5
    assert sub.try_receive() is None


def test_cleanup_pass_reclaims_messages_held_without_readers(k):
    broker, pub, _ = k.setup(default_message_ttl=0.05, cleanup_interval=0.05)
    pub.publish_nowait("orphan", [b"1", b"2"])
    assert wait_until(lambda: broker.topic_info("orphan").queue_size == 0)
    assert broker.topic_info("orphan").total_expired == 2


def test_cleanup_pass_frees_memory_estimate(k):
    broker, pub, _sub = k.setup(default_message_ttl=0.05, cleanup_interval=0.05, subscribe="t")
    empty = broker.health_check().memory_usage_estimate
    pub.publish_nowait("t", [b"x" * 50_000])
    assert broker.health_check().memory_usage_estimate >= empty + 50_000
    assert wait_until(lambda: broker.health_check().memory_usage_estimate < empty + 50_000)


def test_expired_messages_free_capacity(k):
    _, pub, sub = k.setup(default_message_ttl=0.05, max_queue_size=2, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    time.sleep(0.15)
    pub.publish_nowait("t", [b"3", b"4"])  # the expired ones no longer take room
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"3", b"4"]


def test_without_ttl_messages_never_expire(k):
    broker, pub, sub = k.setup(cleanup_interval=0.01, subscribe="t")
    pub.publish_nowait("t", [b"kept"])
    time.sleep(0.1)
    assert sub.try_receive().payload == b"kept"
    assert broker.topic_info("t").total_expired == 0


def test_expiry_counts_per_reader(k):
    broker, pub, a = k.setup(default_message_ttl=0.05, enable_stats=True)
    b = k.InMemorySubscriber(broker)
    a.subscribe("t")
    b.subscribe("t")
    pub.publish_nowait("t", [b"old"])
    time.sleep(0.15)
    assert a.try_receive() is None
    assert b.try_receive() is None
    assert broker.stats().messages_expired() == 2
    assert broker.topic_info("t").queue_size == 0


def test_a_cleanup_interval_longer_than_a_thread_can_wait_is_accepted(k):
    # threading.Event.wait refuses timeouts past threading.TIMEOUT_MAX (OverflowError); the
    # cleanup thread must wait in bounded steps instead of dying on a valid configuration.
    config = k.InMemoryConfig(default_message_ttl=1.0, cleanup_interval=1e300)
    broker = k.InMemoryBroker(config)
    try:
        time.sleep(0.05)  # the cleanup thread has started its first wait
        assert broker.health_check().is_healthy
    finally:
        broker.force_shutdown()


def test_tombstones_do_not_make_a_publish_reclaim_expired_messages(k):
    # the last ack reader leaves message 1 unsettled and message 2 (expired) behind as a
    # tombstone: the room check of the next publish must not count the tombstone, or it
    # reclaims message 1 early where the same state without a tombstone keeps it until a
    # reader or the cleanup pass comes by
    broker, pub, _ = k.setup(max_queue_size=2, default_message_ttl=100)
    acker = k.InMemoryAckSubscriber(broker, ack_timeout=1e6)
    pub.publish_nowait("t", [b"1", b"2"])
    acker.subscribe("t")
    assert acker.try_receive_with_ack()[0].payload == b"1"
    k.core._advance_clock(110)
    assert acker.try_receive_with_ack() is None  # message 2 expired
    acker.unsubscribe("t")
    assert broker.topic_info("t").queue_size == 1
    pub.publish_nowait("t", [b"3"])
    assert broker.topic_info("t").queue_size == 2


def test_settled_messages_behind_an_unsettled_one_do_not_make_a_publish_reclaim(k):
    # message 2 is dropped (nacked, no requeue) while message 1 is still in flight: its slot
    # stays behind 1 but counts against nothing, so a publish that fits (1 in flight and 3
    # unread: 4) must not reclaim the expired unread message 3 early; a full topic would
    broker, pub, _ = k.setup(max_queue_size=4, default_message_ttl=100)
    acker = k.InMemoryAckSubscriber(broker, ack_timeout=1e6)
    acker.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    acker.try_receive_with_ack()
    _, second = acker.try_receive_with_ack()
    k.core._advance_clock(110)  # 1, 2 and 3 expired
    pub.publish_nowait("t", [b"4"])
    acker.nack(second, requeue=False)
    pub.publish_nowait("t", [b"5"])
    info = broker.topic_info("t")
    assert (info.queue_size, info.in_flight, info.total_expired) == (3, 1, 0)
    assert acker.try_receive_with_ack()[0].payload == b"4"  # a reader skips 3 as expired
    assert broker.topic_info("t").total_expired == 1
    pub.publish_nowait("t", [b"6"])  # 1 and 4 in flight, 5 and 6 unread: full, not over
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"7"])
