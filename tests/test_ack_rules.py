"""Acknowledgement rules decided in issue 12: batches during a drain, dead letters during a
drain and past ``max_topics``, capacity against what is held, and the accounting identity."""

from __future__ import annotations

import asyncio
import time

import pytest

# -- a batch returns what it holds (item 2) ----------------------------------------------------


@pytest.mark.parametrize("how", ["try", "sync", "async"])
def test_ack_batch_after_shutdown_returns_what_it_collected(k, how):
    broker, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.shutdown()
    if how == "try":
        got = sub.try_receive_batch(10)
    elif how == "sync":
        got = sub.receive_batch_sync(10, timeout=1)
    else:
        got = k.run(sub.receive_batch(10, timeout=1))
    assert [m.payload for m in got] == [b"1", b"2", b"3"]
    with pytest.raises(k.BrokerShutdown):  # the error comes on the next call
        sub.try_receive_batch(10)
    with pytest.raises(k.BrokerShutdown):
        sub.receive_batch_sync(10, timeout=1)
    assert broker.topic_info("t").total_consumed == 3
    assert broker.shutdown(timeout=0) is True


# -- dead letters during a graceful drain (item 12) ----------------------------------------------


def test_dead_letters_are_published_during_a_graceful_drain(k):
    broker = k.new_broker(enable_stats=True)
    sub = k.ack_subscriber(broker, "jobs", group="svc", max_deliveries=1, dead_letter_topic="dead")
    dlq = k.subscriber(broker, "dead")
    k.InMemoryPublisher(broker).publish_sync("jobs", [b"poison", b"ok"])
    broker.shutdown()
    _, h = sub.receive_with_ack_sync(timeout=1)
    sub.nack(h)  # its last allowed delivery failed
    assert dlq.try_receive().payload == b"poison"
    # the dead-letter reader waits while a message is still in flight: it may be dead-lettered
    _, h = sub.receive_with_ack_sync(timeout=1)
    assert dlq.try_receive() is None
    assert broker.shutdown(timeout=0) is False
    sub.nack(h, requeue=False)
    assert dlq.receive_sync(timeout=1).payload == b"ok"
    with pytest.raises(k.BrokerShutdown):  # nothing in flight, nothing unread: the drain ends
        dlq.receive_sync(timeout=1)
    st = broker.stats()
    assert (st.messages_dead_lettered(), st.messages_dropped()) == (2, 0)
    assert broker.shutdown(timeout=1) is True


def test_a_dead_letter_topic_made_during_the_drain_takes_the_letter(k):
    broker = k.new_broker(enable_stats=True)
    sub = k.ack_subscriber(broker, "jobs", dead_letter_topic="dead")
    k.InMemoryPublisher(broker).publish_nowait("jobs", [b"poison"])
    broker.shutdown()
    _, h = sub.try_receive_with_ack()
    sub.nack(h, requeue=False)
    assert broker.topic_info("dead").queue_size == 1
    assert broker.stats().messages_dead_lettered() == 1
    with pytest.raises(k.BrokerShutdown):  # a normal publish is still refused
        k.InMemoryPublisher(broker).publish_nowait("dead", [b"x"])


def test_a_dead_letter_reader_is_woken_when_the_drain_ends(k):
    broker = k.new_broker(enable_stats=True)
    sub = k.ack_subscriber(broker, "jobs", dead_letter_topic="dead")
    dlq = k.subscriber(broker, "dead")
    k.InMemoryPublisher(broker).publish_nowait("jobs", [b"fine"])
    broker.shutdown()
    _, h = sub.try_receive_with_ack()
    waiting = k.spawn_blocked(dlq.receive_sync, timeout=5)
    sub.ack(h)  # nothing can be dead-lettered any more
    with pytest.raises(k.BrokerShutdown):
        waiting.join()


# -- a group drains together ------------------------------------------------------------------


def test_a_group_member_keeps_receiving_while_another_members_message_may_return(k):
    broker = k.new_broker(enable_stats=True)
    a, b = k.ack_group(broker)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    broker.shutdown()
    _, ha = a.try_receive_with_ack()
    assert b.try_receive_with_ack() is None  # not BrokerShutdown: a's message may come back
    waiting = k.spawn(b.receive_with_ack_sync, timeout=5)
    time.sleep(0.05)
    a.nack(ha)
    msg, hb = waiting.join()
    assert msg.payload == b"1" and hb.delivery_count == 2
    b.ack(hb)
    for member in (a, b):
        with pytest.raises(k.BrokerShutdown):
            member.receive_with_ack_sync(timeout=1)
    assert broker.shutdown(timeout=0) is True


def test_a_waiting_group_member_ends_when_the_last_message_is_acked(k):
    broker = k.new_broker()
    a, b = k.ack_group(broker)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    broker.shutdown()
    _, ha = a.try_receive_with_ack()
    waiting = k.spawn_blocked(b.receive_with_ack_sync, timeout=5)
    a.ack(ha)
    with pytest.raises(k.BrokerShutdown):
        waiting.join()


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_member_whose_last_group_message_is_acked_just_before_it_waits_ends(k, how):
    # The settle that ends the drain may come between the member's look (nothing ready, a
    # message in flight) and its wait: its wake-up then finds no waiter, so the wait itself
    # must see that the drain has ended. The ack is slipped in at that point (the receive
    # computes how long it may wait there), which used to leave the member waiting for good.
    class AckedBeforeItWaits(k.InMemoryAckSubscriber):
        before_wait = None

        def _wait_bound(self, deadline):
            if self.before_wait is not None:
                self.before_wait()
            return super()._wait_bound(deadline)

    broker = k.new_broker()
    a = k.InMemoryAckSubscriber(broker, group="g")
    b = AckedBeforeItWaits(broker, group="g")
    a.subscribe("t")
    b.subscribe("t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    broker.shutdown()
    _, handle = a.try_receive_with_ack()
    b.before_wait = lambda: a.ack(handle)
    started = time.monotonic()
    with pytest.raises(k.BrokerShutdown):
        if how == "sync":
            b.receive_with_ack_sync(timeout=2)
        else:
            k.run(b.receive_with_ack(timeout=2))
    assert time.monotonic() - started < 1


def test_an_ack_group_on_threads_drains_and_ends_at_shutdown(k):
    # A producer thread, 4 acking members on threads, shutdown() after the last publish: every
    # member ends with BrokerShutdown once the group has settled, and the group got everything.
    for _ in range(3):
        broker = k.new_broker()
        members = [k.InMemoryAckSubscriber(broker, group="g") for _ in range(4)]
        for member in members:
            member.subscribe("t")
        pub = k.InMemoryPublisher(broker)

        def produce(broker, pub):
            for _ in range(3000):
                pub.publish_nowait("t", [b"x"])
            broker.shutdown()

        def work(member):
            got = 0
            while True:
                try:
                    _, handle = member.receive_with_ack_sync(timeout=10)
                except k.BrokerShutdown:
                    return got
                member.ack(handle)
                got += 1

        workers = [k.spawn(work, member) for member in members]
        k.spawn(produce, broker, pub).join(10)
        assert sum(worker.join(10) for worker in workers) == 3000


# -- a dead-letter topic past max_topics (item 4) -------------------------------------------------


def test_dead_letter_topics_are_created_outside_max_topics(k):
    broker = k.new_broker(max_topics=1, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    sub.nack_batch([h1, h2], requeue=False)
    assert broker.topic_info("dlq").queue_size == 2
    assert broker.stats().messages_dead_lettered() == 2
    with pytest.raises(k.MaxTopicsReached):  # the budget still holds for everything else
        pub.publish_nowait("other", [b"x"])


def test_a_deadline_past_max_deliveries_never_raises_from_a_receive(k):
    broker = k.new_broker(max_topics=1, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemoryAckSubscriber(
        broker, dead_letter_topic="dlq", ack_timeout=0.01, max_deliveries=1
    )
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2"])
    sub.try_receive_with_ack()
    k.core._advance_clock(1.0)
    msg, _ = sub.try_receive_with_ack()
    assert msg.payload == b"2"
    assert broker.stats().messages_dead_lettered() == 1
    assert sub.in_flight() == 1


def test_a_refused_dead_letter_is_dropped_and_counted_without_raising(k):
    broker = k.new_broker(enable_stats=True)
    broker.configure_topic("dlq", max_queue_size=1)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    sub.nack_batch([h1, h2], requeue=False)  # the second does not fit: dropped, not raised
    st = broker.stats()
    assert (st.messages_dead_lettered(), broker.topic_info("t").total_dropped) == (1, 1)


# -- capacity counts what is held (item 6) -----------------------------------------------------


def test_an_unsettled_message_does_not_pin_the_acked_ones_against_the_capacity(k):
    broker = k.new_broker(max_queue_size=3)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"m1", b"m2", b"m3"])
    _, h1 = sub.try_receive_with_ack()  # stays unsettled
    for _ in range(2):
        sub.ack(sub.try_receive_with_ack()[1])
    pub.publish_nowait("t", [b"m4", b"m5"])  # 1 in flight + 2 queued = the capacity
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"m6"])
    info = broker.topic_info("t")
    assert (info.queue_size, info.in_flight) == (2, 1)
    sub.ack(h1)
    pub.publish_nowait("t", [b"m6"])


def test_after_clear_topic_a_stale_handle_holds_no_room(k):
    broker = k.new_broker(max_queue_size=3)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"old"])
    _, old = sub.try_receive_with_ack()
    broker.clear_topic("t")
    for i in range(10):
        pub.publish_nowait("t", [b"new%d" % i])
        sub.ack(sub.try_receive_with_ack()[1])
    pub.publish_nowait("t", [b"a", b"b", b"c"])  # the whole capacity: the old slot is gone
    sub.ack(old)  # still a valid handle: consumed
    assert broker.topic_info("t").in_flight == 0


def test_a_blocked_publisher_is_woken_when_an_in_flight_message_is_acked(k):
    broker = k.new_broker(max_queue_size=2, overflow="block")
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    blocked = k.spawn_blocked(pub.publish_sync, "t", [b"3"], timeout=5)
    sub.ack(h2)  # not the oldest: no slot is released, but one message fewer is held
    blocked.join()
    sub.ack(h1)


# -- every message in exactly one term (item 7) ------------------------------------------------


def _terms(broker):
    st = broker.stats()
    return (
        st.messages_published(),
        st.messages_consumed(),
        st.messages_in_flight(),
        st.messages_dropped(),
        st.messages_expired(),
        broker.topic_info("t").queue_size,
    )


def _identity_holds(broker):
    published, *terms = _terms(broker)
    return published == sum(terms)


def test_accounting_identity_with_acks_nacks_drops_and_in_flight(k):
    broker = k.new_broker(enable_stats=True, default_message_ttl=60.0, cleanup_interval=3600)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", max_deliveries=1)
    pub.publish_nowait("t", [b"m1", b"m2", b"m3"])
    _, h1 = sub.try_receive_with_ack()
    assert _terms(broker) == (3, 0, 1, 0, 0, 2)  # in flight: neither consumed nor queued
    sub.ack(h1)
    _, h2 = sub.try_receive_with_ack()
    sub.nack(h2)  # its only delivery: dropped, counted once
    sub.try_receive_with_ack()
    assert _terms(broker) == (3, 1, 1, 1, 0, 0)
    assert _identity_holds(broker)


def test_accounting_identity_with_dead_letters_and_expired_redeliveries(k):
    broker = k.new_broker(enable_stats=True, default_message_ttl=10.5, cleanup_interval=3600)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    sub.nack(h1, requeue=False)  # dead-lettered: settled out of the topic, consumed
    info = broker.topic_info("t")
    assert (info.total_consumed, info.total_dead_lettered, info.in_flight) == (1, 1, 0)
    _, h2 = sub.try_receive_with_ack()
    k.core._advance_clock(11)
    sub.nack(h2)  # its redelivery is past the TTL: expired, counted once
    assert sub.try_receive_with_ack() is None
    info = broker.topic_info("t")
    assert (
        info.total_published,
        info.total_consumed,
        info.in_flight,
        info.total_dropped,
        info.total_expired,
        info.queue_size,
    ) == (2, 1, 0, 0, 1, 0)


# -- a deleted topic's in-flight messages (items 10 and 11) ----------------------------------------


def test_settling_a_deleted_topics_messages_reaches_the_broker_stats(k):
    broker = k.new_broker(enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    dlq = k.subscriber(broker, "dlq")
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq")
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    handles = [sub.try_receive_with_ack()[1] for _ in range(4)]
    broker.delete_topic("t")
    before = broker.stats()
    sub.nack(handles[0], requeue=False)  # rejected: dead-lettered
    sub.ack(handles[1])  # consumed
    sub.nack(handles[2])  # nothing to redeliver from: dropped
    assert [m.payload for m in dlq.try_receive_batch(10)] == [b"1"]
    after = broker.stats()
    assert after.messages_dead_lettered() - before.messages_dead_lettered() == 1
    # the ack, the letter, and the dead-letter reader's read of it
    assert after.messages_consumed() - before.messages_consumed() == 3
    assert after.messages_dropped() - before.messages_dropped() == 1
    with pytest.raises(k.AckError):
        sub.ack(handles[2])
    assert sub.in_flight() == 1  # the fourth is still the reader's to settle
    sub.ack(handles[3])
    assert sub.in_flight() == 0


def test_a_deleted_topics_handles_stay_valid_whatever_the_subscriber_does_next(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "b")
    pub.publish_nowait("b", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    _, h2 = sub.try_receive_with_ack()
    broker.delete_topic("b")
    with pytest.raises(k.NotSubscribed):  # a receive does not forget them
        sub.try_receive_with_ack()
    sub.subscribe("x.*")  # a subscription change does not either
    sub.ack(h1)
    sub.unsubscribe("x.*")
    sub.ack(h2)


@pytest.mark.parametrize("ack", [False, True], ids=["plain", "ack"])
@pytest.mark.parametrize("refresh", [False, True], ids=["as-is", "resubscribed"])
def test_round_robin_after_a_topic_is_deleted_is_the_same_on_both_engines(k, ack, refresh):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = (k.InMemoryAckSubscriber if ack else k.InMemorySubscriber)(broker)
    for topic in ("a", "b", "c"):
        sub.subscribe(topic)
        pub.publish_nowait(topic, [f"{topic}{i}".encode() for i in (1, 2, 3)])
    got = [sub.try_receive().payload for _ in range(2)]
    broker.delete_topic("b")
    if refresh:  # a subscription change drops the deleted topic from the rotation
        sub.subscribe("x.*")
    while (msg := sub.try_receive()) is not None:
        got.append(msg.payload)
    expected = (
        ["a1", "b1", "a2", "c1", "a3", "c2", "c3"]
        if refresh
        else ["a1", "b1", "c1", "a2", "c2", "c3", "a3"]
    )
    assert got == [e.encode() for e in expected]


def test_a_deleted_topics_message_waiting_for_redelivery_is_dropped_and_counted(k):
    broker = k.new_broker(enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t")
    sub.subscribe("u")
    pub.publish_nowait("t", [b"1"])
    _, h = sub.try_receive_with_ack()
    sub.nack(h)  # waits for redelivery
    broker.delete_topic("t")
    assert sub.try_receive_with_ack() is None
    assert broker.stats().messages_dropped() == 1


def test_an_async_group_member_drains_with_the_group(k):
    broker = k.new_broker()
    a, b = k.ack_group(broker)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    broker.shutdown()

    async def main():
        _, h = a.try_receive_with_ack()
        waiting = asyncio.create_task(b.receive_with_ack(timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        a.nack(h)  # redelivered to the waiting member
        msg, h2 = await waiting
        assert (msg.payload, h2.delivery_count) == (b"1", 2)
        waiting = asyncio.create_task(a.receive_with_ack(timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        b.ack(h2)  # nothing can come back: the other member's receive ends
        with pytest.raises(k.BrokerShutdown):
            await waiting

    k.run(main())


# -- the last acknowledging reader leaves with a message unsettled --------------------------------
# The log keeps its unsettled messages for the next reader, not the settled ones behind the oldest
# of them: those are neither delivered again nor counted twice (settled and queued).


def test_an_acked_message_is_not_delivered_again_after_the_last_reader_leaves(k):
    broker, pub, acker = k.ack_setup(ack_timeout=1e6)
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    _first, _ = acker.try_receive_with_ack()  # left unsettled
    _, second = acker.try_receive_with_ack()
    acker.ack(second)
    acker.unsubscribe("t")
    info = broker.topic_info("t")
    assert info.total_published == info.total_consumed + info.queue_size + info.in_flight
    after = k.ack_subscriber(broker, "t")
    got = []
    while (delivery := after.try_receive_with_ack()) is not None:
        got.append(delivery[0].payload)
        after.ack(delivery[1])
    assert got == [b"1", b"3"]


def _payloads_acked(sub):
    got = []
    while (delivery := sub.try_receive_with_ack()) is not None:
        got.append(delivery[0].payload)
        sub.ack(delivery[1])
    return got


def test_an_expired_message_is_not_queued_again_after_the_last_reader_leaves(k):
    broker = k.new_broker(enable_stats=True, default_message_ttl=10.5, cleanup_interval=3600)
    pub = k.InMemoryPublisher(broker)
    acker = k.ack_subscriber(broker, "t", ack_timeout=1e6)
    pub.publish_nowait("t", [b"1", b"2"])
    acker.try_receive_with_ack()  # b"1": left unsettled
    k.core._advance_clock(11)
    pub.publish_nowait("t", [b"3"])
    msg, h3 = acker.try_receive_with_ack()  # b"2" expired on the way
    assert msg.payload == b"3"
    acker.ack(h3)
    acker.unsubscribe("t")
    info = broker.topic_info("t")
    terms = (info.total_consumed, info.total_expired, info.queue_size, info.in_flight)
    assert terms == (1, 1, 1, 0)
    assert info.total_published == (
        info.total_consumed + info.total_expired + info.queue_size + info.in_flight
    )
    after = k.ack_subscriber(broker, "t", ack_timeout=1e6)
    assert _payloads_acked(after) == []  # b"1" is past its TTL too: it expires, once
    info = broker.topic_info("t")
    terms = (info.total_consumed, info.total_expired, info.queue_size, info.in_flight)
    assert terms == (1, 2, 0, 0)


def test_an_acked_message_is_not_delivered_again_after_the_last_groups_members_leave(k):
    broker = k.new_broker(enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    a, b = k.ack_group(broker, {"ack_timeout": 1e6}, {"ack_timeout": 1e6})
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    a.try_receive_with_ack()  # b"1": left unsettled, back for redelivery when ``a`` leaves
    _, h2 = b.try_receive_with_ack()
    _, h3 = b.try_receive_with_ack()
    b.ack(h3)
    a.unsubscribe("t")
    b.ack(h2)
    b.unsubscribe("t")  # the last member: the group keeps its place
    info = broker.topic_info("t")
    assert (info.total_consumed, info.queue_size, info.in_flight) == (2, 1, 1)
    broker.delete_group("t", "g")  # the topic's last reader goes
    info = broker.topic_info("t")
    assert (info.total_consumed, info.queue_size, info.in_flight) == (2, 2, 0)
    assert info.total_published == info.total_consumed + info.queue_size + info.in_flight
    after = k.ack_subscriber(broker, "t", ack_timeout=1e6)
    assert _payloads_acked(after) == [b"1", b"4"]
    assert broker.topic_info("t").total_consumed == 4
