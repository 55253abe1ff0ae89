"""Concurrency stress, judged by a history checker.

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

Scenarios, each against both engines:

(a) threads: 4 producers, 2 fan-out subscribers and a 3-member group, ``block`` policy, capacity 64;
(b) asyncio: producer and consumer tasks on one loop, publishes and receives under random
    ``wait_for`` timeouts and random cancellation (a cancelled call loses and writes nothing);
(c) producer threads + consumers on two event loops in their own threads + blocking consumers,
    over two topics;
(d) an acknowledging group of 3 (two threads, one asyncio task) with random nacks and a few
    deliveries left to their ack deadline: every message acked exactly once, every nack and
    missed deadline redelivered exactly once.

Each runs under ``sys.setswitchinterval(1e-6)`` to shake the thread schedules. Sizes: 50,000
messages per scenario with the compiled engine and half of that with the pure-Python twin (it is
about twice as slow here, and the file must stay under a minute for both engines on two cores);
``pytest --stress`` raises every scenario to 1,000,000 messages on both engines. No assertion is
timed: the generous ``hang`` timeouts only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

DEFAULT_MESSAGES = 50_000
STRESS_MESSAGES = 1_000_000
TWIN_DIVISOR = 2  # the pure-Python twin runs half the default size (not under --stress)
SHOW = 12  # problems listed in a failure message


# -- sizes and schedule shaking -----------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    total: int  # messages per scenario
    hang: float  # seconds after which a thread, loop or wait counts as hung
    seed: int


@pytest.fixture
def size(k: Any, request: pytest.FixtureRequest) -> Size:
    stress = bool(request.config.getoption("--stress"))
    total = STRESS_MESSAGES if stress else DEFAULT_MESSAGES
    if k.impl == "python" and not stress:
        total //= TWIN_DIVISOR
    seed = random.randrange(1 << 30)
    return Size(total=total, hang=60.0 + total / 500, seed=seed)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


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


class Countdown:
    """Sets ``done`` when ``arrive`` has been called ``count`` times."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = threading.Event()
        self._lock = threading.Lock()

    def arrive(self) -> None:
        with self._lock:
            self.count -= 1
            if self.count == 0:
                self.done.set()


# -- producers and consumers --------------------------------------------------------------------


def produce_sync(
    k: Any,
    broker: Any,
    history: History,
    producer: int,
    topics: tuple[str, ...],
    count: int,
    size: Size,
    start: threading.Barrier | None = None,
) -> None:
    """Publish ``count`` stamped messages from this thread, in random batches of 1..8 spread
    over ``topics``; a publish that returned is recorded."""
    rng = random.Random(size.seed * 1000 + producer)
    pub = k.InMemoryPublisher(broker)
    sent = history.producer(producer)
    if start is not None:
        start.wait()
    index = 0
    while index < count:
        n = min(count - index, rng.randint(1, 8))
        topic = rng.choice(topics)
        batch = [stamp(producer, i) for i in range(index, index + n)]
        if rng.random() < 0.1:
            batch = [k.Message(p) for p in batch]  # the Message path too
        pub.publish_sync(topic, batch, timeout=size.hang)
        sent.extend((topic, i) for i in range(index, index + n))
        index += n


async def produce_async(
    k: Any,
    broker: Any,
    history: History,
    producer: int,
    topics: tuple[str, ...],
    count: int,
    size: Size,
) -> int:
    """Publish from a task; each publish is raced by a random short ``wait_for`` timeout, and a
    timed-out (cancelled) publish must have written nothing, so it is simply retried."""
    rng = random.Random(size.seed * 1000 + producer)
    pub = k.InMemoryPublisher(broker)
    sent = history.producer(producer)
    index = 0
    timeouts = 0
    while index < count:
        n = min(count - index, rng.randint(1, 8))
        topic = rng.choice(topics)
        batch = [stamp(producer, i) for i in range(index, index + n)]
        if rng.random() < 0.3:
            try:
                await asyncio.wait_for(
                    pub.publish(topic, batch, timeout=size.hang), rng.choice((0, 1e-5, 1e-4, 1e-3))
                )
            except TimeoutError:
                timeouts += 1
                continue
        else:
            await pub.publish(topic, batch, timeout=size.hang)
        sent.extend((topic, i) for i in range(index, index + n))
        index += n
        if rng.random() < 0.2:
            await asyncio.sleep(0)
    return timeouts


def consume_sync(sub: Any, reader: Reader, done: threading.Event, seed: int) -> None:
    """Read on this thread until ``done`` is set and nothing is left."""
    rng = random.Random(seed)
    got = reader.got
    while True:
        finished = done.is_set()  # before the receive: then a timeout means nothing is left
        try:
            if rng.random() < 0.1:
                got.append(sub.receive_sync(timeout=0.2))
            else:
                got.extend(sub.receive_batch_sync(rng.randint(1, 128), timeout=0.2))
        except TimeoutError:
            if finished:
                return


async def consume_async(sub: Any, reader: Reader, done: threading.Event, seed: int) -> Counter[str]:
    """Read on this task until ``done`` is set and nothing is left; each receive is a random
    flavour: a plain await, a built-in timeout, ``asyncio.wait_for`` with a random short timeout,
    or a task cancelled after a random number of loop iterations."""
    rng = random.Random(seed)
    got = reader.got
    outcomes: Counter[str] = Counter()
    while True:
        if done.is_set():
            batch = sub.try_receive_batch(256)
            if not batch:
                return outcomes
            got.extend(batch)
            continue
        limit = rng.randint(1, 64)
        single = rng.random() < 0.3
        mode = rng.random()
        try:
            if mode < 0.35:
                call = sub.receive() if single else sub.receive_batch(limit)
                result = await asyncio.wait_for(call, rng.choice((0, 1e-5, 1e-4, 1e-3, 1e-2)))
            elif mode < 0.7:
                task = asyncio.ensure_future(sub.receive() if single else sub.receive_batch(limit))
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                task.cancel()
                await asyncio.wait({task})
                if task.cancelled():
                    outcomes["cancelled"] += 1
                    continue
                result = task.result()
            else:
                # bounded: a receive with no timeout would wait forever once all is read
                timeout = rng.choice((1e-4, 1e-3, 0.05))
                if single:
                    result = await sub.receive(timeout=timeout)
                else:
                    result = await sub.receive_batch(limit, timeout=timeout)
        except TimeoutError:
            outcomes["timeout"] += 1
            continue
        outcomes["received"] += 1
        if isinstance(result, list):
            got.extend(result)
        else:
            got.append(result)


# -- the scenarios ------------------------------------------------------------------------------


def fan_out_and_group(
    k: Any, broker: Any, history: History, topic: str
) -> list[tuple[Any, Reader]]:
    """2 fan-out subscribers and a 3-member group ``workers`` on ``topic``, each with its reader."""
    consumers = []
    for i in range(2):
        sub = k.InMemorySubscriber(broker)
        sub.subscribe(topic)
        consumers.append((sub, history.reader(f"fan-out {i}", (topic,))))
    for i in range(3):
        sub = k.InMemorySubscriber(broker, group="workers")
        sub.subscribe(topic)
        consumers.append((sub, history.reader(f"workers member {i}", (topic,), "workers")))
    return consumers


def test_threads_fan_out_and_group_under_block(k: Any, size: Size, fast_switching: None) -> None:
    """(a) 4 producer threads; 2 fan-out subscribers and a 3-member group on threads; capacity 64
    under ``block``: each fan-out subscriber gets every message once, in per-producer order, and
    the group collectively gets each once."""
    topic = "stress.a"
    capacity = 64
    broker = k.new_broker(max_queue_size=capacity, overflow="block", enable_stats=True)
    history = History(size.seed)
    done = threading.Event()
    consumers = fan_out_and_group(k, broker, history, topic)
    with history.sampling(k, broker, (topic,), {topic: 3}, capacity):
        readers = [
            k.spawn(consume_sync, sub, reader, done, size.seed + i)
            for i, (sub, reader) in enumerate(consumers)
        ]
        start = threading.Barrier(4, timeout=size.hang)
        producers = [
            k.spawn(produce_sync, k, broker, history, p, (topic,), n, size, start)
            for p, n in enumerate(split(size.total, 4))
        ]
        try:
            history.join(broker, producers, size.hang)
        finally:
            done.set()
        history.join(broker, readers, size.hang)
    history.check(broker)


def test_asyncio_tasks_with_timeouts_and_cancellation(
    k: Any, size: Size, fast_switching: None
) -> None:
    """(b) One loop: 4 producer tasks (publishes raced by ``wait_for``), 2 fan-out subscribers
    and a 3-member group read by tasks whose receives time out and are cancelled at random:
    nothing lost, nothing duplicated, nothing published twice."""
    topic = "stress.b"
    broker = k.new_broker(max_queue_size=64, overflow="block", enable_stats=True)
    history = History(size.seed)
    done = threading.Event()
    consumers = fan_out_and_group(k, broker, history, topic)

    async def main() -> Counter[str]:
        readers = [
            asyncio.ensure_future(consume_async(sub, reader, done, size.seed + i))
            for i, (sub, reader) in enumerate(consumers)
        ]
        try:
            timeouts = await asyncio.gather(
                *(
                    produce_async(k, broker, history, p, (topic,), n, size)
                    for p, n in enumerate(split(size.total, 4))
                )
            )
        finally:
            done.set()
        outcomes = sum((await asyncio.gather(*readers)), Counter())
        outcomes["publish timeout"] = sum(timeouts)
        return outcomes

    outcomes = history.run(k, broker, main(), size.hang)
    history.check(broker)
    # the chaos happened (not a timing assertion: the test decides what it cancels)
    assert outcomes["cancelled"] > 0 and outcomes["received"] > 0, outcomes


def test_threads_and_two_event_loops(k: Any, size: Size, fast_switching: None) -> None:
    """(c) Over two topics: 3 producer threads and a producer task; consumers on two event loops
    in their own threads (a fan-out subscriber and a group member on each) and on blocking
    threads (a fan-out subscriber and a group member). Publishes from threads wake the loops."""
    topics = ("stress.c.x", "stress.c.y")
    capacity = 128
    broker = k.new_broker(max_queue_size=capacity, overflow="block", enable_stats=True)
    history = History(size.seed)
    producers_left = Countdown(4)
    done = producers_left.done

    def subscriber(name: str, group: str | None = None) -> tuple[Any, Reader]:
        sub = k.InMemorySubscriber(broker, group=group)
        for t in topics:
            sub.subscribe(t)
        return sub, history.reader(name, topics, group)

    loop_consumers = {
        "loop 1": [subscriber("loop 1 fan-out"), subscriber("loop 1 member", "mixed")],
        "loop 2": [subscriber("loop 2 fan-out"), subscriber("loop 2 member", "mixed")],
    }
    thread_consumers = [subscriber("thread fan-out"), subscriber("thread member", "mixed")]
    counts = split(size.total, 4)

    async def loop_main(name: str, produce: bool) -> None:
        tasks = [
            consume_async(sub, reader, done, size.seed + 10 * int(name[-1]) + i)
            for i, (sub, reader) in enumerate(loop_consumers[name])
        ]
        if produce:

            async def producer() -> None:
                try:
                    await produce_async(k, broker, history, 3, topics, counts[3], size)
                finally:
                    producers_left.arrive()

            tasks.append(producer())
        await asyncio.gather(*tasks)

    def producer_thread(p: int) -> None:
        try:
            produce_sync(k, broker, history, p, topics, counts[p], size)
        finally:
            producers_left.arrive()

    with history.sampling(k, broker, topics, dict.fromkeys(topics, 4), capacity):
        loops = [
            k.spawn(k.run, loop_main("loop 1", True), size.hang),
            k.spawn(k.run, loop_main("loop 2", False), size.hang),
        ]
        blocking = [
            k.spawn(consume_sync, sub, reader, done, size.seed + 50 + i)
            for i, (sub, reader) in enumerate(thread_consumers)
        ]
        producers = [k.spawn(producer_thread, p) for p in range(3)]
        history.join(broker, [*producers, *loops, *blocking], size.hang)
    history.check(broker)


def test_acknowledging_group_with_random_nacks(k: Any, size: Size, fast_switching: None) -> None:
    """(d) 2 producer threads; an acknowledging group of 3 (two threads, one asyncio task)
    settles in random batches, nacking ~20% and abandoning a few deliveries to their ack
    deadline: every message is acked exactly once, every nack and every missed deadline is
    redelivered exactly once, nothing stays in flight."""
    topic = "stress.d"
    capacity = 64
    broker = k.new_broker(max_queue_size=capacity, overflow="block", enable_stats=True)
    history = History(size.seed)
    total = size.total
    # An abandoned delivery holds the group's oldest slot until its deadline, so the topic fills
    # and stalls for up to ack_timeout: keep them few (about 8 a run, whatever the size).
    ack_timeout = 0.25
    abandon = 6 / total
    members = []
    for i in range(3):
        sub = k.InMemoryAckSubscriber(
            broker, group="ackers", ack_timeout=ack_timeout, max_deliveries=None
        )
        sub.subscribe(topic)
        members.append((sub, history.reader(f"ackers member {i}", (topic,), "ackers", True)))
    lock = threading.Lock()
    acked_keys: set[tuple[int, int]] = set()
    all_acked = threading.Event()

    def settle_some(
        sub: Any, reader: Reader, pairs: list[tuple[Any, Any]], ack: bool, rng: random.Random
    ) -> list[tuple[Any, Any]]:
        """Settle ``pairs`` in a batch or one by one; return those settled. A handle held past
        its deadline whose message was redelivered meanwhile is stale: AckError, counted."""
        if not pairs:
            return []
        if len(pairs) > 1 and rng.random() < 0.5:
            try:
                (sub.ack_batch if ack else sub.nack_batch)([h for _, h in pairs])
                return pairs
            except k.AckError:
                pass  # a batch with a stale handle settles none of them: one by one
        settled = []
        for pair in pairs:
            try:
                (sub.ack if ack else sub.nack)(pair[1])
            except k.AckError:
                reader.stale += 1
            else:
                settled.append(pair)
        return settled

    def settle(
        sub: Any,
        reader: Reader,
        held: list[tuple[Any, Any]],
        rng: random.Random,
        final: bool = False,
    ) -> None:
        acks, nacks = [], []
        for pair in held:
            roll = 1.0 if final else rng.random()
            if roll < abandon:
                reader.abandoned += 1
            elif roll < 0.2:
                nacks.append(pair)
            else:
                acks.append(pair)
        held.clear()
        reader.nacks += len(settle_some(sub, reader, nacks, False, rng))
        acked = settle_some(sub, reader, acks, True, rng)
        if acked:
            reader.acked.extend(m for m, _ in acked)
            with lock:
                acked_keys.update(parse(m) for m, _ in acked)
                if len(acked_keys) == total:
                    all_acked.set()

    def member_thread(sub: Any, reader: Reader, seed: int) -> None:
        rng = random.Random(seed)
        held: list[tuple[Any, Any]] = []
        while not all_acked.is_set():
            got = sub.try_receive_with_ack() if held else None
            if got is None:
                # Wait only with nothing in hand: a held message keeps its slot, so holding
                # it while waiting for room-starved producers would stall the group.
                settle(sub, reader, held, rng)
                try:
                    got = sub.receive_with_ack_sync(timeout=0.05)
                except TimeoutError:
                    continue
            msg, handle = got
            reader.deliveries.append((msg, handle.delivery_count))
            held.append((msg, handle))
            if len(held) >= rng.randint(1, 4):
                settle(sub, reader, held, rng)
        settle(sub, reader, held, rng, final=True)

    async def member_task(sub: Any, reader: Reader, seed: int) -> None:
        rng = random.Random(seed)
        held: list[tuple[Any, Any]] = []
        while not all_acked.is_set():
            got = sub.try_receive_with_ack() if held else None
            if got is None:
                settle(sub, reader, held, rng)
                try:
                    if rng.random() < 0.5:
                        got = await asyncio.wait_for(
                            sub.receive_with_ack(), rng.choice((0, 1e-4, 1e-3, 1e-2))
                        )
                    else:
                        got = await sub.receive_with_ack(timeout=0.05)
                except TimeoutError:
                    continue
            msg, handle = got
            reader.deliveries.append((msg, handle.delivery_count))
            held.append((msg, handle))
            if len(held) >= rng.randint(1, 4):
                settle(sub, reader, held, rng)
        settle(sub, reader, held, rng, final=True)

    with history.sampling(k, broker, (topic,), {topic: 1}, capacity):
        workers = [
            k.spawn(member_thread, *members[0], size.seed + 1),
            k.spawn(member_thread, *members[1], size.seed + 2),
            k.spawn(k.run, member_task(*members[2], size.seed + 3), size.hang),
        ]
        producers = [
            k.spawn(produce_sync, k, broker, history, p, (topic,), n, size)
            for p, n in enumerate(split(total, 2))
        ]
        try:
            history.join(broker, producers, size.hang)
            all_acked.wait(size.hang)  # on a hang the checker says what is missing
        finally:
            all_acked.set()  # stops the members
        history.join(broker, workers, size.hang)
    for sub, reader in members:
        left = sub.try_receive_with_ack()
        if left is not None:
            history.note(
                f"left over: {reader.name} could still receive {left[0].topic} "
                f"{left[0].sequence} (delivery {left[1].delivery_count})"
            )
    history.check(broker)


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
