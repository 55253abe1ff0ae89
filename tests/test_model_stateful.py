"""Model-based test: a hypothesis state machine drives the real broker and a deliberately simple
model side by side, and every observable result, error and counter must match.

The model is a dict of messages per topic and an index per reader (plus, for the acknowledging
reader, the sequences it holds in flight and those waiting for redelivery); it shares nothing
with the engine's design (no ring, no cursor arrays, no at-tail counting). Operations: publish
and batch publish (to bounded topics), subscribe and unsubscribe of plain subscribers, consumer
group joins and leaves, try_receive / try_receive_batch, receive_with_ack / ack / nack (with a
bounded number of deliveries) and acks of stale handles, TTL clock advances (the engine's clock
is stepped, no sleeping), and shutdown. ``KINCIR_MODEL_EXAMPLES`` sets the number of examples.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

EXAMPLES = int(os.environ.get("KINCIR_MODEL_EXAMPLES", "1000"))
# Clock steps are multiples of 10 s: an age is never within 5 s of the TTL, whatever real time
# passes between the steps on a loaded machine.
TTL = 105.0
MAX_DELIVERIES = 3
# reader -> its topic: plain subscribers, the two members of group "g", the ack subscriber
PLAIN = {"p0": "a", "p1": "a", "p2": "b"}
MEMBERS = ("m0", "m1")
GROUP_TOPIC = "a"
ACK_TOPIC = "b"


def payload_for(topic: str, n: int) -> object:
    """The n-th payload: bytes, a dict, a tuple or an object with no equality of its own."""
    kind = n % 4
    if kind == 0:
        return f"{topic}{n}".encode()
    if kind == 1:
        return {"topic": topic, "n": n}
    if kind == 2:
        return (topic, n)
    return Opaque(n)


class Opaque:
    """A payload that equals only itself."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Opaque({self.n})"


@dataclass
class Reader:
    pos: int
    acking: bool = False
    members: int = 0  # for the group
    inflight: OrderedDict[int, int] = field(default_factory=OrderedDict)  # seq -> deliveries
    ready: list[int] = field(default_factory=list)  # redeliveries, in order
    owned: set[int] = field(default_factory=set)  # delivered, handle still valid
    # this reader's terms of the accounting identity (the first sequence it was due: ``start``)
    start: int = 0
    skips: int = 0  # settled messages of a reader that left, in [start, head): never its own
    consumed: int = 0
    dropped: int = 0
    expired: int = 0

    def hold(self) -> int:
        return min([self.pos, *self.inflight])

    def held(self, unread: int) -> int:
        """What counts against the capacity: unread plus in flight."""
        return unread + len(self.inflight)

    def check_identity(self, head: int, unread: int, name: str) -> None:
        """published = consumed + in_flight + dropped + expired + queued, for this reader."""
        terms = (self.consumed, len(self.inflight), self.dropped, self.expired, unread)
        assert head - self.start - self.skips == sum(terms), (name, head - self.start, terms)


@dataclass
class Topic:
    capacity: int | None
    stamps: dict[int, float] = field(default_factory=dict)  # seq -> publish time
    payloads: dict[int, object] = field(default_factory=dict)
    head: int = 1
    tail: int = 1
    readers: dict[str, Reader] = field(default_factory=dict)
    # the settled messages, in [tail, head), that the last acknowledging reader to leave had
    # received after its oldest unsettled one: kept for no one, skipped by every reader
    gone: set[int] = field(default_factory=set)
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    expired: int = 0
    queue_full: int = 0
    redelivered: int = 0

    def release(self) -> None:
        if self.readers:
            self.tail = max(self.tail, min(r.hold() for r in self.readers.values()))
        self.gone = {seq for seq in self.gone if seq >= self.tail}

    def unread(self, pos: int) -> int:
        """The messages from ``pos`` on (the settled ones left behind skipped)."""
        return self.head - pos - sum(1 for seq in self.gone if seq >= pos)

    def live(self, start: int, end: int) -> list[int]:
        return [seq for seq in range(start, end) if seq not in self.gone]

    def held(self) -> int:
        """Messages counted against the capacity: the most any reader holds."""
        if not self.readers:
            return self.unread(self.tail)
        return max(r.held(self.unread(r.pos)) for r in self.readers.values())

    def queued(self) -> int:
        """Messages not read yet by the reader furthest behind."""
        if not self.readers:
            return self.unread(self.tail)
        return self.unread(min(r.pos for r in self.readers.values()))

    def is_expired(self, seq: int, now: float) -> bool:
        return now - self.stamps[seq] > TTL

    def skip_expired(self, reader: Reader, now: float) -> None:
        pos = reader.pos
        while pos < self.head and self.is_expired(pos, now):
            pos += 1
        expired = len(self.live(reader.pos, pos))
        self.expired += expired
        reader.expired += expired
        reader.pos = pos
        self.release()

    def reclaim(self, now: float) -> None:
        """What a publish to a full topic does first: expire everything it can."""
        if self.readers:
            for reader in self.readers.values():
                self.skip_expired(reader, now)
        else:
            pos = self.tail
            while pos < self.head and self.is_expired(pos, now):
                pos += 1
            self.expired += len(self.live(self.tail, pos))
            self.tail = pos
            self.release()

    def subscribers(self) -> int:
        return sum(r.members if name == "g" else 1 for name, r in self.readers.items())

    def in_flight(self) -> int:
        return sum(len(r.inflight) for r in self.readers.values())


class BrokerMachine(RuleBasedStateMachine):
    k: Any  # the engine's names, set by the test

    def __init__(self) -> None:
        super().__init__()
        self.broker: Any = None

    @initialize(capacity=st.one_of(st.none(), st.integers(2, 6)))
    def start(self, capacity: int | None) -> None:
        k = self.k
        self.broker = k.InMemoryBroker(
            k.InMemoryConfig(max_queue_size=capacity, default_message_ttl=TTL, enable_stats=True)
        )
        self.pub = k.InMemoryPublisher(self.broker)
        self.plain = {name: k.InMemorySubscriber(self.broker) for name in PLAIN}
        self.members = {name: k.InMemorySubscriber(self.broker, group="g") for name in MEMBERS}
        self.acker = k.InMemoryAckSubscriber(
            self.broker, ack_timeout=1e6, max_deliveries=MAX_DELIVERIES
        )
        for name in ("a", "b"):
            self.broker.configure_topic(name)
        self.topics = {name: Topic(capacity) for name in ("a", "b")}
        self.joined: set[str] = set()  # group members currently joined
        self.handles: dict[int, Any] = {}  # seq -> the latest handle the acker got
        self.stale: list[Any] = []
        self.now = 0.0
        self.shut = False
        self.counter = 0

    def teardown(self) -> None:
        if self.broker is not None:
            self.broker.force_shutdown()

    # -- helpers --------------------------------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def expect_error(self, error: type[BaseException], call: Any) -> None:
        with pytest.raises(error):
            call()

    def check_messages(self, topic: Topic, got: list[Any], seqs: list[int], name: str) -> None:
        assert [m.sequence for m in got] == seqs, (name, [m.sequence for m in got], seqs)
        assert [m.payload for m in got] == [topic.payloads[s] for s in seqs]
        # objects travel by reference: each reader gets the published object itself
        assert all(m.payload is topic.payloads[s] for m, s in zip(got, seqs, strict=True))

    # -- publishing -----------------------------------------------------------------------------

    @rule(topic=st.sampled_from(["a", "b"]), count=st.integers(0, 4))
    def publish(self, topic: str, count: int) -> None:
        t = self.topics[topic]
        batch = [payload_for(topic, self.counter + i) for i in range(count)]
        self.counter += count
        if self.shut:  # even an empty batch: the broker's state is checked first
            self.expect_error(self.k.BrokerShutdown, lambda: self.pub.publish_nowait(topic, batch))
            return
        if not count:
            self.pub.publish_nowait(topic, batch)
            return
        if t.capacity is not None and t.held() + count > t.capacity:
            t.reclaim(self.clock())
            if t.held() + count > t.capacity:
                t.queue_full += 1
                self.expect_error(self.k.QueueFull, lambda: self.pub.publish_nowait(topic, batch))
                return
        self.pub.publish_nowait(topic, batch)
        for payload in batch:
            t.stamps[t.head] = self.clock()
            t.payloads[t.head] = payload
            t.head += 1
        t.published += count

    @rule(seconds=st.integers(1, 6).map(lambda n: n * 10))
    def advance_clock(self, seconds: int) -> None:
        self.k.core._advance_clock(seconds)
        self.now += seconds

    # -- plain subscribers ----------------------------------------------------------------------

    def _join(self, t: Topic, name: str, reader: Reader) -> None:
        reader.pos = reader.start = t.tail if not t.readers else t.head
        reader.skips = len(t.gone) if not t.readers else 0
        t.readers[name] = reader

    @rule(name=st.sampled_from(sorted(PLAIN)))
    def subscribe(self, name: str) -> None:
        topic = PLAIN[name]
        t = self.topics[topic]
        if self.shut:
            self.expect_error(self.k.BrokerShutdown, lambda: self.plain[name].subscribe(topic))
            return
        self.plain[name].subscribe(topic)
        if name not in t.readers:
            self._join(t, name, Reader(0))

    @rule(name=st.sampled_from(sorted(PLAIN)))
    def unsubscribe(self, name: str) -> None:
        topic = PLAIN[name]
        t = self.topics[topic]
        if name not in t.readers:
            self.expect_error(self.k.NotSubscribed, lambda: self.plain[name].unsubscribe(topic))
            return
        self.plain[name].unsubscribe(topic)
        del t.readers[name]
        t.release()

    def _take(self, t: Topic, reader: Reader, limit: int) -> list[int]:
        if reader.pos < t.head:
            t.skip_expired(reader, self.clock())
        seqs = t.live(reader.pos, t.head)[:limit]
        end = seqs[-1] + 1 if seqs else t.head
        while end < t.head and end in t.gone:  # no reader stops before a skipped message
            end += 1
        reader.pos = end
        if not reader.acking:  # an acknowledging reader's take is in flight: released later
            t.delivered += len(seqs)
            reader.consumed += len(seqs)
            t.release()
        return seqs

    def _receive(
        self, sub: Any, t: Topic, reader: Reader | None, limit: int, single: bool, name: str
    ) -> None:
        if reader is None:  # after shutdown, the shutdown is what a receive reports
            self.expect_error(
                self.k.BrokerShutdown if self.shut else self.k.NotSubscribed,
                lambda: sub.try_receive() if single else sub.try_receive_batch(1),
            )
            return
        seqs = self._take(t, reader, limit)
        if not seqs and self.shut:
            self.expect_error(
                self.k.BrokerShutdown,
                lambda: sub.try_receive() if single else sub.try_receive_batch(1),
            )
            return
        if single:
            got = sub.try_receive()
            self.check_messages(t, [] if got is None else [got], seqs, name)
        else:
            self.check_messages(t, sub.try_receive_batch(limit), seqs, name)

    @rule(name=st.sampled_from(sorted(PLAIN)), limit=st.integers(1, 4), single=st.booleans())
    def receive(self, name: str, limit: int, single: bool) -> None:
        t = self.topics[PLAIN[name]]
        self._receive(
            self.plain[name], t, t.readers.get(name), 1 if single else limit, single, name
        )

    # -- the consumer group ---------------------------------------------------------------------

    @rule(member=st.sampled_from(MEMBERS))
    def join_group(self, member: str) -> None:
        t = self.topics[GROUP_TOPIC]
        if self.shut:
            self.expect_error(
                self.k.BrokerShutdown, lambda: self.members[member].subscribe(GROUP_TOPIC)
            )
            return
        self.members[member].subscribe(GROUP_TOPIC)
        if member in self.joined:
            return
        self.joined.add(member)
        if "g" not in t.readers:
            self._join(t, "g", Reader(0))
        t.readers["g"].members += 1

    @rule(member=st.sampled_from(MEMBERS))
    def leave_group(self, member: str) -> None:
        t = self.topics[GROUP_TOPIC]
        if member not in self.joined:
            self.expect_error(
                self.k.NotSubscribed, lambda: self.members[member].unsubscribe(GROUP_TOPIC)
            )
            return
        self.members[member].unsubscribe(GROUP_TOPIC)
        self.joined.discard(member)
        t.readers["g"].members -= 1  # the group stays: durable

    @rule(member=st.sampled_from(MEMBERS), limit=st.integers(1, 4), single=st.booleans())
    def receive_group(self, member: str, limit: int, single: bool) -> None:
        t = self.topics[GROUP_TOPIC]
        reader = t.readers["g"] if member in self.joined else None
        self._receive(self.members[member], t, reader, 1 if single else limit, single, member)

    # -- the acknowledging subscriber -----------------------------------------------------------

    @rule()
    def ack_subscribe(self) -> None:
        t = self.topics[ACK_TOPIC]
        if self.shut:
            self.expect_error(self.k.BrokerShutdown, lambda: self.acker.subscribe(ACK_TOPIC))
            return
        self.acker.subscribe(ACK_TOPIC)
        if "k" not in t.readers:
            self._join(t, "k", Reader(0, acking=True))

    @rule()
    def ack_unsubscribe(self) -> None:
        t = self.topics[ACK_TOPIC]
        if "k" not in t.readers:
            self.expect_error(self.k.NotSubscribed, lambda: self.acker.unsubscribe(ACK_TOPIC))
            return
        self.acker.unsubscribe(ACK_TOPIC)
        reader = t.readers.pop("k")
        self.stale.extend(self.handles[s] for s in reader.owned)
        self.handles.clear()
        if not t.readers:  # the last reader: its unsettled messages stay, the settled ones go
            t.gone.update(t.live(t.tail, reader.pos))
            t.gone.difference_update(reader.inflight)
        t.release()

    @rule()
    def receive_with_ack(self) -> None:
        t = self.topics[ACK_TOPIC]
        reader = t.readers.get("k")
        if reader is None:
            self.expect_error(
                self.k.BrokerShutdown if self.shut else self.k.NotSubscribed,
                self.acker.try_receive_with_ack,
            )
            return
        while reader.ready and t.is_expired(reader.ready[0], self.clock()):
            # a redelivery past the TTL is settled as expired, not delivered
            del reader.inflight[reader.ready.pop(0)]
            t.expired += 1
            reader.expired += 1
            t.release()
        if reader.ready:
            seq = reader.ready.pop(0)
            t.redelivered += 1
        else:
            seqs = self._take(t, reader, 1)
            if not seqs:
                if self.shut and not reader.inflight:
                    self.expect_error(self.k.BrokerShutdown, self.acker.try_receive_with_ack)
                else:  # while its messages are unsettled one may come back: the reader waits
                    assert self.acker.try_receive_with_ack() is None
                return
            seq = seqs[0]
            reader.inflight[seq] = 0
            t.release()
        reader.inflight[seq] += 1
        reader.owned.add(seq)
        msg, handle = self.acker.try_receive_with_ack()
        self.check_messages(t, [msg], [seq], "ack")
        assert handle.delivery_count == reader.inflight[seq]
        assert handle.is_retry == (reader.inflight[seq] > 1)
        self.handles[seq] = handle

    @precondition(
        lambda self: any(
            self.topics[ACK_TOPIC].readers.get("k")
            and s in self.topics[ACK_TOPIC].readers["k"].owned
            for s in self.handles
        )
    )
    @rule(data=st.data(), requeue=st.booleans())
    def settle(self, data: st.DataObject, requeue: bool) -> None:
        t = self.topics[ACK_TOPIC]
        reader = t.readers["k"]
        seq = data.draw(st.sampled_from(sorted(reader.owned)))
        handle = self.handles.pop(seq)
        reader.owned.discard(seq)
        self.stale.append(handle)
        if data.draw(st.booleans(), label="ack"):
            self.acker.ack(handle)
            del reader.inflight[seq]
            t.delivered += 1  # consumed once settled
            reader.consumed += 1
        else:
            self.acker.nack(handle, requeue)
            if requeue and reader.inflight[seq] < MAX_DELIVERIES:
                reader.ready.append(seq)
            else:
                del reader.inflight[seq]
                t.dropped += 1  # no dead-letter topic: dropped and counted
                reader.dropped += 1
        t.release()

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data())
    def ack_stale_handle(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.stale))
        self.expect_error(self.k.AckError, lambda: self.acker.ack(handle))

    # -- shutdown -------------------------------------------------------------------------------

    @precondition(lambda self: not self.shut)
    @rule()
    def shutdown(self) -> None:
        self.broker.shutdown()
        self.shut = True

    # -- what must hold after every step --------------------------------------------------------

    @invariant()
    def observables_match(self) -> None:
        if self.broker is None:
            return
        for name, t in self.topics.items():
            info = self.broker.topic_info(name)
            assert info.queue_size == t.queued(), (name, info, t)
            assert info.next_sequence == t.head, name
            assert info.subscriber_count == t.subscribers(), name
            assert info.total_published == t.published, name
            assert info.total_consumed == t.delivered, name
            assert info.total_dropped == t.dropped, name
            assert info.total_expired == t.expired, name
            assert info.queue_full_errors == t.queue_full, name
            assert info.in_flight == t.in_flight(), name
            assert info.total_redelivered == t.redelivered, name
            for reader_name, reader in t.readers.items():
                reader.check_identity(t.head, t.unread(reader.pos), reader_name)
            only = list(t.readers.values())
            if len(only) == 1 and (
                only[0].start,
                only[0].consumed,
                only[0].dropped,
                only[0].expired,
            ) == (
                1,
                t.delivered,
                t.dropped,
                t.expired,
            ):  # one reader since the start (and every event its own): the identity reads from
                # the topic's stats alone
                assert info.total_published == (
                    info.total_consumed
                    + info.in_flight
                    + info.total_dropped
                    + info.total_expired
                    + info.queue_size
                ), (name, info)
        stats = self.broker.stats()
        assert stats.messages_published() == sum(t.published for t in self.topics.values())
        assert stats.messages_in_flight() == sum(t.in_flight() for t in self.topics.values())
        health = self.broker.health_check()
        assert health.total_queued_messages == sum(t.queued() for t in self.topics.values())
        assert health.is_healthy == (not self.shut)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_broker_matches_the_model(k):
    machine = type("BrokerMachine_" + k.impl, (BrokerMachine,), {"k": k})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
