"""Publishing and receiving from threads: delivered messages, topics, fan-out, subscriptions."""

from __future__ import annotations

import inspect
import time
import uuid
from datetime import timedelta

import pytest

# -- delivered messages -------------------------------------------------------------------------


def test_delivered_message_carries_topic_sequence_and_stamps(k):
    _, pub, sub = k.setup(subscribe="orders")
    sent = k.Message(b"Order #1234", {"customer": "Alice"})
    before = time.time() * 1000
    pub.publish_nowait("orders", [sent])
    got = sub.receive_sync(timeout=1)
    assert type(got) is k.Message
    assert got.topic == "orders"
    assert got.sequence == 1
    assert got.payload == b"Order #1234"
    assert got.uuid == sent.uuid
    assert got.metadata["customer"] == "Alice"
    assert got.metadata["_sequence"] == "1"
    stamp = int(got.metadata["_enqueued_at"])
    assert abs(stamp - before) < 5_000
    assert set(got.metadata) == {"customer", "_sequence", "_enqueued_at"}


def test_delivered_metadata_is_read_only(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [k.Message(b"x", {"a": "1"})])
    got = sub.try_receive()
    with pytest.raises(TypeError):
        got.metadata["a"] = "2"
    with pytest.raises(TypeError):
        got.metadata["_sequence"] = "99"
    assert got.metadata["_sequence"] == "1"


def test_sequences_are_per_topic_start_at_one_and_gapless(k):
    _, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    pub.publish_nowait("a", [b"a1", b"a2"])
    pub.publish_nowait("b", [b"b1"])
    pub.publish_nowait("a", [b"a3"])
    pub.publish_nowait("b", [b"b2", b"b3"])
    got = sub.try_receive_batch(100)
    got += sub.try_receive_batch(100)
    got += sub.try_receive_batch(100)
    by_topic = {"a": [], "b": []}
    for m in got:
        by_topic[m.topic].append((m.sequence, m.payload))
    assert by_topic["a"] == [(1, b"a1"), (2, b"a2"), (3, b"a3")]
    assert by_topic["b"] == [(1, b"b1"), (2, b"b2"), (3, b"b3")]


def test_sequence_follows_publish_order(k):
    _, pub, sub = k.setup(subscribe="t")
    for i in range(50):
        pub.publish_nowait("t", [str(i).encode()])
    got = sub.try_receive_batch(100)
    assert [m.sequence for m in got] == list(range(1, 51))
    assert [m.payload for m in got] == [str(i).encode() for i in range(50)]
    assert [m.metadata["_sequence"] for m in got] == [str(i) for i in range(1, 51)]


def test_no_sequence_metadata_without_maintain_order(k):
    _, pub, sub = k.setup(maintain_order=False, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    got = sub.try_receive_batch(10)
    assert [m.sequence for m in got] == [1, 2]  # the attribute is always there
    for m in got:
        assert "_sequence" not in m.metadata
        assert "_enqueued_at" in m.metadata


def test_publisher_message_is_not_mutated(k):
    _, pub, sub = k.setup(subscribe="t")
    sent = k.Message(b"x", {"a": "1"})
    pub.publish_nowait("t", [sent])
    got = sub.try_receive()
    assert got is not sent
    assert dict(sent.metadata) == {"a": "1"}
    assert "_sequence" not in sent.metadata
    assert sent.topic is None
    assert sent.sequence is None


def test_same_message_published_twice_gets_two_sequences(k):
    _, pub, sub = k.setup(subscribe="t")
    sent = k.Message(b"again")
    pub.publish_nowait("t", [sent])
    pub.publish_nowait("t", [sent])
    first, second = sub.try_receive_batch(10)
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.uuid == second.uuid == sent.uuid
    assert sent.sequence is None


def test_two_subscribers_receive_the_same_content(k):
    broker, pub, sub1 = k.setup()
    sub2 = k.InMemorySubscriber(broker)
    sub1.subscribe("t")
    sub2.subscribe("t")
    sent = k.Message(b"shared", {"who": "both"})
    pub.publish_nowait("t", [sent])
    a = sub1.receive_sync(timeout=1)
    b = sub2.receive_sync(timeout=1)
    for got in (a, b):
        assert got.payload == b"shared"
        assert got.uuid == sent.uuid
        assert got.sequence == 1
        assert got.metadata["who"] == "both"
    assert dict(a.metadata) == dict(b.metadata)


def test_raw_payloads_and_messages_mix_in_one_batch(k):
    _, pub, sub = k.setup(subscribe="t")
    msg = k.Message(b"object", {"kind": "message"})
    pub.publish_nowait("t", [b"raw", msg, bytearray(b"array"), memoryview(b"view")])
    got = sub.try_receive_batch(10)
    assert [m.payload for m in got] == [b"raw", b"object", b"array", b"view"]
    assert [m.sequence for m in got] == [1, 2, 3, 4]
    assert all(type(m.payload) is bytes for m in got)
    assert got[1].uuid == msg.uuid
    assert got[1].metadata["kind"] == "message"
    assert len({m.uuid for m in got}) == 4
    for m in (got[0], got[2], got[3]):
        assert uuid.UUID(m.uuid).version == 4
        assert set(m.metadata) == {"_sequence", "_enqueued_at"}


def test_publish_accepts_a_tuple(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", (b"1", b"2"))
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"1", b"2"]


def test_bytearray_payload_in_a_batch_is_copied(k):
    _, pub, sub = k.setup(subscribe="t")
    data = bytearray(b"before")
    pub.publish_nowait("t", [data])
    data[:] = b"after!"
    assert sub.try_receive().payload == b"before"


def test_empty_batch_publishes_nothing(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [])
    assert sub.try_receive() is None
    pub.publish_nowait("t", [b"x"])
    assert sub.try_receive().sequence == 1


def test_publish_sync(k):
    _, pub, sub = k.setup(subscribe="t")
    assert pub.publish_sync("t", [b"1"]) is None
    pub.publish_sync("t", [b"2"], timeout=1)
    pub.publish_sync("t", [b"3"], timeout=timedelta(seconds=1))
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"1", b"2", b"3"]


# -- subscriptions ------------------------------------------------------------------------------


def test_one_subscriber_several_topics_keeps_per_topic_order(k):
    _, pub, sub = k.setup()
    topics = ["orders", "payments", "refunds"]
    for t in topics:
        sub.subscribe(t)
    assert sub.subscribed_topics() == topics
    for i in range(20):
        for t in topics:
            pub.publish_nowait(t, [f"{t}-{i}".encode()])
    seen = {t: [] for t in topics}
    for _ in range(60):
        m = sub.receive_sync(timeout=1)
        seen[m.topic].append(m.payload)
    for t in topics:
        assert seen[t] == [f"{t}-{i}".encode() for i in range(20)]
    assert sub.try_receive() is None


def test_fan_out_to_many_subscribers(k):
    broker, pub, _ = k.setup()
    subs = [k.InMemorySubscriber(broker) for _ in range(8)]
    for s in subs:
        s.subscribe("fan")
    pub.publish_nowait("fan", [str(i).encode() for i in range(25)])
    for s in subs:
        got = s.try_receive_batch(100)
        assert [m.payload for m in got] == [str(i).encode() for i in range(25)]
        assert [m.sequence for m in got] == list(range(1, 26))
    assert broker.topic_info("fan").queue_size == 0
    assert broker.topic_info("fan").total_consumed == 8 * 25


def test_subscribe_is_immediate_and_not_a_coroutine(k):
    _, pub, sub = k.setup()
    result = sub.subscribe("t")
    assert not inspect.iscoroutine(result)
    assert inspect.isawaitable(result)
    assert sub.is_subscribed()
    pub.publish_nowait("t", [b"1"])
    assert sub.try_receive().payload == b"1"


def test_subscribing_twice_is_a_no_op(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    sub.subscribe("t")
    assert broker.topic_info("t").subscriber_count == 1
    assert sub.subscribed_topics() == ["t"]
    # The second subscribe neither re-delivers nor skips anything.
    assert sub.try_receive().payload == b"1"
    pub.publish_nowait("t", [b"2"])
    assert sub.try_receive().payload == b"2"
    assert sub.try_receive() is None


def test_subscription_queries(k):
    _, _, sub = k.setup()
    assert sub.is_subscribed() is False
    assert sub.subscribed_topic() is None
    assert sub.subscribed_topics() == []
    sub.subscribe("first")
    sub.subscribe("second")
    assert sub.is_subscribed() is True
    assert sub.subscribed_topic() == "first"
    assert sub.subscribed_topics() == ["first", "second"]
    topics = sub.subscribed_topics()
    topics.append("third")
    assert sub.subscribed_topics() == ["first", "second"]


def test_unsubscribe_one_topic(k):
    broker, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    result = sub.unsubscribe("a")
    assert not inspect.iscoroutine(result)
    assert sub.subscribed_topics() == ["b"]
    assert broker.topic_info("a").subscriber_count == 0
    pub.publish_nowait("a", [b"not for me"])
    pub.publish_nowait("b", [b"for me"])
    assert sub.try_receive().payload == b"for me"
    assert sub.try_receive() is None


def test_unsubscribe_unknown_topic_raises_not_subscribed(k):
    _, _, sub = k.setup(subscribe="a")
    with pytest.raises(k.NotSubscribed):
        sub.unsubscribe("b")
    assert sub.subscribed_topics() == ["a"]


def test_unsubscribe_all(k):
    broker, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    sub.unsubscribe()
    assert sub.is_subscribed() is False
    assert sub.subscribed_topics() == []
    assert broker.health_check().total_subscribers == 0
    with pytest.raises(k.NotSubscribed):
        sub.try_receive()
    # Not closed: it can subscribe again.
    sub.subscribe("a")
    pub.publish_nowait("a", [b"back"])
    assert sub.try_receive().payload == b"back"


def test_close_ends_every_subscription(k):
    broker, _, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    assert sub.is_connected() is True
    result = sub.close()
    assert not inspect.iscoroutine(result)
    assert sub.is_subscribed() is False
    assert sub.is_connected() is False
    assert broker.health_check().total_subscribers == 0
    with pytest.raises(k.NotSubscribed):
        sub.receive_sync(timeout=0.05)
    with pytest.raises(k.NotSubscribed):
        sub.subscribe("c")
    sub.close()  # idempotent


def test_close_ends_sync_iteration(k):
    _, pub, sub = k.setup(subscribe="a")
    pub.publish_nowait("a", [b"1"])
    sub.close()
    assert list(sub) == []


def test_receive_on_a_never_subscribed_subscriber_raises_not_subscribed(k):
    _, _, sub = k.setup()
    with pytest.raises(k.NotSubscribed):
        sub.receive_sync()
    with pytest.raises(k.NotSubscribed):
        sub.receive_sync(timeout=0.05)
    with pytest.raises(k.NotSubscribed):
        sub.try_receive()
    with pytest.raises(k.NotSubscribed):
        sub.try_receive_batch(5)
    with pytest.raises(k.NotSubscribed):
        sub.receive_batch_sync(5, timeout=0.05)


def test_not_subscribed_is_an_in_memory_error(k):
    _, _, sub = k.setup()
    with pytest.raises(k.InMemoryError):
        sub.try_receive()


# -- receiving ----------------------------------------------------------------------------------


def test_try_receive_returns_none_when_empty(k):
    _, _, sub = k.setup(subscribe="t")
    assert sub.try_receive() is None
    assert sub.try_receive_batch(5) == []


@pytest.mark.parametrize("timeout", [0, 0.05, timedelta(milliseconds=50)], ids=repr)
def test_receive_sync_timeout_raises_builtin_timeout_error(k, timeout):
    _, _, sub = k.setup(subscribe="t")
    with pytest.raises(TimeoutError) as info:
        sub.receive_sync(timeout=timeout)
    assert type(info.value) is TimeoutError
    with pytest.raises(TimeoutError):
        sub.receive_batch_sync(3, timeout=timeout)


def test_receive_sync_timeout_loses_no_message(k):
    _, pub, sub = k.setup(subscribe="t")
    with pytest.raises(TimeoutError):
        sub.receive_sync(timeout=0.02)
    pub.publish_nowait("t", [b"after"])
    got = sub.receive_sync(timeout=1)
    assert (got.payload, got.sequence) == (b"after", 1)
    assert sub.is_subscribed()


def test_receive_sync_woken_by_a_publish_from_another_thread(k):
    _, pub, sub = k.setup(subscribe="t")
    worker = k.spawn(sub.receive_sync, 5)
    worker.started.wait(1)
    time.sleep(0.05)
    publisher = k.spawn(pub.publish_sync, "t", [b"wake up"])
    publisher.join(2)
    got = worker.join(3)
    assert got.payload == b"wake up"


def test_receive_sync_woken_by_a_publish_on_any_of_its_topics(k):
    _, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    worker = k.spawn(sub.receive_sync, 5)
    worker.started.wait(1)
    time.sleep(0.05)
    pub.publish_nowait("b", [b"on b"])
    assert worker.join(3).topic == "b"


def test_try_receive_batch_returns_up_to_max_without_waiting(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [str(i).encode() for i in range(7)])
    first = sub.try_receive_batch(5)
    assert [m.sequence for m in first] == [1, 2, 3, 4, 5]
    second = sub.try_receive_batch(5)
    assert [m.sequence for m in second] == [6, 7]
    assert sub.try_receive_batch(5) == []


def test_receive_batch_sync_returns_what_is_ready(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    # A later publish must not be folded in: the batch returns once something is ready.
    late = k.spawn(lambda: (time.sleep(0.3), pub.publish_sync("t", [b"late"])))
    got = sub.receive_batch_sync(10, timeout=2)
    assert [m.payload for m in got] == [b"1", b"2", b"3"]
    late.join(3)
    assert sub.receive_sync(timeout=1).payload == b"late"


def test_receive_batch_sync_waits_for_the_first_message(k):
    _, pub, sub = k.setup(subscribe="t")
    worker = k.spawn(sub.receive_batch_sync, 10, 5)
    worker.started.wait(1)
    time.sleep(0.05)
    assert worker.is_alive()
    pub.publish_nowait("t", [b"a", b"b"])
    got = worker.join(3)
    assert 1 <= len(got) <= 2
    rest = sub.try_receive_batch(10)
    assert [m.payload for m in got + rest] == [b"a", b"b"]


def test_receive_batch_sync_respects_max(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [str(i).encode() for i in range(10)])
    assert len(sub.receive_batch_sync(4, timeout=1)) == 4
    assert len(sub.receive_batch_sync(4, timeout=1)) == 4
    assert len(sub.receive_batch_sync(4, timeout=1)) == 2


# -- iteration ----------------------------------------------------------------------------------


def test_sync_iteration_ends_when_the_broker_shuts_down(k):
    broker, pub, sub = k.setup(subscribe="t")

    def consume():
        return [m.payload for m in sub]

    worker = k.spawn(consume)
    pub.publish_nowait("t", [b"1", b"2"])
    pub.publish_nowait("t", [b"3"])
    time.sleep(0.05)
    broker.shutdown()
    assert worker.join(3) == [b"1", b"2", b"3"]


def test_sync_iteration_drains_before_ending(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.shutdown()
    assert [m.payload for m in sub] == [b"1", b"2", b"3"]


# -- publisher ----------------------------------------------------------------------------------


def test_publisher_is_connected_until_shutdown(k):
    broker, pub, _ = k.setup()
    assert pub.is_connected() is True
    broker.shutdown()
    assert pub.is_connected() is False


def test_publisher_and_subscriber_keep_their_broker(k):
    broker, pub, sub = k.setup()
    assert pub.broker is broker
    assert sub.broker is broker


def test_many_publishers_share_a_topic(k):
    broker, _, sub = k.setup(subscribe="t")
    pubs = [k.InMemoryPublisher(broker) for _ in range(3)]
    for i, p in enumerate(pubs):
        p.publish_nowait("t", [str(i).encode()])
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"0", b"1", b"2"]
