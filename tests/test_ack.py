"""Acknowledgement: in-flight messages, ack/nack, redelivery, deadlines, dead letters."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest


def test_receive_with_ack_hands_out_message_and_handle(k):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [k.Message(b"hello")])
    msg, handle = sub.try_receive_with_ack()
    assert msg.payload == b"hello"
    assert handle.message_id == msg.uuid
    assert handle.topic == "t"
    assert handle.delivery_count == 1
    assert handle.is_retry is False
    assert handle.sequence == 1
    assert abs(handle.timestamp - time.time()) < 5
    assert isinstance(sub, k.AckSubscriber)
    assert isinstance(sub, k.Subscriber)
    assert not isinstance(k.InMemorySubscriber(broker), k.AckSubscriber)


def test_in_flight_messages_hold_their_slot_until_acked(k):
    broker = k.new_broker(max_queue_size=2, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    # in flight is its own term (issue 12): read, so not queued, and not consumed until acked
    assert broker.topic_info("t").queue_size == 0
    assert broker.topic_info("t").in_flight == 2
    assert broker.topic_info("t").total_consumed == 0
    assert broker.stats().messages_in_flight() == 2
    assert sub.in_flight() == 2
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"3"])
    sub.ack(h2)  # capacity counts what is held: the acked newer one no longer does
    assert broker.topic_info("t").total_consumed == 1
    pub.publish_nowait("t", [b"3"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"4"])
    sub.ack(h1)
    assert broker.topic_info("t").queue_size == 1
    assert broker.topic_info("t").in_flight == 0
    pub.publish_nowait("t", [b"4"])


def test_nack_redelivers_with_a_higher_delivery_count(k):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2"])
    msg, handle = sub.try_receive_with_ack()
    sub.nack(handle)
    again, retry = sub.try_receive_with_ack()
    assert again.uuid == msg.uuid and again.sequence == 1
    assert retry.delivery_count == 2 and retry.is_retry
    sub.ack(retry)
    nxt, h = sub.try_receive_with_ack()
    assert nxt.payload == b"2" and h.delivery_count == 1
    assert broker.stats().messages_redelivered() == 1


def test_past_max_deliveries_the_message_goes_to_the_dead_letter_topic(k):
    broker, pub, sub = k.ack_setup(max_deliveries=2, dead_letter_topic="t.dlq")
    dlq = k.subscriber(broker, "t.dlq")
    pub.publish_nowait("t", [k.Message(b"poison", {"kind": "bad"})])
    msg, h = sub.try_receive_with_ack()
    sub.nack(h)
    _, h = sub.try_receive_with_ack()
    sub.nack(h)
    assert sub.try_receive_with_ack() is None
    letter = dlq.try_receive()
    assert letter.payload == b"poison"
    assert letter.uuid == msg.uuid
    meta = letter.metadata
    assert meta["kind"] == "bad"
    assert meta["_dead_letter_reason"] == "max_deliveries_exceeded"
    assert meta["_delivery_count"] == "2"
    assert meta["_original_topic"] == "t"
    assert meta["_original_sequence"] == "1"
    assert broker.stats().messages_dead_lettered() == 1
    assert broker.topic_info("t").queue_size == 0


def test_without_dead_letter_topic_exhausted_messages_are_dropped_and_counted(k):
    broker, pub, sub = k.ack_setup(max_deliveries=1)
    pub.publish_nowait("t", [b"x"])
    _, h = sub.try_receive_with_ack()
    sub.nack(h)
    assert sub.try_receive_with_ack() is None
    assert broker.stats().messages_dropped() == 1
    assert broker.topic_info("t").queue_size == 0


def test_unbounded_max_deliveries(k):
    _broker, pub, sub = k.ack_setup(max_deliveries=None)
    pub.publish_nowait("t", [b"x"])
    for n in range(1, 21):
        _, h = sub.try_receive_with_ack()
        assert h.delivery_count == n
        sub.nack(h)


def test_nack_without_requeue_rejects_to_the_dead_letter_topic(k):
    broker, pub, sub = k.ack_setup(dead_letter_topic="dlq")
    dlq = k.subscriber(broker, "dlq")
    pub.publish_nowait("t", [b"x"])
    _, h = sub.try_receive_with_ack()
    sub.nack(h, requeue=False)
    assert sub.try_receive_with_ack() is None
    assert dlq.try_receive().metadata["_dead_letter_reason"] == "rejected"


def test_a_missed_ack_deadline_redelivers(k):
    broker, pub, sub = k.ack_setup(ack_timeout=0.05)
    pub.publish_nowait("t", [b"x"])
    _, first = sub.receive_with_ack_sync(timeout=1)
    assert sub.try_receive_with_ack() is None
    start = time.monotonic()
    _, second = sub.receive_with_ack_sync(timeout=2)  # the wait wakes at the deadline
    assert time.monotonic() - start < 1.0
    assert second.delivery_count == 2
    with pytest.raises(k.AckError):
        sub.ack(first)  # stale: redelivered since
    sub.ack(second)
    assert broker.topic_info("t").queue_size == 0


def test_settled_foreign_and_wrong_handles_are_rejected(k):
    broker, pub, sub = k.ack_setup()
    other = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1"])
    _, h = sub.try_receive_with_ack()
    _, h_other = other.try_receive_with_ack()
    with pytest.raises(k.AckError):
        sub.ack(h_other)
    sub.ack(h)
    with pytest.raises(k.AckError):
        sub.ack(h)
    with pytest.raises(k.AckError):
        sub.nack(h)
    with pytest.raises(TypeError):
        sub.ack("handle")
    with pytest.raises(TypeError):
        sub.nack(h_other, requeue="yes")
    assert isinstance(k.AckError("x"), k.InMemoryError)
    other.ack(h_other)
    assert broker.topic_info("t").queue_size == 0
    assert broker.health_check().is_healthy


def test_ack_and_nack_return_completed_awaitables(k):
    _broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2"])

    async def main():
        _, h1 = await sub.receive_with_ack()
        _, h2 = await sub.receive_with_ack(timeout=1)
        await sub.ack(h1)
        await sub.nack(h2)
        _, h3 = await sub.receive_with_ack()
        assert h3.delivery_count == 2
        await sub.ack_batch([h3])
        with pytest.raises(TimeoutError):
            await sub.receive_with_ack(timeout=0.05)

    k.run(main())


def test_batches_settle_all_or_none(k):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    handles = [sub.try_receive_with_ack()[1] for _ in range(3)]
    sub.ack(handles[0])
    with pytest.raises(k.AckError):
        sub.ack_batch([handles[1], handles[0], handles[2]])
    assert broker.topic_info("t").in_flight == 2
    with pytest.raises(k.AckError):
        sub.ack_batch([handles[1], handles[1]])
    sub.nack_batch(handles[1:])
    again = [sub.try_receive_with_ack()[1] for _ in range(2)]
    assert [h.sequence for h in again] == [2, 3]
    sub.ack_batch(again)
    assert broker.topic_info("t").queue_size == 0


def test_group_redelivers_to_any_member(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a, b = k.ack_group(broker)
    pub.publish_nowait("t", [b"x"])
    msg, h = a.try_receive_with_ack()
    assert b.try_receive_with_ack() is None
    a.nack(h)
    again, h2 = b.try_receive_with_ack()
    assert again.uuid == msg.uuid and h2.is_retry
    with pytest.raises(k.AckError):
        a.ack(h2)  # handed to b
    b.ack(h2)


def test_closing_group_member_returns_its_deliveries(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a, b = k.ack_group(broker)
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    got = [a.try_receive_with_ack() for _ in range(2)]
    a.close()
    seqs = []
    while (item := b.try_receive_with_ack()) is not None:
        seqs.append((item[0].sequence, item[1].is_retry))
        b.ack(item[1])
    assert seqs == [(1, True), (2, True), (3, False)]
    with pytest.raises(k.AckError):
        a.ack(got[0][1])
    assert broker.topic_info("t").queue_size == 0


def test_a_waiting_member_is_woken_by_another_members_nack(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a, b = k.ack_group(broker)
    pub.publish_nowait("t", [b"x"])
    _, h = a.try_receive_with_ack()
    waiting = k.spawn_blocked(b.receive_with_ack_sync, 5)
    a.nack(h)
    msg, h2 = waiting.join()
    assert msg.payload == b"x" and h2.delivery_count == 2


def test_async_member_is_woken_by_a_threads_nack(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a, b = k.ack_group(broker)
    pub.publish_nowait("t", [b"x"])
    _, h = a.try_receive_with_ack()

    async def main():
        threading.Timer(0.05, a.nack, (h,)).start()
        return await b.receive_with_ack(timeout=5)

    _msg, h2 = k.run(main())
    assert h2.is_retry


def test_deadline_expiring_while_an_ack_arrives_settles_exactly_once(k):
    outcomes = {"acked": 0, "redelivered": 0}
    for _ in range(30):
        broker = k.new_broker()
        pub = k.InMemoryPublisher(broker)
        a, b = k.ack_group(broker, {"ack_timeout": 0.01}, {"ack_timeout": 5})
        pub.publish_nowait("t", [b"x"])
        _, h = a.try_receive_with_ack()
        barrier = threading.Barrier(2)

        def late_ack(h=h, barrier=barrier, a=a):
            barrier.wait()
            time.sleep(0.01)
            try:
                a.ack(h)
                return True
            except k.AckError:
                return False

        def grab(barrier=barrier, b=b):
            barrier.wait()
            time.sleep(0.01)
            return b.try_receive_with_ack()

        acker, taker = k.spawn(late_ack), k.spawn(grab)
        acked, taken = acker.join(), taker.join()
        assert acked != (taken is not None), "exactly one of ack and redelivery must win"
        outcomes["acked" if acked else "redelivered"] += 1
        if taken is not None:
            b.ack(taken[1])
        assert broker.topic_info("t").queue_size == 0
        broker.force_shutdown()
    assert sum(outcomes.values()) == 30


def test_plain_receive_methods_ack_as_they_hand_out(k):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    assert sub.try_receive().payload == b"1"
    assert sub.receive_sync(timeout=1).payload == b"2"
    assert [m.payload for m in sub.try_receive_batch(5)] == [b"3", b"4"]
    assert broker.topic_info("t").queue_size == 0
    assert broker.topic_info("t").in_flight == 0
    pub.publish_nowait("t", [b"5"])
    broker.shutdown()
    assert [m.payload for m in sub] == [b"5"]


def test_invalid_settings(k):
    broker = k.new_broker()
    with pytest.raises(k.InvalidConfig) as info:
        k.InMemoryAckSubscriber(broker, ack_timeout=0)
    assert info.value.field == "ack_timeout"
    with pytest.raises(k.InvalidConfig):
        k.InMemoryAckSubscriber(broker, max_deliveries=0)
    with pytest.raises(TypeError):
        k.InMemoryAckSubscriber(broker, max_deliveries=1.5)
    with pytest.raises(TypeError):
        k.InMemoryAckSubscriber(broker, ack_timeout="1")
    with pytest.raises(k.InvalidTopicName):
        k.InMemoryAckSubscriber(broker, dead_letter_topic="a b")
    sub = k.InMemoryAckSubscriber(broker, ack_timeout=2.5, max_deliveries=None)
    assert (sub.ack_timeout, sub.max_deliveries, sub.dead_letter_topic) == (2.5, None, None)


def test_receive_with_ack_before_subscribing_raises_not_subscribed(k):
    broker = k.new_broker()
    sub = k.InMemoryAckSubscriber(broker)
    with pytest.raises(k.NotSubscribed):
        sub.try_receive_with_ack()
    with pytest.raises(k.NotSubscribed):
        sub.receive_with_ack_sync(timeout=0.1)


def test_shutdown_drain_waits_for_in_flight_acks(k):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1"])
    _, h = sub.try_receive_with_ack()
    assert broker.shutdown(timeout=0.05) is False
    sub.ack(h)  # settling still works after shutdown
    assert broker.shutdown(timeout=1) is True
    with pytest.raises(k.BrokerShutdown):
        sub.receive_with_ack_sync(timeout=1)


def test_delete_group_forgets_its_in_flight_messages(k):
    broker, pub, _ = k.ack_setup()
    member = k.ack_subscriber(broker, "t", group="g")
    pub.publish_nowait("t", [b"1"])
    _, h = member.try_receive_with_ack()
    assert broker.topic_info("t").in_flight == 1
    broker.delete_group("t", "g")
    assert broker.topic_info("t").in_flight == 0
    with pytest.raises(k.AckError):
        member.ack(h)


def test_worker_pool_with_random_failures_processes_every_message(k):
    broker = k.new_broker(max_queue_size=64, overflow="block", enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    n = 600
    done: list[int] = []
    lock = threading.Lock()
    members = [k.InMemoryAckSubscriber(broker, group="pool", max_deliveries=None) for _ in range(4)]
    for m in members:
        m.subscribe("jobs")

    def work(sub, seed):
        rng = random.Random(seed)
        while True:
            try:
                msg, h = sub.receive_with_ack_sync(timeout=2)
            except TimeoutError:
                return
            if rng.random() < 0.2:
                sub.nack(h)
                continue
            with lock:
                done.append(int(msg.payload))
            sub.ack(h)

    workers = [k.spawn(work, m, i) for i, m in enumerate(members)]
    for i in range(n):
        pub.publish_sync("jobs", [str(i).encode()], timeout=5)
    for w in workers:
        w.join(timeout=20)
    assert sorted(done) == list(range(n))  # each processed (acked) exactly once
    stats = broker.stats()
    assert stats.messages_redelivered() > 0
    assert broker.topic_info("jobs").queue_size == 0
    assert stats.messages_in_flight() == 0


def test_asyncio_iteration_over_an_ack_subscriber(k):
    broker, pub, sub = k.ack_setup()

    async def main():
        await pub.publish("t", [b"1", b"2"])
        broker.shutdown()
        return [m.payload async for m in sub]

    assert k.run(main()) == [b"1", b"2"]
    assert asyncio.iscoroutinefunction(sub.receive_with_ack)


def test_a_collected_group_member_returns_its_deliveries_without_deadlock(k):
    import gc

    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a = k.InMemoryAckSubscriber(broker, group="g", ack_timeout=0.05)
    c = k.InMemoryAckSubscriber(broker, group="g", ack_timeout=0.05)
    a.subscribe("t")
    c.subscribe("t")
    pub.publish_nowait("t", [b"x"])
    msg, handle = a.try_receive_with_ack()
    del msg, handle, a
    gc.collect()
    got = k.spawn(c.receive_with_ack_sync, 5).join(10)  # a hang fails here, not forever
    assert got[1].delivery_count == 2
    c.ack(got[1])
    assert broker.topic_info("t").queue_size == 0


def test_a_dropped_plain_ack_subscriber_releases_its_in_flight_slots(k):
    import gc
    import weakref

    broker = k.new_broker(max_queue_size=5)
    pub = k.InMemoryPublisher(broker)
    keep = k.subscriber(broker, "t")
    a = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"x"])
    keep.try_receive()
    msg, handle = a.try_receive_with_ack()
    ref = weakref.ref(a)
    del msg, handle, a
    gc.collect()
    assert ref() is None
    for _ in range(10):  # the reader that keeps up never lets the topic fill
        pub.publish_nowait("t", [b"y"])
        keep.try_receive()
    info = broker.topic_info("t")
    assert (info.subscriber_count, info.queue_size, info.in_flight) == (1, 0, 0)


@pytest.mark.parametrize("how", ["force_shutdown", "delete_topic", "clear_topic"])
def test_no_redelivery_after_the_log_dropped_the_message(k, how):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"x", b"y"])
    _, h = sub.try_receive_with_ack()
    sub.nack(h)
    if how == "force_shutdown":
        broker.force_shutdown()
        with pytest.raises(k.BrokerShutdown):
            sub.try_receive_with_ack()
    elif how == "delete_topic":
        broker.delete_topic("t")
        with pytest.raises(k.NotSubscribed):
            sub.try_receive_with_ack()
    else:
        broker.clear_topic("t")
        assert sub.try_receive_with_ack() is None
        info = broker.topic_info("t")
        assert (info.queue_size, info.in_flight) == (0, 0)


def test_drop_oldest_drops_in_flight_slots_and_they_are_not_redelivered(k):
    broker = k.new_broker(max_queue_size=2, overflow="drop_oldest")
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    pub.publish_nowait("t", [b"3", b"4"])  # the in-flight 1 and 2 lose their slots
    assert broker.topic_info("t").queue_size == 2
    sub.nack(h1)
    sub.ack(h2)  # a handle stays valid
    msg, h3 = sub.try_receive_with_ack()
    assert msg.payload == b"3" and h3.delivery_count == 1
    sub.ack(h3)
    assert broker.topic_info("t").in_flight == 0


def test_a_redelivery_past_the_ttl_is_expired_not_delivered(k):
    broker = k.new_broker(default_message_ttl=10.5, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"x"])
    _, h = sub.try_receive_with_ack()
    k.core._advance_clock(11)
    sub.nack(h)
    assert sub.try_receive_with_ack() is None
    info = broker.topic_info("t")
    assert (info.total_expired, info.in_flight, info.queue_size) == (1, 0, 0)
