"""Pattern subscriptions join a new topic atomically with its creation: no publish from another
thread can reach the topic before every matching pattern subscriber (and group) is attached."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import pytest


class _PublishWhenCreated(logging.Handler):
    """On the engine's "topic created" record, publish to that topic from another thread (the
    record is the one point a test can run code while a topic is being created)."""

    def __init__(self, publisher: Any, topic: str) -> None:
        super().__init__(logging.DEBUG)
        self.publisher = publisher
        self.topic = topic
        self.threads: list[threading.Thread] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() != f"topic {self.topic!r} created" or self.threads:
            return
        thread = threading.Thread(
            target=self.publisher.publish_nowait, args=(self.topic, [b"from-B"])
        )
        self.threads.append(thread)
        thread.start()
        thread.join(0.5)  # it may have to wait for the creation to finish


@pytest.mark.parametrize("persistence", [True, False])
def test_a_publish_from_another_thread_while_a_topic_is_created_reaches_every_pattern(
    k, persistence
):
    broker = k.new_broker(enable_persistence=persistence)
    pub = k.InMemoryPublisher(broker)
    subs = [k.InMemorySubscriber(broker) for _ in range(3)]
    subs[0].subscribe("orders.*")
    subs[1].subscribe("orders.>")
    subs[2].subscribe("*.eu")
    group = k.members(broker, "orders.*")
    logger = logging.getLogger("kincir.memory")
    handler = _PublishWhenCreated(pub, "orders.eu")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        pub.publish_nowait("orders.eu", [b"from-A"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    for thread in handler.threads:
        thread.join(2.0)
        assert not thread.is_alive()
    assert len(handler.threads) == 1
    for sub in subs:
        got = sub.try_receive_batch(10)
        assert sorted(m.payload for m in got) == [b"from-A", b"from-B"]
        assert [m.sequence for m in got] == [1, 2]
    shared = group[0].try_receive_batch(10) + group[1].try_receive_batch(10)
    assert sorted(m.sequence for m in shared) == [1, 2]
    assert broker.topic_info("orders.eu").total_dropped == 0


@pytest.mark.usefixtures("fast_switching")
def test_topics_created_by_racing_publishers_reach_pattern_readers_from_sequence_1(k):
    broker = k.new_broker(enable_persistence=False)
    pub = k.InMemoryPublisher(broker)
    plain = k.subscriber(broker, "x.*")
    group = [k.InMemorySubscriber(broker, group="g") for _ in range(2)]
    acking = [k.InMemoryAckSubscriber(broker, group="a") for _ in range(2)]
    for member in group + acking:
        member.subscribe("x.>")
    rounds = 300
    barriers = [threading.Barrier(2) for _ in range(rounds)]
    deadline = time.monotonic() + 10

    def publish(tag: bytes) -> None:
        for i in range(rounds):
            barriers[i].wait(5)
            pub.publish_nowait(f"x.t{i}", [tag])
            if time.monotonic() > deadline:
                break

    workers = [k.spawn(publish, tag) for tag in (b"A", b"B")]
    for worker in workers:
        worker.join(20)
    topics = broker.list_topics()
    expected = {(name, seq) for name in topics for seq in (1, 2)}

    def drain(sub: Any) -> list[tuple[str, int]]:
        out = []
        while batch := sub.try_receive_batch(1000):
            out += [(m.topic, m.sequence) for m in batch]
        return out

    assert collections.Counter(drain(plain)) == dict.fromkeys(expected, 1)
    for members in (group, acking):
        got = drain(members[0]) + drain(members[1])
        assert collections.Counter(got) == dict.fromkeys(expected, 1)
    assert sum(info.total_dropped for info in broker.list_topic_info()) == 0


@pytest.mark.usefixtures("fast_switching")
def test_a_pattern_subscribed_while_topics_are_created_misses_none_of_them(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    stop = threading.Event()

    def create() -> int:
        n = 0
        while not stop.is_set() and n < 2000:
            pub.publish_nowait(f"y.t{n}", [b"x"])
            n += 1
        return n

    worker = k.spawn(create)
    subs = []
    for _ in range(20):
        sub = k.subscriber(broker, "y.*")
        subs.append(sub)
    stop.set()
    worker.join(10)
    names = set(broker.list_topics())
    for sub in subs:
        assert set(sub.subscribed_topics()) == names


def test_a_topic_deleted_while_a_pattern_joins_it_is_not_created_again(k):
    # The delete is started between the pattern's check that the topic exists and its join (the
    # two steps of _subscribe_existing, written out here to put the delete between them). It
    # must wait for the pattern's joins, never land between them, where the join would create
    # the deleted topic again.
    broker = k.new_broker()
    k.InMemorySubscriber(broker).subscribe("a.x")
    deleting = []

    class DeleteWhileJoining(k.InMemorySubscriber):
        def _subscribe_existing(self, topic):
            self.broker._existing(topic)
            deleting.append(k.spawn(broker.delete_topic, topic))
            deleting[0].thread.join(0.3)  # time for the delete to land, if it can
            self._subscribe(topic)

    sub = DeleteWhileJoining(broker)
    sub.subscribe("a.*")
    deleting[0].join(5)
    assert broker.list_topics() == []
    assert sub.subscribed_topics() == []
    assert sub.subscribed_patterns() == ["a.*"]


def test_a_pattern_left_while_it_joins_its_topics_joins_none_after(k):
    broker = k.new_broker()
    for topic in ("a.1", "a.2"):
        broker.configure_topic(topic)
    leaving = []

    class LeaveWhileJoining(k.InMemorySubscriber):
        def _subscribe_existing(self, topic):
            if not leaving:
                leaving.append(k.spawn(self.unsubscribe, "a.*"))
                leaving[0].thread.join(0.3)  # time for the unsubscribe to land, if it can
            super()._subscribe_existing(topic)

    sub = LeaveWhileJoining(broker)
    sub.subscribe("a.*")
    leaving[0].join(5)
    assert sub.subscribed_patterns() == []
    assert sub.subscribed_topics() == []
