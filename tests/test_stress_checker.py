"""The history checker of the concurrency stress tests (test_stress_scenarios.py), and the
checker's own tests.

Producers stamp every message with ``(producer, index)`` in its payload; every reader records what
it got. ``History.check`` then reports, for each reader and each unit of delivery (a plain
subscriber, or a consumer group as a whole):

- *lost*: published but never received (for a group: by no member);
- *duplicated*: received more than once (for a group: by two members, or twice by one);
- *reordered*: one producer's messages on a topic out of publish order, within one reader;
- *out of sequence*: a reader's sequence numbers on a topic not strictly increasing;
- *inconsistent*: one (topic, sequence) carrying different messages for different readers;
- *unexpected*: a message nobody published;
- *sequence*: a gap in a topic's sequence numbers 1..N (every reader joined before the first
  publish), or a number beyond them;
- *redelivery* (acknowledging groups): redeliveries != nacks + missed ack deadlines;

and the accounting: per topic, published = delivered + dropped + expired + queued for every unit,
``total_consumed`` = recorded deliveries, ``total_redelivered``, ``next_sequence``, nothing left
queued or in flight, ``stats()`` = the sum over topics; checked at the end and, by a sampling
thread, while the run goes on (counters never go back, capacity holds, no reader ahead of the
publishers). A hang fails with what each topic holds and each reader got. A failure message
lists the first problems of each kind.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

SHOW = 12  # problems listed in a failure message


def stamp(producer: int, index: int) -> bytes:
    return b"%d:%d" % (producer, index)


# -- the history checker ------------------------------------------------------------------------


@dataclass
class Reader:
    """What one reader (a subscriber, or one member of a group) got, in the order it got it.

    ``got`` holds delivered messages (plain readers). An acknowledging reader instead records
    ``deliveries`` as (message, delivery_count), the messages it ``acked``, and how many of
    its deliveries it nacked, abandoned or settled too late (each is redelivered once).
    A record is the delivered message itself (appending costs no allocation); the checker reads
    (topic, sequence, producer, index) from it: ``topic``, ``sequence`` and the payload's stamp.
    """

    name: str
    unit: str  # the unit of delivery: the reader's own name, or its group's
    topics: tuple[str, ...]
    acking: bool = False
    got: list[Any] = field(default_factory=list)
    deliveries: list[tuple[Any, int]] = field(default_factory=list)
    acked: list[Any] = field(default_factory=list)
    nacks: int = 0  # requeued by nack
    abandoned: int = 0  # never settled: redelivered by the ack deadline
    stale: int = 0  # settled too late (AckError): redelivered by the ack deadline


class History:
    """Every published stamp and every reader's record; ``check`` says what went wrong."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.published: dict[int, list[tuple[str, int]]] = defaultdict(list)
        self.readers: list[Reader] = []
        self.problems: list[str] = []  # found while the run went on (samplers)
        self._lock = threading.Lock()

    # -- recording --

    def producer(self, producer: int) -> list[tuple[str, int]]:
        """The list producer ``producer`` extends with (topic, index) once a publish returned."""
        return self.published[producer]

    def reader(
        self, name: str, topics: tuple[str, ...], group: str | None = None, acking: bool = False
    ) -> Reader:
        unit = f"group {group}" if group is not None else name
        reader = Reader(name, unit, topics, acking)
        with self._lock:
            self.readers.append(reader)
        return reader

    def note(self, problem: str) -> None:
        with self._lock:
            self.problems.append(problem)

    # -- checking --

    def units(self) -> dict[str, list[Reader]]:
        units: dict[str, list[Reader]] = defaultdict(list)
        for reader in self.readers:
            units[reader.unit].append(reader)
        return units

    def expected(self) -> dict[str, set[tuple[int, int]]]:
        by_topic: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for producer, sent in self.published.items():
            for topic, index in sent:
                by_topic[topic].add((producer, index))
        return by_topic

    def find_problems(self, broker: Any = None) -> list[str]:
        problems = list(self.problems)
        expected = self.expected()
        for producer, sent in self.published.items():
            if len(set(sent)) != len(sent):
                problems.append(f"test bug: producer {producer} recorded a stamp twice")
        identity: dict[tuple[str, int], tuple[int, int, str]] = {}
        for unit, readers in self.units().items():
            topics = readers[0].topics
            received: Counter[tuple[str, int, int]] = Counter()
            for reader in readers:
                if reader.acking:
                    # redeliveries come before new messages: order holds for first deliveries
                    self._check_order(
                        reader, [m for m, c in reader.deliveries if c == 1], identity, problems
                    )
                    self._check_order(
                        reader,
                        [m for m, c in reader.deliveries if c > 1],
                        identity,
                        problems,
                        order=False,
                    )
                    records = reader.acked
                else:
                    self._check_order(reader, reader.got, identity, problems)
                    records = reader.got
                for msg in records:
                    producer, index = parse(msg)
                    received[(msg.topic, producer, index)] += 1
            what = "acked" if readers[0].acking else "received"
            for topic in topics:
                for producer, index in sorted(expected.get(topic, ())):
                    count = received.pop((topic, producer, index), 0)
                    if count == 0:
                        problems.append(f"lost: {unit} never {what} {topic} {producer}:{index}")
                    elif count > 1:
                        problems.append(
                            f"duplicated: {unit} {what} {topic} {producer}:{index} {count} times"
                        )
            for (topic, producer, index), count in sorted(received.items()):
                problems.append(
                    f"unexpected: {unit} {what} {topic} {producer}:{index} ({count}x), "
                    "which no producer published (to that topic)"
                )
            if readers[0].acking:
                self._check_redeliveries(unit, readers, problems)
        # Every reader joined before the first publish: together they saw sequences 1..N.
        numbers: dict[str, set[int]] = defaultdict(set)
        for topic, seq in identity:
            numbers[topic].add(seq)
        for topic, sent in sorted(expected.items()):
            seen = numbers.get(topic, set())
            for seq in sorted(set(range(1, len(sent) + 1)) - seen):
                problems.append(f"sequence: no reader got {topic} sequence {seq}")
            for seq in sorted(n for n in seen if not 1 <= n <= len(sent)):
                problems.append(
                    f"sequence: {topic} sequence {seq} is outside 1..{len(sent)}, "
                    f"the {len(sent)} messages published"
                )
        if broker is not None:
            self._check_accounting(broker, expected, problems)
        return problems

    @staticmethod
    def _check_order(
        reader: Reader,
        messages: list[Any],
        identity: dict[tuple[str, int], tuple[int, int, str]],
        problems: list[str],
        order: bool = True,
    ) -> None:
        """Each (topic, sequence) is one message for every reader; with ``order``, per topic
        the sequences strictly increase and, per producer, so do the indices."""
        last_seq: dict[str, int] = {}
        last_index: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, seq = msg.topic, msg.sequence
            producer, index = parse(msg)
            seen = identity.setdefault((topic, seq), (producer, index, reader.name))
            if seen[:2] != (producer, index):
                problems.append(
                    f"inconsistent: {topic} sequence {seq} is {producer}:{index} "
                    f"for {reader.name} but {seen[0]}:{seen[1]} for {seen[2]}"
                )
            if not order:
                continue
            before = last_seq.get(topic, 0)
            if seq <= before:
                problems.append(
                    f"out of sequence: {reader.name} got {topic} sequence {seq} after {before}"
                )
            last_seq[topic] = seq
            previous = last_index.get((topic, producer), -1)
            if index <= previous:
                problems.append(
                    f"reordered: {reader.name} got {topic} {producer}:{index} "
                    f"after {producer}:{previous}"
                )
            last_index[(topic, producer)] = index

    @staticmethod
    def _check_redeliveries(unit: str, readers: list[Reader], problems: list[str]) -> None:
        nacks = sum(r.nacks for r in readers)
        expired = sum(r.abandoned + r.stale for r in readers)
        redelivered = sum(1 for r in readers for _, count in r.deliveries if count > 1)
        if redelivered != nacks + expired:
            problems.append(
                f"redelivery: {unit} nacked {nacks} and let {expired} deadlines pass, but got "
                f"{redelivered} redeliveries (each must be redelivered once)"
            )

    def _check_accounting(
        self, broker: Any, expected: dict[str, set[tuple[int, int]]], problems: list[str]
    ) -> None:
        units = self.units()
        totals = Counter[str]()
        for info in broker.list_topic_info():
            topic = info.name
            readers = [rs for rs in units.values() if topic in rs[0].topics]
            published = len(expected.get(topic, ()))
            first = sum(
                sum(1 for m, c in r.deliveries if c == 1 and m.topic == topic)
                if r.acking
                else sum(1 for m in r.got if m.topic == topic)
                for rs in readers
                for r in rs
            )
            redelivered = sum(
                1
                for rs in readers
                for r in rs
                for m, c in r.deliveries
                if c > 1 and m.topic == topic
            )
            where = f"accounting of {topic}:"
            if info.next_sequence != published + 1:
                problems.append(
                    f"{where} next_sequence={info.next_sequence} after {published} messages"
                )
            if info.total_published != published:
                problems.append(
                    f"{where} total_published={info.total_published}, producers "
                    f"published {published}"
                )
            if info.total_consumed != first:
                problems.append(
                    f"{where} total_consumed={info.total_consumed}, readers "
                    f"recorded {first} deliveries (redeliveries aside)"
                )
            if info.total_redelivered != redelivered:
                problems.append(
                    f"{where} total_redelivered={info.total_redelivered}, readers "
                    f"recorded {redelivered} redeliveries"
                )
            # The check runs once every reader drained its topics: nothing is still queued
            # or in flight, so published = delivered + dropped + expired for every reader.
            if info.queue_size or info.in_flight:
                problems.append(
                    f"{where} queue_size={info.queue_size} in_flight="
                    f"{info.in_flight} after every reader drained the topic"
                )
            accounted = info.total_consumed + info.total_dropped + info.total_expired
            if accounted != len(readers) * published:
                problems.append(
                    f"{where} {len(readers)} readers x {published} published != consumed "
                    f"{info.total_consumed} + dropped {info.total_dropped} + expired "
                    f"{info.total_expired} (+ queued 0)"
                )
            for name in (
                "total_published",
                "total_consumed",
                "total_dropped",
                "total_expired",
                "total_redelivered",
            ):
                totals[name] += getattr(info, name)
        stats = broker.stats()
        if stats is not None:
            for name, value in (
                ("total_published", stats.messages_published()),
                ("total_consumed", stats.messages_consumed()),
                ("total_dropped", stats.messages_dropped()),
                ("total_expired", stats.messages_expired()),
                ("total_redelivered", stats.messages_redelivered()),
            ):
                if value != totals[name]:
                    problems.append(
                        f"accounting: stats() says {value} for {name}, the topics "
                        f"sum to {totals[name]}"
                    )
            if stats.messages_in_flight():
                problems.append(f"accounting: stats() in flight {stats.messages_in_flight()}")

    def check(self, broker: Any = None) -> None:
        problems = self.find_problems(broker)
        if problems:
            kinds = Counter(p.split(":", 1)[0] for p in problems)
            summary = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common())
            shown = "\n  ".join(first_of_each_kind(problems, SHOW))
            more = f"\n  ... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
            pytest.fail(
                f"{len(problems)} problems (seed {self.seed}; {summary}):\n  {shown}{more}",
                pytrace=False,
            )

    # -- waiting --

    def state(self, broker: Any) -> str:
        """What each topic holds and each reader got: the diagnosis of a hang."""
        topics = "; ".join(
            f"{i.name}: published={i.total_published} consumed={i.total_consumed} "
            f"queue_size={i.queue_size} in_flight={i.in_flight}"
            for i in broker.list_topic_info()
        )
        readers = ", ".join(
            f"{r.name}: {len(r.acked) if r.acking else len(r.got)}" for r in self.readers
        )
        sent = sum(len(p) for p in self.published.values())
        return f"{sent} published; topics: {topics}; readers (got or acked) {readers}"

    def join(self, broker: Any, workers: list[Any], timeout: float) -> None:
        """Join ``workers``, re-raising their errors; a hang fails with the broker's state."""
        for worker in workers:
            try:
                worker.join(timeout)
            except AssertionError as exc:
                if not worker.is_alive():
                    raise
                first = str(exc).splitlines()[0]
                raise AssertionError(f"hang: {first}; {self.state(broker)}") from None

    def run(self, k: Any, broker: Any, coro: Any, timeout: float) -> Any:
        """``k.run`` (asyncio.run with a hang guard); a hang fails with the broker's state."""
        try:
            return k.run(coro, timeout)
        except AssertionError as exc:
            if "still running" not in str(exc):
                raise
            raise AssertionError(f"hang: {exc}; {self.state(broker)}") from None

    # -- sampling while the run goes on --

    @contextlib.contextmanager
    def sampling(
        self,
        k: Any,
        broker: Any,
        topics: tuple[str, ...],
        readers: dict[str, int],
        capacity: int | None,
    ) -> Iterator[None]:
        """While the block runs, a thread snapshots each topic and checks that its counters
        never go back, capacity holds, and no reader got more than was published."""
        stop = threading.Event()
        worker = k.spawn(self._sampler(broker, topics, readers, capacity, stop))
        try:
            yield
        finally:
            stop.set()
            worker.join(60)

    def _sampler(
        self,
        broker: Any,
        topics: tuple[str, ...],
        readers: dict[str, int],
        capacity: int | None,
        stop: threading.Event,
    ) -> Callable[[], int]:
        def run() -> int:
            last: dict[str, tuple[int, ...]] = {}
            samples = 0
            while not stop.is_set():
                for topic in topics:
                    try:
                        info = broker.topic_info(topic)
                    except LookupError:  # not created yet
                        continue
                    samples += 1
                    now = (
                        info.total_published,
                        info.total_consumed,
                        info.total_dropped,
                        info.total_expired,
                        info.total_redelivered,
                    )
                    before = last.get(topic, now)
                    if any(a < b for a, b in zip(now, before, strict=True)):
                        self.note(f"sampled: {topic} counters went back from {before} to {now}")
                    last[topic] = now
                    if capacity is not None and info.queue_size > capacity:
                        self.note(
                            f"sampled: {topic} queue_size {info.queue_size} over the "
                            f"capacity {capacity}"
                        )
                    # in flight is its own term (issue 12): a reader holds its queued and its
                    # in-flight messages, and each message is in one term only, so the terms
                    # never add up to more than was published (the ack layer counts a drop
                    # or a dead letter just after it settles: equality is checked at the end)
                    held = info.queue_size + info.in_flight
                    if capacity is not None and readers[topic] == 1 and held > capacity:
                        self.note(
                            f"sampled: {topic} queue_size {info.queue_size} + in_flight "
                            f"{info.in_flight} over the capacity {capacity}"
                        )
                    delivered = (
                        info.total_consumed
                        + info.total_dropped
                        + info.total_expired
                        + info.in_flight
                        + (info.queue_size if readers[topic] == 1 else 0)
                    )
                    if delivered > readers[topic] * info.total_published:
                        self.note(
                            f"sampled: {topic} consumed+dropped+expired+in_flight(+queued) "
                            f"{delivered} > {readers[topic]} readers x {info.total_published} "
                            "published"
                        )
                time.sleep(0.002)
            return samples

        return run


def first_of_each_kind(problems: list[str], count: int) -> list[str]:
    """Up to ``count`` problems, taking the first of every kind in turn (one kind with thousands
    of problems must not hide the others)."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        by_kind[problem.split(":", 1)[0]].append(problem)
    shown: list[str] = []
    for rank in range(count):
        for kind_problems in by_kind.values():
            if rank < len(kind_problems) and len(shown) < count:
                shown.append(kind_problems[rank])
    return shown


def parse(msg: Any) -> tuple[int, int]:
    producer, index = msg.payload.split(b":")
    return int(producer), int(index)


# -- the checker itself -------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeMessage:
    topic: str
    sequence: int
    payload: bytes


def test_the_checker_names_every_kind_of_problem() -> None:
    history = History()
    history.producer(0).extend(("t", i) for i in range(4))
    history.producer(1).extend(("t", i) for i in range(2))
    # 0:0..3 and 1:0..1 were published as t/1..6: 0:0 0:1 1:0 0:2 1:1 0:3
    seq = {(0, 0): 1, (0, 1): 2, (1, 0): 3, (0, 2): 4, (1, 1): 5, (0, 3): 6}

    def msg(p: int, i: int, sequence: int | None = None) -> FakeMessage:
        number = seq.get((p, i), 99) if sequence is None else sequence
        return FakeMessage("t", number, stamp(p, i))

    good = history.reader("good", ("t",))
    good.got.extend(msg(p, i) for p, i in sorted(seq, key=seq.__getitem__))
    bad = history.reader("bad", ("t",))
    # lost 0:3; 1:0 twice; 0:2 before 0:1 (so sequence 4 before 2); 1:1 claims sequence 6;
    # 7:7 was never published (and has a sequence number beyond the 6 published)
    bad.got.extend([msg(0, 0), msg(1, 0), msg(1, 0), msg(0, 2), msg(0, 1), msg(1, 1, 6), msg(7, 7)])
    members = [history.reader(f"m{i}", ("t",), group="g") for i in range(2)]
    members[0].got.extend([msg(0, 0), msg(1, 0), msg(0, 3)])
    members[1].got.extend([msg(0, 1), msg(0, 2), msg(1, 1), msg(0, 3)])  # 0:3 twice in the group
    problems = history.find_problems()
    kinds = Counter(p.split(":", 1)[0] for p in problems)
    assert kinds == {
        "lost": 1,
        "duplicated": 2,
        "out of sequence": 2,
        "reordered": 2,
        "inconsistent": 1,
        "unexpected": 1,
        "sequence": 1,
    }, problems
    assert "duplicated: group g received t 0:3 2 times" in problems
    assert "inconsistent: t sequence 6 is 1:1 for bad but 0:3 for good" in problems
    assert not [p for p in problems if p.split(": ", 1)[1].startswith(("good", "m0", "m1"))]
    with pytest.raises(pytest.fail.Exception, match=r"10 problems .*lost: 1"):
        history.check()


def test_the_checker_compares_the_broker_accounting(k: Any) -> None:
    broker = k.new_broker(enable_stats=True)
    sub = k.subscriber(broker, "t")
    history = History()
    k.InMemoryPublisher(broker).publish_sync("t", [stamp(0, i) for i in range(3)])
    history.producer(0).extend(("t", i) for i in range(3))
    reader = history.reader("sub", ("t",))
    reader.got.extend(sub.try_receive_batch(2))
    assert history.find_problems(broker) == [
        "lost: sub never received t 0:2",
        "sequence: no reader got t sequence 3",
        "accounting of t: queue_size=1 in_flight=0 after every reader drained the topic",
        "accounting of t: 1 readers x 3 published != consumed 2 + dropped 0 + expired 0 "
        "(+ queued 0)",
    ]
    reader.got.extend(sub.try_receive_batch(2))
    assert history.find_problems(broker) == []
