"""Leaks: references to payloads are given back after many cycles over every feature, on both
engines. (Subscribers and brokers dropped: test_leaks_dropped.py; memory under churn and the
valgrind run of the compiled engine: test_leaks_memory.py.)

Cycle counts: a refcount scenario runs ``CYCLES[k.impl] // cost`` steps, where ``cost`` is the
scenario's price per step relative to a plain publish/receive (the compiled engine does a
million plain publish/receive cycles in well under a second; the pure-Python twin runs 1/20th of
that, since it is about 20 times slower and has no C-level reference counting to get wrong).
``KINCIR_LEAK_SCALE`` (a float, default 1) scales every count, for a long soak.

A leaked reference shows up as a refcount that grew by about the number of steps, so even the
scaled-down runs would see it; ``sys.getallocatedblocks`` catches leaked objects the tracked
ones do not refer to (pymalloc builds only: it reads 0 under PYTHONMALLOC=malloc).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

CYCLES = {"cython": 1_000_000, "python": 50_000}
SCALE = float(os.environ.get("KINCIR_LEAK_SCALE", "1"))
# Objects a run of the scenarios may leave allocated for good (freelists, caches, interned
# strings, a grown dict): measured at up to ~70, against one or more per step for a leak.
BLOCK_SLACK_MIN, BLOCK_SLACK_MAX = 150, 1_000


@pytest.fixture(autouse=True)
def quiet_kincir_log(caplog):
    """pytest keeps every captured record: the warnings of dead letters would count as growth."""
    caplog.set_level(logging.CRITICAL, logger="kincir")


def steps(k: Any, cost: int = 1, minimum: int = 200) -> int:
    """How many steps a scenario runs on this engine (see the module docstring)."""
    return max(minimum, int(CYCLES[k.impl] * SCALE) // cost)


class Tracked:
    """The objects whose reference counts must come back: a bytes payload published as is, a
    Message (with metadata) and its payload, and a metadata value every copy of its metadata
    refers to. Made at run time, so none of them is an interned constant."""

    def __init__(self, k: Any) -> None:
        self.raw = os.urandom(40) + b" raw payload"
        self.meta_value = "metadata value " + os.urandom(8).hex()
        self.msg = k.Message(os.urandom(40) + b" message payload", {"key": self.meta_value})
        assert self.msg.payload is not self.raw

    def counts(self) -> dict[str, int]:
        return {
            "bytes payload": sys.getrefcount(self.raw),
            "Message payload": sys.getrefcount(self.msg.payload),
            "Message": sys.getrefcount(self.msg),
            "metadata value": sys.getrefcount(self.meta_value),
        }


def fillers(count: int) -> list[bytes]:
    return [b"filler %d" % i for i in range(count)]


def assert_restored(t: Tracked, step: Callable[[], Any], n: int, warmup: int = 50) -> None:
    """Run ``step`` ``warmup`` then ``n`` times; the tracked refcounts and the number of
    allocated blocks must come back to what they were after the warm-up."""
    for _ in range(warmup):
        step()
    gc.collect()
    before = t.counts()
    blocks_before = sys.getallocatedblocks()
    for _ in range(n):
        step()
    gc.collect()
    after = t.counts()
    blocks = sys.getallocatedblocks() - blocks_before
    assert after == before, f"references not given back after {n} steps: {before} -> {after}"
    slack = max(BLOCK_SLACK_MIN, min(BLOCK_SLACK_MAX, n // 2))
    assert blocks < slack, f"{blocks} more allocated blocks after {n} steps"
    assert gc.garbage == []


# -- refcounts after many cycles --------------------------------------------------------------


def test_publish_receive(k):
    broker = k.InMemoryBroker()
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    publish, recv, recv_sync = pub.publish_nowait, sub.try_receive, sub.receive_sync
    raw, msg = [t.raw], [t.msg]

    def step():
        publish("t", raw)
        recv()
        publish("t", msg)
        recv_sync()

    assert_restored(t, step, steps(k, 2))
    got = (pub.publish_nowait("t", msg), sub.try_receive())[1]
    assert got.payload is t.msg.payload  # the broker shares the payload: no copy to hide a leak
    assert got.metadata["key"] is t.meta_value
    assert broker.topic_info("t").queue_size == 0


def test_one_message_sends(k):
    broker = k.InMemoryBroker()
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    meta = {"key": t.meta_value}

    def step():
        pub.send_nowait("t", t.raw)
        sub.try_receive()
        pub.send_sync("t", t.msg.payload, metadata=meta)
        assert sub.try_receive().metadata["key"] is t.meta_value
        with pytest.raises(TypeError):
            pub.send_nowait("t", t.raw, metadata={"n": 1})

    assert_restored(t, step, steps(k, 4))
    assert broker.topic_info("t").queue_size == 0


def test_metadata_and_uuid_of_delivered_copies(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(maintain_order=True))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    msg = [t.msg]

    def step():
        pub.publish_nowait("t", msg)
        got = sub.try_receive()
        assert got.metadata["key"] is t.meta_value
        assert len(got.uuid) == 36 and got.topic == "t" and got.sequence > 0
        assert repr(got)
        copy = got.with_metadata("extra", t.meta_value)
        pub.publish_nowait("t", [copy])
        assert sub.try_receive().metadata["extra"] is t.meta_value

    assert_restored(t, step, steps(k, 8))


def test_batches(k):
    broker = k.InMemoryBroker()
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg] * 50
    as_tuple = tuple(batch)

    def step():
        pub.publish_nowait("t", batch)
        assert len(sub.try_receive_batch(100)) == 100
        pub.publish_sync("t", as_tuple)
        assert len(sub.receive_batch_sync(60)) == 60
        assert len(sub.try_receive_batch(100)) == 40

    assert_restored(t, step, steps(k, 200))


def test_fan_out(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    subs = [k.InMemorySubscriber(broker) for _ in range(4)]
    for sub in subs:
        sub.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg]
    late = k.InMemorySubscriber(broker)  # reads two topics, round-robin
    late.subscribe("t")
    late.subscribe("u")

    def step():
        pub.publish_nowait("t", batch)
        pub.publish_nowait("u", batch)
        for sub in subs:
            sub.try_receive()
            sub.try_receive()
        for _ in range(4):
            late.try_receive()

    assert_restored(t, step, steps(k, 10))
    assert broker.topic_info("t").queue_size == 0


def test_consumer_group_and_pull_group(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    members = k.members(broker, "t", 3, group="workers")
    plain = k.subscriber(broker, "t")
    t = Tracked(k)
    batch = [t.raw, t.msg, t.raw]
    assert broker.consume("t") is None  # made now, it reads from here on

    def step():
        pub.publish_nowait("t", batch)
        for member in members:
            assert member.try_receive() is not None
        assert len(plain.try_receive_batch(3)) == 3
        for _ in range(3):
            assert broker.consume("t") is not None  # the built-in pull group

    assert_restored(t, step, steps(k, 10))
    assert broker.topic_info("t").queue_size == 0


def test_ack_subscriber_ack(k):
    broker = k.InMemoryBroker()
    pub, sub = k.InMemoryPublisher(broker), k.InMemoryAckSubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg]

    def step():
        pub.publish_nowait("t", batch)
        _, h1 = sub.try_receive_with_ack()
        _, h2 = sub.receive_with_ack_sync()
        sub.ack(h1)
        sub.ack_batch([h2])
        pub.publish_nowait("t", batch)
        assert len(sub.try_receive_batch(2)) == 2  # plain receives ack as they hand out

    assert_restored(t, step, steps(k, 40))
    assert broker.topic_info("t").in_flight == 0
    assert broker.topic_info("t").queue_size == 0


def test_ack_subscriber_nack_and_redelivery(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", max_deliveries=None)
    a = k.InMemoryAckSubscriber(broker, group="g")
    b = k.InMemoryAckSubscriber(broker, group="g")
    a.subscribe("t")
    b.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg]

    def step():
        pub.publish_nowait("t", batch)
        _, h = sub.try_receive_with_ack()
        sub.nack(h)
        _, h = sub.try_receive_with_ack()
        assert h.is_retry
        sub.nack_batch([h])
        _, h = sub.try_receive_with_ack()
        sub.ack(h)
        _, h = sub.try_receive_with_ack()
        sub.ack(h)
        _, h = a.try_receive_with_ack()  # a group member's nack goes to any member
        a.nack(h)
        _, h = b.try_receive_with_ack()
        b.ack(h)
        _, h = b.try_receive_with_ack()
        b.ack(h)

    assert_restored(t, step, steps(k, 100))
    assert broker.topic_info("t").in_flight == 0
    assert broker.topic_info("t").queue_size == 0


def test_ack_deadline_redelivery(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    # members of one group: the slow one misses its deadlines, the other gets the redeliveries
    slow = k.InMemoryAckSubscriber(broker, "g", ack_timeout=0.001, max_deliveries=None)
    fast = k.InMemoryAckSubscriber(broker, "g", max_deliveries=None)
    slow.subscribe("t")
    fast.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg] * 25

    def step():
        pub.publish_nowait("t", batch)
        first = [slow.try_receive_with_ack() for _ in range(50)]
        time.sleep(0.002)  # every delivery misses its deadline
        retries = 0
        while (got := fast.try_receive_with_ack()) is not None:
            retries += got[1].is_retry
            fast.ack(got[1])
        assert retries > 0
        for item in first:
            if item is not None:
                with pytest.raises(k.AckError):  # stale: redelivered
                    slow.ack(item[1])

    assert_restored(t, step, max(100, int(200 * SCALE)), warmup=5)
    assert broker.topic_info("t").in_flight == 0


def test_drop_oldest(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=4, overflow="drop_oldest"))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    acker = k.InMemoryAckSubscriber(broker)
    sub.subscribe("t")
    acker.subscribe("t")
    t = Tracked(k)
    pair, big, fill = [t.raw, t.msg], [t.raw, t.msg] * 3, fillers(4)
    pub.publish_nowait("t", fill)

    def step():
        # the topic holds 4 fillers: each publish pushes the oldest out
        pub.publish_nowait("t", pair)
        sub.try_receive()
        got = acker.try_receive_with_ack()  # in flight when its slot is dropped
        pub.publish_nowait("t", big)  # larger than the topic: its start is never written
        acker.ack(got[1])  # the handle stays valid
        sub.try_receive()
        pub.publish_nowait("t", fill)  # pushes every tracked message out

    assert_restored(t, step, steps(k, 20))
    assert sub.messages_lagged() > 0


def test_drop_newest(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=4, overflow="drop_newest"))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    pair, three, fill = [t.raw, t.msg], [t.raw, t.msg, t.raw], fillers(4)

    def step():
        pub.publish_nowait("t", fill)  # full
        pub.publish_nowait("t", pair)  # nothing fits: dropped whole
        assert len(sub.try_receive_batch(2)) == 2
        pub.publish_nowait("t", three)  # two fit, the last is dropped
        assert len(sub.try_receive_batch(4)) == 4

    assert_restored(t, step, steps(k, 10))
    assert broker.topic_info("t").queue_size == 0


def test_refused_publishes_give_their_references_back(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=4, max_topics=3))
    pub = k.InMemoryPublisher(broker)
    broker.configure_topic("blocking", overflow="block")
    pub.publish_nowait("full", fillers(4))
    pub.publish_nowait("blocking", fillers(4))
    pub.publish_nowait("third", [b"x"])  # max_topics reached: a new topic is refused
    closed = k.InMemoryBroker()
    closed_pub = k.InMemoryPublisher(closed)
    closed.shutdown()
    t = Tracked(k)
    pair = [t.raw, t.msg]
    refusals = (
        (pub.publish_nowait, "full", pair, k.QueueFull),
        (pub.publish_sync, "full", pair, k.QueueFull),
        (pub.publish_nowait, "blocking", pair, k.QueueFull),
        (pub.publish_nowait, "new.topic", pair, k.MaxTopicsReached),
        (pub.publish_nowait, "bad..name", pair, k.InvalidTopicName),
        (closed_pub.publish_nowait, "t", pair, k.BrokerShutdown),
    )

    def step():
        for publish, topic, items, error in refusals:
            try:
                publish(topic, items)
            except error:
                pass
            else:
                raise AssertionError(f"{publish} to {topic!r} was not refused")
        try:  # block policy: a publish whose wait times out at once
            pub.publish_sync("blocking", pair, timeout=0)
        except k.QueueFull:
            pass

    assert_restored(t, step, steps(k, 100))
    assert broker.topic_info("full").queue_size == 4


def test_ttl_expiry(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(default_message_ttl=0.001, max_queue_size=50))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    acker = k.InMemoryAckSubscriber(broker)
    sub.subscribe("t")
    acker.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg] * 25
    count = [0]

    def step():
        count[0] += 1
        # full of the last step's (expired) messages: they are reclaimed to make room
        pub.publish_nowait("full", batch)
        pub.publish_nowait("t", batch)  # read by nobody in time
        pub.publish_nowait("orphan", batch)  # a topic with no reader
        time.sleep(0.002)
        assert sub.try_receive() is None
        assert acker.try_receive_with_ack() is None
        if count[0] % 2:
            broker.expire_all()  # the cleanup pass, every other step

    assert_restored(t, step, max(100, int(200 * SCALE)), warmup=5)
    assert broker.topic_info("t").total_expired > 0


def test_clear_and_delete_topic(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    member = k.InMemorySubscriber(broker, group="g")
    acker = k.InMemoryAckSubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg] * 2

    def step():
        pub.publish_nowait("t", batch)
        sub.try_receive()
        assert broker.clear_topic("t") == 3
        for name in ("d", "e"):
            sub.subscribe(name)
            member.subscribe(name)
            acker.subscribe(name)
        pub.publish_nowait("d", batch)
        pub.publish_nowait("e", batch)
        pub.publish_nowait("held", batch)  # no reader: held
        acker.try_receive_with_ack()  # in flight when its topic goes
        broker.delete_topic("d")
        broker.delete_topic("held")
        broker.delete_group("e", "g")
        acker.unsubscribe("e")
        broker.delete_topic("e")

    assert_restored(t, step, steps(k, 100))
    assert broker.list_topics() == ["t"]


def test_dead_letters(k):
    broker = k.InMemoryBroker()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemoryAckSubscriber(broker, max_deliveries=1, dead_letter_topic="dlq")
    full = k.InMemoryAckSubscriber(broker, dead_letter_topic="dlq.full")
    dropper = k.InMemoryAckSubscriber(broker, max_deliveries=1)  # no dead-letter topic
    broker.configure_topic("dlq.full", max_queue_size=1)
    pub.publish_nowait("dlq.full", [b"filler"])  # the dead letter is refused: dropped
    letters = k.subscriber(broker, "dlq")
    sub.subscribe("t")
    full.subscribe("u")
    dropper.subscribe("v")
    t = Tracked(k)
    batch = [t.raw, t.msg]

    def step():
        pub.publish_nowait("t", batch)
        _, h = sub.try_receive_with_ack()
        sub.nack(h)  # past max_deliveries
        _, h = sub.try_receive_with_ack()
        sub.nack(h, requeue=False)  # rejected
        for letter in letters.try_receive_batch(2):
            assert letter.payload is t.raw or letter.metadata["key"] is t.meta_value
        pub.publish_nowait("u", batch)
        _, h1 = full.try_receive_with_ack()
        _, h2 = full.try_receive_with_ack()
        full.nack_batch([h1, h2], requeue=False)
        pub.publish_nowait("v", batch)
        _, h = dropper.try_receive_with_ack()
        dropper.nack(h)
        _, h = dropper.try_receive_with_ack()
        dropper.nack(h, requeue=False)

    assert_restored(t, step, steps(k, 60))
    assert broker.topic_info("dlq").total_published > 0
    assert broker.topic_info("u").total_dead_lettered == 0
    assert broker.topic_info("t").queue_size == 0


def test_asyncio_publish_and_receive(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=2, overflow="block"))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    pair, one = [t.raw, t.msg], [t.raw]

    async def step_async():
        await pub.publish("t", pair)
        await sub.receive()
        assert len(await sub.receive_batch(5)) == 1
        waiting = asyncio.ensure_future(sub.receive())  # waits, then a publish wakes it
        await asyncio.sleep(0)
        await pub.publish("t", one)
        await waiting
        cancelled = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        pub.publish_nowait("t", pair)  # full: the next publish waits for room
        blocked = asyncio.ensure_future(pub.publish("t", one))
        await asyncio.sleep(0)
        await sub.receive(timeout=1.0)
        await blocked
        assert len(sub.try_receive_batch(2)) == 2
        never = sub.receive()  # made, never awaited
        never.close()

    loop = asyncio.new_event_loop()
    try:
        assert_restored(t, lambda: loop.run_until_complete(step_async()), steps(k, 300))
    finally:
        loop.close()


def test_threads_blocking_receive_and_publish(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=8, overflow="block"))
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    t = Tracked(k)
    batch = [t.raw, t.msg] * 4
    rounds = steps(k, 250, minimum=100)

    def producer():
        for _ in range(rounds):
            pub.publish_sync("t", batch, timeout=5.0)  # waits for room when the reader lags

    def step():
        worker = threading.Thread(target=producer)
        worker.start()
        received = 0
        while received < rounds * len(batch):
            received += len(sub.receive_batch_sync(3, timeout=5.0))
            if sub.try_receive() is not None:
                received += 1
        worker.join()

    assert_restored(t, step, 2, warmup=1)
