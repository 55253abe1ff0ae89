"""Property test: one topic driven by random operations, compared with a small model.

The model is the contract in a few lines: a log with a head (next sequence number) and a tail
(oldest held message), and one cursor per attached subscriber. The first reader of a topic with
no reader starts at the tail, later ones at the head; the last reader to leave keeps its unread
messages held (persistence on) or drops them (off); a publish that would hold more than the
capacity is refused whole; with persistence off, a publish with no reader is dropped whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SUBSCRIBERS = 3
TOPIC = "model"


@dataclass
class Model:
    capacity: int | None
    persistence: bool
    head: int = 1
    tail: int = 1
    cursors: dict[int, int] = field(default_factory=dict)
    dropped: int = 0
    published: int = 0
    consumed: int = 0
    queue_full: int = 0

    def _release(self) -> None:
        if self.cursors:
            self.tail = min(self.cursors.values())

    def publish(self, count: int) -> list[int] | str:
        if count == 0:
            return []
        if not self.cursors and not self.persistence:
            self.dropped += count
            return []
        if self.capacity is not None and self.head - self.tail + count > self.capacity:
            self.queue_full += 1
            return "QueueFull"
        seqs = list(range(self.head, self.head + count))
        self.head += count
        self.published += count
        return seqs

    def subscribe(self, sub: int) -> None:
        if sub in self.cursors:
            return
        self.cursors[sub] = self.tail if not self.cursors else self.head

    def unsubscribe(self, sub: int) -> str | None:
        if sub not in self.cursors:
            return "NotSubscribed"
        pos = self.cursors.pop(sub)
        if self.cursors:
            self._release()
        elif not self.persistence:
            self.dropped += self.head - pos
            self.tail = self.head
        return None

    def receive(self, sub: int, limit: int) -> list[int] | str:
        if sub not in self.cursors:
            return "NotSubscribed"
        pos = self.cursors[sub]
        end = min(self.head, pos + limit)
        self.cursors[sub] = end
        self.consumed += end - pos
        self._release()
        return list(range(pos, end))


operations = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 4)),
    st.tuples(st.just("subscribe"), st.integers(0, SUBSCRIBERS - 1)),
    st.tuples(st.just("unsubscribe"), st.integers(0, SUBSCRIBERS - 1)),
    st.tuples(st.just("receive"), st.integers(0, SUBSCRIBERS - 1), st.integers(1, 5)),
)


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "volatile"])
@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacity=st.one_of(st.none(), st.integers(1, 6)),
    ops=st.lists(operations, max_size=40),
)
def test_topic_matches_the_model(k, persistence, capacity, ops):
    broker = k.InMemoryBroker(
        k.InMemoryConfig(max_queue_size=capacity, enable_persistence=persistence, enable_stats=True)
    )
    try:
        pub = k.InMemoryPublisher(broker)
        subs = [k.InMemorySubscriber(broker) for _ in range(SUBSCRIBERS)]
        # Create the topic up front, with no reader left on it.
        subs[0].subscribe(TOPIC)
        subs[0].unsubscribe(TOPIC)
        model = Model(capacity, persistence)
        payload_of: dict[int, object] = {}
        counter = 0

        for op in ops:
            kind = op[0]
            if kind == "publish":
                count = op[1]
                # bytes and objects alike (objects arrive by reference: compared by identity)
                batch = [
                    f"m{n}".encode() if n % 2 else {"n": n} for n in range(counter, counter + count)
                ]
                counter += count
                expected = model.publish(count)
                if expected == "QueueFull":
                    with pytest.raises(k.QueueFull) as info:
                        pub.publish_nowait(TOPIC, batch)
                    assert (info.value.topic, info.value.limit) == (TOPIC, capacity)
                else:
                    pub.publish_nowait(TOPIC, batch)
                    # An empty result with a non-empty batch: dropped on arrival, no numbers.
                    payload_of.update(zip(expected, batch, strict=False))
            elif kind == "subscribe":
                model.subscribe(op[1])
                subs[op[1]].subscribe(TOPIC)
            elif kind == "unsubscribe":
                expected = model.unsubscribe(op[1])
                if expected == "NotSubscribed":
                    with pytest.raises(k.NotSubscribed):
                        subs[op[1]].unsubscribe(TOPIC)
                else:
                    subs[op[1]].unsubscribe(TOPIC)
            else:
                sub, limit = op[1], op[2]
                expected = model.receive(sub, limit)
                if expected == "NotSubscribed":
                    with pytest.raises(k.NotSubscribed):
                        subs[sub].try_receive_batch(limit)
                else:
                    got = subs[sub].try_receive_batch(limit)
                    assert [m.sequence for m in got] == expected, op
                    assert [m.payload for m in got] == [payload_of[s] for s in expected]
                    sent = [payload_of[s] for s in expected]
                    assert all(m.payload is p for m, p in zip(got, sent, strict=True))
                    assert all(m.topic == TOPIC for m in got)

            info = broker.topic_info(TOPIC)
            assert info.queue_size == model.head - model.tail, op
            assert info.next_sequence == model.head, op
            assert info.subscriber_count == len(model.cursors), op
            assert info.total_published == model.published
            assert info.total_consumed == model.consumed
            assert info.total_dropped == model.dropped
            assert info.queue_full_errors == model.queue_full
            assert info.in_flight == 0  # plain readers: nothing is ever in flight
            only = list(model.cursors.values())
            if len(only) == 1 and model.dropped == 0 and model.consumed == only[0] - 1:
                # one reader has read every message it was due (a drop on arrival has no
                # reader): the identity reads from the topic's stats alone
                assert info.total_published == (
                    info.total_consumed
                    + info.in_flight
                    + info.total_dropped
                    + info.total_expired
                    + info.queue_size
                ), op

        stats = broker.stats()
        assert stats.messages_published() == model.published
        assert stats.messages_consumed() == model.consumed
        assert stats.messages_dropped() == model.dropped
        assert stats.active_subscribers() == len(model.cursors)
        assert broker.health_check().total_queued_messages == model.head - model.tail
    finally:
        broker.force_shutdown()
