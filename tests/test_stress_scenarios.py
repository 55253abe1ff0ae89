"""Concurrency stress, judged by the history checker of test_stress_checker.py: producers
stamp every message with ``(producer, index)``, every reader records what it got, and the
checker reports what was lost, duplicated, reordered or miscounted, at the end and while the
run goes on.

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
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from test_stress_checker import History, Reader, parse, stamp

DEFAULT_MESSAGES = 50_000
STRESS_MESSAGES = 1_000_000
TWIN_DIVISOR = 2  # the pure-Python twin runs half the default size (not under --stress)


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
