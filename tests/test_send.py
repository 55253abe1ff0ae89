"""The one-message calls: ``send_nowait``, ``send_sync`` and ``send`` (the batch calls'
rules, for a payload and optional metadata without a list or a Message)."""

from __future__ import annotations

import asyncio
import gc
import pickle
import uuid
import warnings

import pytest

from kincir.codecs import JsonCodec


def payloads(msgs):
    return [m.payload for m in msgs]


def test_each_form_delivers_the_object_itself_in_order(k):
    _broker, pub, sub = k.setup(subscribe="t")
    order = {"id": 1}
    pub.send_nowait("t", order)
    pub.send_sync("t", b"two")
    k.run(pub.send("t", 3))
    pub.publish_nowait("t", [b"four"])
    got = k.drain(sub)
    assert payloads(got) == [order, b"two", 3, b"four"]
    assert got[0].payload is order  # by reference: nothing copied or serialized
    assert [m.sequence for m in got] == [1, 2, 3, 4]
    assert len({m.uuid for m in got}) == 4
    assert pub.stats() == k.PublisherStats(published=4, refused=0)


def test_metadata_is_checked_copied_and_stamped(k):
    _broker, pub, sub = k.setup(subscribe="t")
    meta = {"customer": "Alice"}
    pub.send_nowait("t", b"x", metadata=meta)
    meta["customer"] = "Bob"  # the message kept a copy
    pub.send_sync("t", b"y", metadata={}, timeout=1)
    first, second = k.drain(sub)
    assert first.metadata["customer"] == "Alice"
    assert first.metadata["_sequence"] == "1" and "_enqueued_at" in first.metadata
    assert {key for key in second.metadata if not key.startswith("_")} == set()


@pytest.mark.parametrize("bad", [{"n": 1}, {1: "v"}, [("k", "v")], "k=v"])
def test_bad_metadata_raises_type_error_and_publishes_nothing(k, bad):
    broker, pub, sub = k.setup(subscribe="t")
    with pytest.raises(TypeError, match="metadata"):
        pub.send_nowait("t", b"x", metadata=bad)
    with pytest.raises(TypeError, match="metadata"):
        pub.send_sync("t", b"x", metadata=bad)
    with pytest.raises(TypeError, match="metadata"):
        k.run(pub.send("t", b"x", metadata=bad))
    assert sub.try_receive() is None
    assert pub.stats() == k.PublisherStats(published=0, refused=0)
    assert broker.health_check().is_healthy


def test_metadata_is_keyword_only(k):
    _broker, pub, _sub = k.setup(subscribe="t")
    with pytest.raises(TypeError):
        pub.send_nowait("t", b"x", {"k": "v"})


def test_a_mutable_buffer_is_snapshotted(k):
    _broker, pub, sub = k.setup(subscribe="t")
    buf = bytearray(b"abc")
    pub.send_nowait("t", buf)
    buf[0] = ord("z")
    assert sub.try_receive().payload == b"abc"


def test_bad_topic_names_raise_and_create_nothing(k):
    broker, pub, _sub = k.setup()
    with pytest.raises(k.InvalidTopicName):
        pub.send_nowait("a..b", b"x")
    with pytest.raises(TypeError):
        pub.send_sync(7, b"x")
    assert broker.list_topics() == []


def test_the_first_send_creates_the_topic_and_persistence_holds_it(k):
    broker, pub, _sub = k.setup()
    pub.send_nowait("t", b"kept")
    assert broker.list_topics() == ["t"]
    assert k.subscriber(broker, "t").try_receive().payload == b"kept"


def test_error_policy_refuses_when_full(k):
    _broker, pub, sub = k.setup(max_queue_size=1, overflow="error", subscribe="t")
    pub.send_nowait("t", b"1")
    with pytest.raises(k.QueueFull):
        pub.send_nowait("t", b"2")
    with pytest.raises(k.QueueFull):
        pub.send_sync("t", b"2")
    assert payloads(k.drain(sub)) == [b"1"]
    assert pub.stats() == k.PublisherStats(published=1, refused=2)


def test_block_policy_send_sync_waits_for_room(k):
    _broker, pub, sub = k.setup(max_queue_size=1, overflow="block", subscribe="t")
    pub.send_nowait("t", b"1")
    with pytest.raises(k.QueueFull):
        pub.send_nowait("t", b"x")
    with pytest.raises(k.QueueFull):
        pub.send_sync("t", b"x", timeout=0.05)
    waiting = k.spawn_blocked(pub.send_sync, "t", b"2", metadata={"m": "v"})
    assert sub.receive_sync(timeout=5).payload == b"1"
    waiting.join()
    second = sub.receive_sync(timeout=5)
    assert second.payload == b"2" and second.metadata["m"] == "v"
    assert pub.stats() == k.PublisherStats(published=2, refused=2)


def test_block_policy_send_waits_then_times_out(k):
    _broker, pub, sub = k.setup(max_queue_size=1, overflow="block", subscribe="t")

    async def main():
        await pub.send("t", b"1")
        with pytest.raises(k.QueueFull):
            await pub.send("t", b"x", timeout=0.05)
        waiting = asyncio.ensure_future(pub.send("t", b"2", metadata={"m": "v"}))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert (await sub.receive(timeout=5)).payload == b"1"
        await asyncio.wait_for(waiting, 5)
        return await sub.receive(timeout=5)

    second = k.run(main())
    assert second.payload == b"2" and second.metadata["m"] == "v"
    assert pub.stats() == k.PublisherStats(published=2, refused=1)


def test_closed_topics_and_shutdown_refuse_sends(k):
    broker, pub, _sub = k.setup(subscribe="t")
    broker.close_topic("t")
    with pytest.raises(k.TopicClosed):
        pub.send_nowait("t", b"x")
    with pytest.raises(k.TopicClosed):
        k.run(pub.send("t", b"x"))
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        pub.send_nowait("u", b"x")
    with pytest.raises(k.BrokerShutdown):
        pub.send_sync("u", b"x", metadata={"k": "v"})
    assert pub.stats().refused == 4


def test_a_forgotten_await_warns_with_the_call_name(k):
    _broker, pub, sub = k.setup(subscribe="t")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pub.send("t", b"never")
        gc.collect()
    assert any("send" in str(w.message) and "never awaited" in str(w.message) for w in caught)
    assert sub.try_receive() is None


def test_groups_ack_readers_and_fan_out_see_sent_messages(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    plain = k.subscriber(broker, "t")
    members = k.members(broker, "t", n=2)
    acker = k.ack_subscriber(broker, "t")
    for i in range(4):
        pub.send_nowait("t", i)
    assert payloads(k.drain(plain)) == [0, 1, 2, 3]
    assert sorted(payloads(k.drain(members[0]) + k.drain(members[1]))) == [0, 1, 2, 3]
    msg, handle = acker.try_receive_with_ack()
    assert msg.payload == 0
    acker.ack(handle)


def test_wire_fidelity_runs_sends_through_the_codec(k):
    # EncodeError (a TypeError) is the engine copy's own class: matched by its words
    broker = k.new_broker(codec=JsonCodec())
    pub = k.InMemoryPublisher(broker)
    sub = k.subscriber(broker, "t")
    pub.send_nowait("t", (1, 2), metadata={"m": "v"})
    pub.send_sync("t", {"a": (3,)})
    k.run(pub.send("t", [4]))
    got = k.drain(sub)
    assert payloads(got) == [[1, 2], {"a": [3]}, [4]]
    assert got[0].metadata["m"] == "v"
    with pytest.raises(TypeError, match="cannot encode"):
        pub.send_nowait("t", object())
    with pytest.raises(TypeError, match="cannot encode"):
        k.run(pub.send("t", object()))


def test_a_message_sent_as_a_payload_keeps_one_uuid_wherever_it_goes(k):
    # the engine draws such a message's uuid when it is first read: every reader, copy,
    # pickle, redelivery, dead letter and republished message must still see the same one
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    first, second = k.subscriber(broker, "t"), k.subscriber(broker, "t")
    pub.send_nowait("t", b"a")
    pub.publish_nowait("t", [b"b", b"c"])  # raw payloads: built in the engine too
    got_first, got_second = k.drain(first), k.drain(second)
    ids = [m.uuid for m in got_second]  # the second reader asks first
    assert [m.uuid for m in got_first] == ids
    assert len(set(ids)) == 3
    assert all(uuid.UUID(u).version == 4 and str(uuid.UUID(u)) == u for u in ids)
    msg = got_first[0]
    with k.activated():
        assert pickle.loads(pickle.dumps(msg)).uuid == msg.uuid
    assert msg.with_payload(b"z").uuid == msg.with_metadata("k", "v").uuid == msg.uuid

    # republished before anyone read its uuid: the copy delivered from "u" keeps it
    relay = k.subscriber(broker, "u")
    pub.send_nowait("t", b"d")
    fresh = first.try_receive()
    pub.publish_nowait("u", [fresh])
    assert relay.try_receive().uuid == fresh.uuid == second.try_receive().uuid

    # redelivered and dead-lettered: the record's message keeps the uuid drawn before
    broker, pub, acker = k.ack_setup(max_deliveries=2, dead_letter_topic="t.dlq")
    dlq = k.subscriber(broker, "t.dlq")
    pub.send_nowait("t", b"poison")
    msg, handle = acker.try_receive_with_ack()
    acker.nack(handle)
    again, handle = acker.try_receive_with_ack()
    assert again.uuid == msg.uuid
    acker.nack(handle)
    assert dlq.try_receive().uuid == msg.uuid
