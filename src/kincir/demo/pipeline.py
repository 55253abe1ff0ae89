"""The demo pipeline: producers → Router stage → ack stage → sink, ended by end of stream.

Producer threads publish order dicts in batches to ``orders``, a bounded topic under the
``block`` overflow policy: when the stages behind fall back, ``publish_sync`` waits for room.
An auditor (a plain subscriber) checks the orders stream itself. A ``Router`` with several
workers prices each order into ``orders.priced``. An ack stage (an asyncio task) ships each
priced order to ``orders.shipped`` and acks it; one poisoned order it cannot ship is nacked
until ``max_deliveries`` sends it to the dead-letter topic ``orders.dead``. A sink thread reads
the shipped orders with a plain ``for`` loop.

Nobody sends end markers: when the producers are done, ``close_topic("orders")`` ends the
stream; the Router, once its input has ended and it has settled everything, closes its output;
the ack stage, at the end of its input, closes its own outputs; and so the end flows down to the
sink, whose loop just ends. Health is taken then, before the shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import kincir
from kincir import Message, SubscriberStats
from kincir.memory import (
    BrokerHealth,
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
    StatsSnapshot,
    TopicClosed,
    TopicInfo,
)
from kincir.router import Router, RouterStats

from .checks import AuditCheck, ShippedCheck, stats_checks
from .settings import TOPICS, Check, DemoSettings

__all__ = ["DemoReport", "run_demo"]

#: How many deliveries the ack stage allows a message before it is dead-lettered.
MAX_DELIVERIES = 3


@dataclasses.dataclass(frozen=True, slots=True)
class DemoReport:
    """What one demo run did and found."""

    #: The run's settings.
    settings: DemoSettings
    #: The engine that ran it (``kincir.IMPLEMENTATION``).
    engine: str
    #: Orders the producers published.
    published: int
    #: Seconds the producers spent inside ``publish_sync``, mostly waiting for room.
    blocked_seconds: float
    #: Seconds from the start until the last producer finished.
    publish_seconds: float
    #: Seconds from the start until the sink's loop ended.
    elapsed: float
    #: The auditor's check of the orders stream.
    audit: AuditCheck
    #: The sink's check of the shipped orders.
    shipped: ShippedCheck
    #: The messages that reached the dead-letter topic.
    dead_letters: tuple[Message, ...]
    #: The Router stage's counters.
    router: RouterStats
    #: The ack stage's subscriber's own counts.
    ack_stage: SubscriberStats
    #: What ``shutdown(timeout=...)`` returned: True if every subscriber had drained.
    drained: bool
    #: Every verdict, the streams' included.
    checks: tuple[Check, ...]
    #: Unexpected errors raised in the stages.
    errors: tuple[str, ...]
    #: The broker's health once the end reached the sink, before the shutdown.
    health: BrokerHealth
    #: The broker's statistics at the end.
    stats: StatsSnapshot | None
    #: Every topic's counters at the end, in pipeline order.
    topics: tuple[TopicInfo, ...]

    @property
    def ok(self) -> bool:
        """True if every check passed and no stage failed."""
        return not self.errors and all(check.ok for check in self.checks)


class _Run:
    """The shared state of one run: the abort flag, stage errors and the clock."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.errors: list[str] = []
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def thread(self, name: str, work: Callable[[], None]) -> threading.Thread:
        """A daemon thread running ``work``; a failure is recorded and aborts the run."""

        def target() -> None:
            try:
                work()
            except BaseException as exc:  # a stage must report, never die silently
                with self._lock:
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self.abort.set()

        return threading.Thread(target=target, name=f"kincir-demo-{name}", daemon=True)


class _Producer:
    """Publishes one producer's share of orders in batches; ``block`` makes it wait for room."""

    def __init__(self, broker: InMemoryBroker, producer_id: int, count: int, batch: int) -> None:
        self._publisher = InMemoryPublisher(broker)
        self.producer_id = producer_id
        self._count = count
        self._batch = batch
        self.published = 0
        self.blocked = 0.0

    def __call__(self, abort: threading.Event) -> None:
        pid = self.producer_id
        clock = time.perf_counter
        for start in range(0, self._count, self._batch):
            if abort.is_set():
                return
            end = min(start + self._batch, self._count)
            orders = [{"producer": pid, "index": i, "qty": 1 + i % 5} for i in range(start, end)]
            began = clock()
            self._publisher.publish_sync(TOPICS.orders, orders)
            self.blocked += clock() - began
            self.published += end - start


def price(msg: Message) -> dict[str, Any]:
    """The Router stage's handler: a new dict with the order's unit price and total."""
    order = msg.payload
    unit_price = 10 + order["producer"]
    return {**order, "unit_price": unit_price, "price": order["qty"] * unit_price}


async def _ship(
    sub: InMemoryAckSubscriber, publisher: InMemoryPublisher, poisoned: tuple[int, int]
) -> None:
    """The ack stage: ship each priced order, ack it; the poisoned one is nacked until it is
    dead-lettered. At the end of its input it closes its outputs, so the end flows on."""
    while True:
        try:
            msg, handle = await sub.receive_with_ack()
        except TopicClosed:
            break
        order = msg.payload
        if (order["producer"], order["index"]) == poisoned:
            sub.nack(handle)  # redelivered until max_deliveries, then dead-lettered
            continue
        await publisher.publish(TOPICS.shipped, [order])
        sub.ack(handle)
    await publisher.close_topic(TOPICS.shipped)
    await publisher.close_topic(TOPICS.dead)


def _audit(sub: InMemorySubscriber, check: AuditCheck, run: _Run, limit: int) -> None:
    while True:
        try:
            batch = sub.receive_batch_sync(limit)
        except TopicClosed:
            return
        check.feed(batch)
        check.last_message_at = run.elapsed()


def _sink(sub: InMemorySubscriber, check: ShippedCheck, run: _Run) -> None:
    for msg in sub:  # ends when the end of stream reaches orders.shipped
        check.feed(msg)
    check.last_message_at = run.elapsed()


def run_demo(settings: DemoSettings | None = None) -> DemoReport:
    """Run the pipeline once and return what happened; prints nothing."""
    settings = settings or DemoSettings()
    plan = settings.plan()
    total = settings.messages
    poisoned = settings.poisoned()
    broker = InMemoryBroker(
        InMemoryConfig(
            max_queue_size=settings.queue_size,
            overflow="block",
            enable_stats=True,
            maintain_order=True,
        )
    )
    run = _Run()
    # every reader subscribes before the first publish: each reads its topic from sequence 1
    auditor = InMemorySubscriber(broker)
    auditor.subscribe(TOPICS.orders)
    router = Router(
        broker, TOPICS.orders, TOPICS.priced, price, concurrency=settings.workers, group="pricing"
    )
    shipper = InMemoryAckSubscriber(
        broker, group="shipping", max_deliveries=MAX_DELIVERIES, dead_letter_topic=TOPICS.dead
    )
    shipper.subscribe(TOPICS.priced)
    sink = InMemorySubscriber(broker)
    sink.subscribe(TOPICS.shipped)
    letters_sub = InMemorySubscriber(broker)
    letters_sub.subscribe(TOPICS.dead)
    audit = AuditCheck("auditor (orders)", TOPICS.orders, plan)
    shipped = ShippedCheck("sink (orders.shipped)", plan, poisoned)
    letters: list[Message] = []

    producers = [_Producer(broker, pid, count, settings.batch) for pid, count in enumerate(plan)]
    producer_threads = [
        run.thread(f"producer-{p.producer_id}", lambda p=p: p(run.abort))  # type: ignore[misc]
        for p in producers
    ]
    stages = [
        run.thread("auditor", lambda: _audit(auditor, audit, run, settings.receive_batch)),
        run.thread(
            "ack-stage", lambda: asyncio.run(_ship(shipper, InMemoryPublisher(broker), poisoned))
        ),
        run.thread("sink", lambda: _sink(sink, shipped, run)),
        run.thread("dead-letters", lambda: letters.extend(letters_sub)),
    ]
    ended = drained = False
    publish_seconds = elapsed = 0.0
    health = broker.health_check()
    try:
        router.start()
        for thread in stages + producer_threads:
            thread.start()
        for thread in producer_threads:
            thread.join()
        publish_seconds = run.elapsed()
        InMemoryPublisher(broker).close_topic(TOPICS.orders)  # the end of the stream
        ended = router.join(settings.drain_timeout)
        for thread in stages:
            thread.join(settings.drain_timeout)
        elapsed = run.elapsed()
        ended = ended and not any(thread.is_alive() for thread in stages)
        health = broker.health_check()  # taken at the end of the stream, before the shutdown
        drained = broker.shutdown(timeout=settings.drain_timeout)
    finally:
        if not ended:
            # interrupted, failed or stuck: wake everything so no thread outlives the run
            run.abort.set()
            router.stop(timeout=1.0)
            broker.force_shutdown()
            for thread in stages + producer_threads:
                thread.join(timeout=1.0)

    published = sum(p.published for p in producers)
    router_stats = router.stats()
    ack_stage = shipper.stats()
    stats = broker.stats()
    topics = tuple(
        broker.topic_info(name)
        for name in dataclasses.astuple(TOPICS)
        if name in broker.list_topics()
    )
    checks = [
        Check(
            "producers published everything",
            published == total,
            f"{published:,} of {total:,} by {len(plan)} producers",
        ),
        *audit.checks(total),
        *shipped.checks(total),
        _letters_check(letters, poisoned),
        _ack_stage_check(ack_stage, shipped.received, len(letters)),
        Check(
            "end of stream reached every stage",
            ended,
            "close_topic('orders') ended the auditor, the Router (which closed its output), "
            "the ack stage (which closed its outputs), the sink and the dead-letter reader"
            if ended
            else f"a stage was still running {settings.drain_timeout:g} s after the close",
        ),
        Check(
            "health before shutdown",
            health.is_healthy and health.total_queued_messages == 0,
            f"is_healthy={health.is_healthy}, {health.total_queued_messages:,} messages queued",
        ),
        Check(
            "shutdown drained",
            drained,
            "shutdown(timeout) returned True" if drained else "not drained",
        ),
        # every order is published to orders and orders.priced, each shippable one to
        # orders.shipped, the poisoned one to orders.dead; consumed counts per reader: orders
        # by the auditor and the Router, orders.priced by the ack stage (a dead-lettered
        # message is settled too), orders.shipped by the sink, orders.dead by its reader
        *stats_checks(
            stats,
            published=2 * published + shipped.received + len(letters),
            consumed=3 * published + shipped.received + len(letters),
            dead_lettered=len(letters),
        ),
    ]
    return DemoReport(
        settings=settings,
        engine=kincir.IMPLEMENTATION,
        published=published,
        blocked_seconds=sum(p.blocked for p in producers),
        publish_seconds=publish_seconds,
        elapsed=elapsed,
        audit=audit,
        shipped=shipped,
        dead_letters=tuple(letters),
        router=router_stats,
        ack_stage=ack_stage,
        drained=drained,
        checks=tuple(checks),
        errors=tuple(run.errors),
        health=health,
        stats=stats,
        topics=topics,
    )


def _letters_check(letters: list[Message], poisoned: tuple[int, int]) -> Check:
    ok = (
        len(letters) == 1
        and (letters[0].payload["producer"], letters[0].payload["index"]) == poisoned
        and letters[0].metadata.get("_dead_letter_reason") == "max_deliveries_exceeded"
        and letters[0].metadata.get("_delivery_count") == str(MAX_DELIVERIES)
    )
    detail = (
        f"order {poisoned} dead-lettered after {MAX_DELIVERIES} deliveries "
        "(max_deliveries_exceeded)"
        if ok
        else f"{len(letters)} dead letters: {[dict(m.metadata) for m in letters][:3]}"
    )
    return Check("poisoned order dead-lettered", ok, detail)


def _ack_stage_check(counts: SubscriberStats, shipped: int, letters: int) -> Check:
    expected = (shipped, MAX_DELIVERIES * letters, (MAX_DELIVERIES - 1) * letters, letters)
    got = (counts.acked, counts.nacked, counts.redelivered, counts.dead_lettered)
    return Check(
        "ack stage's own stats()",
        got == expected,
        f"acked {got[0]:,}, nacked {got[1]}, redelivered {got[2]}, dead-lettered {got[3]}"
        + ("" if got == expected else f" (expected {expected})"),
    )
