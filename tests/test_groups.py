"""Consumer groups: members share one durable cursor; groups and plain readers each see all."""

from __future__ import annotations

import threading

import pytest


def test_members_share_the_messages_each_goes_to_exactly_one(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    a, b = k.members(broker, "jobs", group="workers")
    pub.publish_nowait("jobs", [bytes([i]) for i in range(10)])
    got_a = [a.try_receive() for _ in range(3)]
    got_b = k.drain(b)
    assert [m.sequence for m in got_a] == [1, 2, 3]
    assert [m.sequence for m in got_b] == list(range(4, 11))
    assert a.try_receive() is None
    assert broker.topic_info("jobs").queue_size == 0
    assert broker.topic_info("jobs").subscriber_count == 2


def test_other_groups_and_plain_subscribers_each_see_every_message(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    g1 = [k.InMemorySubscriber(broker, group="g1") for _ in range(2)]
    g2 = k.InMemorySubscriber(broker, group="g2")
    plain = k.InMemorySubscriber(broker)
    for sub in (*g1, g2, plain):
        sub.subscribe("t")
    pub.publish_nowait("t", [b"a", b"b", b"c", b"d"])
    seen_g1 = [g1[0].try_receive().payload for _ in range(2)]
    seen_g1 += [m.payload for m in k.drain(g1[1])]
    assert sorted(seen_g1) == [b"a", b"b", b"c", b"d"]
    assert [m.payload for m in k.drain(g2)] == [b"a", b"b", b"c", b"d"]
    assert [m.payload for m in k.drain(plain)] == [b"a", b"b", b"c", b"d"]
    assert sorted(broker.list_groups("t")) == ["g1", "g2"]


def test_a_group_without_members_holds_its_messages_until_deleted(k):
    broker = k.new_broker(max_queue_size=3, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    plain = k.subscriber(broker, "t")
    member = k.subscriber(broker, "t", group="g")
    member.close()
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert len(k.drain(plain)) == 3
    # the plain reader read everything, the memberless group still holds it: capacity counts it
    assert broker.topic_info("t").queue_size == 3
    assert broker.topic_info("t").subscriber_count == 1
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"4"])
    late = k.subscriber(broker, "t", group="g")
    assert [m.payload for m in k.drain(late)] == [b"1", b"2", b"3"]
    late.close()
    pub.publish_nowait("t", [b"5"])
    assert [m.payload for m in k.drain(plain)] == [b"5"]
    assert broker.topic_info("t").queue_size == 1
    broker.delete_group("t", "g")
    assert broker.topic_info("t").queue_size == 0
    assert broker.list_groups("t") == []
    pub.publish_nowait("t", [b"6", b"7", b"8"])  # room again


def test_delete_group_ends_the_members_subscription(k):
    broker = k.new_broker()
    member = k.subscriber(broker, "t", group="g")
    broker.delete_group("t", "g")
    with pytest.raises(k.NotSubscribed):
        member.try_receive()
    # subscribing again makes a new group
    member.unsubscribe()
    member.subscribe("t")
    assert broker.list_groups("t") == ["g"]


def test_delete_group_errors(k):
    broker = k.new_broker()
    with pytest.raises(k.TopicNotFound):
        broker.delete_group("nope", "g")
    k.InMemorySubscriber(broker).subscribe("t")
    with pytest.raises(k.GroupNotFound) as info:
        broker.delete_group("t", "g")
    assert (info.value.topic, info.value.group) == ("t", "g")
    assert isinstance(info.value, LookupError)
    with pytest.raises(TypeError):
        broker.delete_group("t", 3)
    with pytest.raises(k.TopicNotFound):
        broker.list_groups("nope")
    assert broker.health_check().is_healthy


@pytest.mark.parametrize("bad", ["", " ", "a b", "x\n", "a" * 256])
def test_invalid_group_names_are_refused(k, bad):
    broker = k.new_broker()
    with pytest.raises(ValueError):
        k.InMemorySubscriber(broker, group=bad)
    with pytest.raises(TypeError):
        k.InMemorySubscriber(broker, group=3)


def test_a_new_group_on_a_topic_with_readers_starts_at_the_end(k):
    broker = k.new_broker()
    _reader = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"old"])
    g = k.subscriber(broker, "t", group="g")
    assert g.try_receive() is None
    k.InMemoryPublisher(broker).publish_nowait("t", [b"new"])
    assert g.try_receive().payload == b"new"


def test_group_members_count_against_max_subscribers(k):
    broker = k.new_broker(max_subscribers_per_topic=2)
    a = k.InMemorySubscriber(broker, group="g")
    b = k.InMemorySubscriber(broker, group="g")
    c = k.InMemorySubscriber(broker, group="g")
    a.subscribe("t")
    b.subscribe("t")
    with pytest.raises(k.MaxSubscribersReached):
        c.subscribe("t")
    assert broker.topic_info("t").subscriber_count == 2
    a.close()
    c.subscribe("t")
    assert broker.topic_info("t").subscriber_count == 2


def test_consume_pull_group_is_a_group_of_its_own(k):
    broker = k.new_broker()
    g = k.subscriber(broker, "t", group="g")
    assert broker.consume("t") is None  # the pull group is made on first use, at the end
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1", b"2"])
    assert [broker.consume("t").payload, broker.consume("t").payload] == [b"1", b"2"]
    assert [m.payload for m in k.drain(g)] == [b"1", b"2"]


def test_plain_subscriber_cannot_join_an_ack_group_by_name(k):
    broker = k.new_broker()
    _acker = k.ack_subscriber(broker, "t", group="g")
    plain = k.InMemorySubscriber(broker, group="g")
    with pytest.raises(k.InvalidConfig) as info:
        plain.subscribe("t")
    assert info.value.field == "group"
    assert broker.topic_info("t").subscriber_count == 1


def test_delete_topic_removes_its_groups(k):
    broker = k.new_broker()
    g = k.subscriber(broker, "t", group="g")
    broker.delete_topic("t")
    g.unsubscribe()
    g.subscribe("t")
    assert broker.list_groups("t") == ["g"]


def test_shutdown_drain_waits_for_members_not_for_memberless_groups(k):
    broker = k.new_broker()
    durable = k.subscriber(broker, "t", group="durable")
    durable.close()
    live = k.subscriber(broker, "t", group="live")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1"])
    assert broker.shutdown() is False
    assert live.try_receive().payload == b"1"
    assert broker.shutdown(timeout=1.0) is True


def test_two_threads_compete_for_the_last_message_exactly_one_wins(k):
    for _ in range(50):
        broker = k.new_broker()
        members = k.members(broker, "t")
        k.InMemoryPublisher(broker).publish_nowait("t", [b"last"])
        barrier = threading.Barrier(2)

        def grab(sub, barrier=barrier):
            barrier.wait()
            return sub.try_receive()

        workers = [k.spawn(grab, m) for m in members]
        got = [w.join() for w in workers]
        assert sorted(x is None for x in got) == [False, True]
        broker.force_shutdown()


def test_worker_pool_threads_share_a_stream_without_loss_or_duplicates(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    n = 4000
    members = k.members(broker, "work", 4, group="pool")

    def work(sub):
        seen = []
        for msg in sub:
            seen.append(msg.sequence)
        return seen

    workers = [k.spawn(work, m) for m in members]
    for i in range(0, n, 100):
        pub.publish_sync("work", [i.to_bytes(4, "big")] * 100)
    assert broker.shutdown(timeout=5.0)
    seen = [seq for w in workers for seq in w.join()]
    assert sorted(seen) == list(range(1, n + 1))
    for w in workers:
        assert w.value == sorted(w.value)  # each member still reads in sequence order


def test_asyncio_group_members_share_messages(k):
    broker = k.new_broker()

    async def main():
        members = [k.InMemorySubscriber(broker, group="g") for _ in range(3)]
        for m in members:
            await m.subscribe("t")
        import asyncio

        async def work(sub):
            out = []
            async for msg in sub:
                out.append(msg.sequence)
            return out

        tasks = [asyncio.create_task(work(m)) for m in members]
        pub = k.InMemoryPublisher(broker)
        for _i in range(30):
            await pub.publish("t", [b"x"])
            await asyncio.sleep(0)
        broker.shutdown()
        results = await asyncio.gather(*tasks)
        return sorted(s for r in results for s in r)

    assert k.run(main()) == list(range(1, 31))
