"""Overflow policies: error, block, drop_oldest, drop_newest; per broker and per topic."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest


def setup(k, policy, size=3, **fields):
    return k.setup(max_queue_size=size, overflow=policy, enable_stats=True, **fields)


def payloads(msgs):
    return [m.payload for m in msgs]


@pytest.mark.parametrize("policy", ["error", "block", "drop_oldest", "drop_newest"])
def test_every_policy_is_accepted_by_config_and_builder(k, policy):
    assert k.InMemoryConfig(overflow=policy).overflow == policy
    assert k.InMemoryConfig().with_overflow(policy).overflow == policy
    assert policy in k.OVERFLOW_POLICIES


def test_unknown_policy_is_invalid_config(k):
    with pytest.raises(k.InvalidConfig) as info:
        k.InMemoryConfig(overflow="drop_everything")
    assert info.value.field == "overflow"
    with pytest.raises(TypeError):
        k.InMemoryConfig(overflow=1)
    broker = k.new_broker()
    with pytest.raises(k.InvalidConfig):
        broker.configure_topic("t", overflow="sometimes")
    with pytest.raises(k.InvalidConfig):
        broker.configure_topic("t", max_queue_size=0)
    with pytest.raises(k.InvalidTopicName):
        broker.configure_topic("a..b", overflow="block")
    assert broker.list_topics() == []


# -- drop_newest ------------------------------------------------------------------------------


def test_drop_newest_keeps_what_fits_and_counts_the_rest(k):
    broker, pub, sub = setup(k, "drop_newest", subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    pub.publish_nowait("t", [b"3", b"4", b"5"])  # only 3 fits
    pub.publish_nowait("t", [b"6"])  # nothing fits: dropped, no error
    msgs = k.drain(sub)
    assert payloads(msgs) == [b"1", b"2", b"3"]
    assert [m.sequence for m in msgs] == [1, 2, 3]  # dropped messages get no number
    info = broker.topic_info("t")
    assert info.total_dropped == 3
    assert info.queue_full_errors == 0
    assert info.next_sequence == 4
    assert broker.stats().messages_dropped() == 3
    pub.publish_nowait("t", [b"7"])
    assert sub.try_receive().sequence == 4


# -- drop_oldest ------------------------------------------------------------------------------


def test_drop_oldest_makes_room_and_readers_behind_learn_their_lag(k):
    broker, pub, sub = setup(k, "drop_oldest")
    fast = k.InMemorySubscriber(broker)
    sub.subscribe("t")
    fast.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert payloads(k.drain(fast)) == [b"1", b"2", b"3"]
    pub.publish_nowait("t", [b"4", b"5"])  # sub is behind: loses 1 and 2
    assert payloads(k.drain(sub)) == [b"3", b"4", b"5"]
    assert payloads(k.drain(fast)) == [b"4", b"5"]
    assert sub.messages_lagged() == 2
    assert fast.messages_lagged() == 0
    info = broker.topic_info("t")
    assert info.total_lagged == 2
    assert info.queue_size == 0
    assert broker.stats().messages_lagged() == 2
    assert info.total_published == 5  # sequence numbers stay gapless


def test_drop_oldest_batch_larger_than_capacity_keeps_its_newest(k):
    broker, pub, sub = setup(k, "drop_oldest", subscribe="t")
    pub.publish_nowait("t", [b"0"])
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4", b"5"])
    msgs = k.drain(sub)
    assert payloads(msgs) == [b"3", b"4", b"5"]
    # the whole batch is numbered, its start dropped with the held message (seed parity, issue
    # 12: it used to number only what it wrote, [2, 3, 4] with a lag of 1)
    assert [m.sequence for m in msgs] == [4, 5, 6]
    assert sub.messages_lagged() == 3
    assert broker.topic_info("t").queue_size == 0


def test_drop_oldest_without_readers_drops_held_messages(k):
    broker, pub, _sub = setup(k, "drop_oldest")
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    assert broker.topic_info("t").queue_size == 3
    late = k.subscriber(broker, "t")
    assert payloads(k.drain(late)) == [b"2", b"3", b"4"]
    assert broker.topic_info("t").total_dropped == 1


# -- block ------------------------------------------------------------------------------------


def test_block_nowait_raises_queue_full(k):
    broker, pub, _sub = setup(k, "block", subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"4"])
    assert broker.topic_info("t").queue_full_errors == 1
    assert broker.topic_info("t").queue_size == 3


def test_block_sync_timeout_raises_queue_full_and_writes_nothing(k):
    _broker, pub, sub = setup(k, "block", subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    start = time.monotonic()
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"4"], timeout=0.1)
    assert time.monotonic() - start >= 0.09
    assert payloads(k.drain(sub)) == [b"1", b"2", b"3"]


def test_block_batch_larger_than_capacity_fails_at_once(k):
    _broker, pub, _sub = setup(k, "block", subscribe="t")
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"1", b"2", b"3", b"4"])


def test_block_sync_waits_for_a_reader_to_make_room(k):
    _broker, pub, sub = setup(k, "block", size=2, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    done = threading.Event()

    def publish():
        pub.publish_sync("t", [b"3"], timeout=5.0)
        done.set()

    worker = k.spawn(publish)
    assert not done.wait(0.1)
    assert sub.receive_sync(timeout=1).payload == b"1"
    worker.join()
    assert payloads(k.drain(sub)) == [b"2", b"3"]


def test_block_many_producers_one_slow_consumer_lose_nothing(k):
    broker, pub, sub = setup(k, "block", size=4, subscribe="t")
    n = 300

    def produce(tag):
        for i in range(n):
            pub.publish_sync("t", [f"{tag}:{i}".encode()], timeout=10)

    workers = [k.spawn(produce, t) for t in "ab"]
    got = []
    while len(got) < 2 * n:
        got.append(sub.receive_sync(timeout=5).payload.decode())
        assert broker.topic_info("t").queue_size <= 4
    for w in workers:
        w.join()
    for tag in "ab":
        assert [g for g in got if g.startswith(tag)] == [f"{tag}:{i}" for i in range(n)]


def test_block_async_publish_waits_then_times_out(k):
    broker, pub, sub = setup(k, "block", size=1, subscribe="t")

    async def main():
        await pub.publish("t", [b"1"])
        waiting = asyncio.ensure_future(pub.publish("t", [b"2"]))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert (await sub.receive()).payload == b"1"
        await asyncio.wait_for(waiting, 2)
        assert (await sub.receive()).payload == b"2"
        await pub.publish("t", [b"3"])
        with pytest.raises(k.QueueFull):
            await pub.publish("t", [b"4"], timeout=0.05)
        # a cancelled blocked publish writes nothing
        task = asyncio.ensure_future(pub.publish("t", [b"5"]))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await sub.receive()).payload == b"3"
        assert sub.try_receive() is None

    k.run(main())
    assert broker.topic_info("t").queue_full_errors == 1


def test_block_async_woken_by_a_thread_reader(k):
    _broker, pub, sub = setup(k, "block", size=1, subscribe="t")
    pub.publish_nowait("t", [b"1"])

    async def main():
        reader = k.spawn(lambda: (time.sleep(0.05), sub.receive_sync(timeout=2))[1])
        await pub.publish("t", [b"2"], timeout=2)
        assert reader.join().payload == b"1"

    k.run(main())
    assert sub.try_receive().payload == b"2"


def test_shutdown_wakes_blocked_publishers_with_broker_shutdown(k):
    broker, pub, sub = setup(k, "block", size=1, subscribe="t")
    pub.publish_nowait("t", [b"1"])
    worker = k.spawn_blocked(pub.publish_sync, "t", [b"2"])
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        worker.join()
    assert sub.try_receive().payload == b"1"


def test_force_shutdown_and_delete_topic_wake_blocked_publishers(k):
    broker, pub, _sub = setup(k, "block", size=1, subscribe="t")
    pub.publish_nowait("t", [b"1"])
    worker = k.spawn(pub.publish_sync, "t", [b"2"])
    time.sleep(0.05)
    broker.delete_topic("t")
    with pytest.raises(k.TopicNotFound):
        worker.join()

    async def main():
        await pub.publish("u", [b"1"])
        k.InMemorySubscriber(broker).subscribe("u")
        task = asyncio.ensure_future(pub.publish("u", [b"2"]))
        await asyncio.sleep(0.02)
        broker.force_shutdown()
        with pytest.raises(k.BrokerShutdown):
            await task

    k.run(main())


# -- per-topic configuration ------------------------------------------------------------------


def test_configure_topic_overrides_policy_and_capacity(k):
    broker = k.new_broker(max_queue_size=2)
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    info = broker.configure_topic("t", overflow="drop_newest", max_queue_size=1)
    assert (info.overflow, info.max_queue_size) == ("drop_newest", 1)
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2"])
    assert payloads(k.drain(sub)) == [b"1"]
    info = broker.configure_topic("t", max_queue_size=None)  # policy kept, unbounded
    assert (info.overflow, info.max_queue_size) == ("drop_newest", None)
    pub.publish_nowait("t", [b"x"] * 50)
    assert len(k.drain(sub)) == 50
    # other topics keep the broker's settings
    other = broker.configure_topic("u")
    assert (other.overflow, other.max_queue_size) == ("error", 2)


def test_configure_topic_raising_capacity_wakes_blocked_publishers(k):
    broker = k.new_broker(max_queue_size=1, overflow="block")
    pub = k.InMemoryPublisher(broker)
    k.InMemorySubscriber(broker).subscribe("t")
    pub.publish_nowait("t", [b"1"])
    worker = k.spawn_blocked(pub.publish_sync, "t", [b"2"], timeout=5)
    broker.configure_topic("t", max_queue_size=2)
    worker.join()
    assert broker.topic_info("t").queue_size == 2
    # switching the policy away from block wakes them too (and they meet the new policy)
    worker = k.spawn(pub.publish_sync, "t", [b"3"], timeout=5)
    time.sleep(0.05)
    broker.configure_topic("t", overflow="error")
    with pytest.raises(k.QueueFull):
        worker.join()


def test_lowering_capacity_below_what_is_held_drops_nothing(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.configure_topic("t", max_queue_size=1, overflow="drop_oldest")
    assert broker.topic_info("t").queue_size == 3
    pub.publish_nowait("t", [b"4"])  # drop_oldest now drops down to the new capacity
    assert payloads(k.drain(sub)) == [b"4"]
    assert sub.messages_lagged() == 3
