"""Persistence: messages held for readers that are not there yet, and where new readers start."""

from __future__ import annotations


def payloads(messages):
    return [m.payload for m in messages]


def test_messages_without_subscribers_go_to_the_first_subscriber(k):
    broker, pub, sub = k.setup()
    pub.publish_nowait("orders", [b"1", b"2"])
    pub.publish_nowait("orders", [b"3"])
    assert broker.topic_info("orders").queue_size == 3
    sub.subscribe("orders")
    got = sub.try_receive_batch(10)
    assert payloads(got) == [b"1", b"2", b"3"]
    assert [m.sequence for m in got] == [1, 2, 3]
    assert broker.topic_info("orders").queue_size == 0


def test_second_subscriber_on_a_topic_with_readers_starts_at_the_end(k):
    broker, pub, first = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"early"])
    second = k.subscriber(broker, "t")
    pub.publish_nowait("t", [b"late"])
    assert payloads(first.try_receive_batch(10)) == [b"early", b"late"]
    got = second.try_receive_batch(10)
    assert payloads(got) == [b"late"]
    assert got[0].sequence == 2


def test_only_the_first_subscriber_inherits_held_messages(k):
    broker, pub, first = k.setup()
    pub.publish_nowait("t", [b"held"])
    first.subscribe("t")
    second = k.subscriber(broker, "t")
    assert payloads(first.try_receive_batch(10)) == [b"held"]
    assert second.try_receive_batch(10) == []


def test_last_subscriber_leaving_keeps_its_unread_messages(k):
    broker, pub, first = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert first.try_receive().payload == b"1"
    first.unsubscribe("t")
    assert broker.topic_info("t").queue_size == 2
    pub.publish_nowait("t", [b"4"])
    nxt = k.subscriber(broker, "t")
    got = nxt.try_receive_batch(10)
    assert payloads(got) == [b"2", b"3", b"4"]
    assert [m.sequence for m in got] == [2, 3, 4]


def test_last_subscriber_closing_keeps_its_unread_messages(k):
    broker, pub, first = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    first.close()
    nxt = k.subscriber(broker, "t")
    assert payloads(nxt.try_receive_batch(10)) == [b"1", b"2"]


def test_slowest_leaving_reader_does_not_pass_its_backlog_to_others(k):
    broker, pub, fast = k.setup()
    slow = k.InMemorySubscriber(broker)
    fast.subscribe("t")
    slow.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert len(fast.try_receive_batch(10)) == 3
    assert broker.topic_info("t").queue_size == 3
    slow.unsubscribe("t")
    # The remaining reader has read everything: nothing is held for anyone.
    assert broker.topic_info("t").queue_size == 0
    assert fast.try_receive() is None


def test_persistence_off_drops_messages_without_a_reader(k):
    broker, pub, sub = k.setup(enable_persistence=False, enable_stats=True)
    pub.publish_nowait("t", [b"1", b"2"])
    info = broker.topic_info("t")
    assert info.queue_size == 0
    assert info.total_dropped == 2
    assert info.total_published == 0
    assert info.next_sequence == 1  # no sequence number was used
    assert broker.stats().messages_dropped() == 2
    assert broker.stats().messages_published() == 0
    sub.subscribe("t")
    assert sub.try_receive() is None
    pub.publish_nowait("t", [b"3"])
    got = sub.try_receive()
    assert (got.payload, got.sequence) == (b"3", 1)


def test_persistence_off_drops_the_last_reader_unread_messages(k):
    broker, pub, first = k.setup(enable_persistence=False, enable_stats=True, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    first.try_receive()
    first.unsubscribe("t")
    info = broker.topic_info("t")
    assert info.queue_size == 0
    assert info.total_dropped == 2
    assert broker.stats().messages_dropped() == 2
    nxt = k.subscriber(broker, "t")
    assert nxt.try_receive() is None
    pub.publish_nowait("t", [b"4"])
    assert nxt.try_receive().sequence == 4


def test_persistence_off_delivers_normally_with_a_reader(k):
    broker, pub, sub = k.setup(enable_persistence=False, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    assert payloads(sub.try_receive_batch(10)) == [b"1", b"2"]
    assert broker.topic_info("t").total_dropped == 0


def test_accounting_invariant_per_reader(k):
    """published = consumed + dropped + expired + still queued, seen from one reader."""
    broker, pub, sub = k.setup(enable_persistence=False, enable_stats=True)
    pub.publish_nowait("t", [b"lost"])  # dropped: no reader
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    sub.try_receive_batch(2)
    stats = broker.stats()
    offered = 5
    assert (
        stats.messages_consumed()
        + stats.messages_dropped()
        + stats.messages_expired()
        + broker.topic_info("t").queue_size
    ) == offered
    assert stats.messages_published() == 4
