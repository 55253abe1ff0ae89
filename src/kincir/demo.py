"""``kincir demo``: a real pipeline, end to end, that checks and reports what it saw.

Producer threads publish numbered payloads in batches to one bounded topic, retrying on
``QueueFull`` (backpressure is the producer's job under the "error" overflow policy). Two
subscribers read every message: one is an asyncio task awaiting ``receive_batch`` on its own
event loop, the other a thread blocked in ``receive_batch_sync``. Each verifies that it got every
message, with gapless sequence numbers ``1..total`` and every producer's messages in the order it
published them. A graceful ``shutdown(timeout=...)`` lets both drain and end on
``BrokerShutdown``.

``run_demo`` does the work and returns a ``DemoReport`` without printing; ``run`` is the
command-line handler that prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence

import kincir
from kincir import Message
from kincir.memory import (
    BrokerHealth,
    BrokerShutdown,
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
    QueueFull,
    StatsSnapshot,
    TopicInfo,
)

from ._argtypes import positive_float, positive_int

__all__ = [
    "DESCRIPTION",
    "HELP",
    "Check",
    "DemoReport",
    "DemoSettings",
    "StreamCheck",
    "configure_parser",
    "format_report",
    "run",
    "run_demo",
    "summary_line",
]

#: One line for ``kincir --help``.
HELP = "run a producer/subscriber pipeline end to end and check what arrived"
#: The text of ``kincir demo --help``.
DESCRIPTION = (
    "Publish numbered messages from several producer threads to one bounded topic, read them "
    "with an asyncio subscriber and a thread subscriber, verify that each got every message in "
    "order, then print throughput, the checks, and the broker's health and statistics. "
    "Exits 0 when every check passed, 1 otherwise."
)

#: The topic the demo publishes to.
TOPIC = "orders"
#: Every payload starts with (producer id, index within that producer), big-endian uint32s.
_HEADER = struct.Struct(">II")
#: How long a producer sleeps before retrying a publish refused with QueueFull.
_RETRY_PAUSE = 0.0002
#: Problems recorded word for word per stream; the rest are only counted.
_MAX_PROBLEMS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class DemoSettings:
    """The shape of one demo run; invalid values raise ``ValueError`` naming the option."""

    #: Producer threads publishing at once.
    producers: int = 4
    #: Messages published in total, split as evenly as possible among the producers.
    messages: int = 50_000
    #: Messages per ``publish_sync`` call.
    batch: int = 100
    #: Bytes per payload (at least the 8-byte producer/index header).
    payload_size: int = 64
    #: The topic's ``max_queue_size``: how far producers may run ahead of the slowest reader.
    queue_size: int = 10_000
    #: Most messages a subscriber takes per receive.
    receive_batch: int = 500
    #: Seconds ``shutdown`` waits for the subscribers to drain.
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("producers", "messages", "batch", "queue_size", "receive_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.payload_size < _HEADER.size:
            raise ValueError(f"--payload-size must be at least {_HEADER.size} bytes")
        if self.batch > self.queue_size:
            raise ValueError(
                f"--batch ({self.batch}) must not exceed --queue-size ({self.queue_size}): "
                "a batch larger than the topic could never be published"
            )
        if not self.drain_timeout > 0:
            raise ValueError("--drain-timeout must be a positive number of seconds")

    def plan(self) -> list[int]:
        """How many messages each producer publishes (the first ones take the remainder)."""
        share, extra = divmod(self.messages, self.producers)
        return [share + (1 if i < extra else 0) for i in range(self.producers)]


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One verified property of the run."""

    #: What was checked.
    name: str
    #: Whether it held.
    ok: bool
    #: The evidence, or what went wrong.
    detail: str


class StreamCheck:
    """Verifies one subscriber's stream as it arrives.

    Sequence numbers must run 1, 2, 3 … with no gap or repeat; each producer's indexes must run
    0, 1, 2 … (its publish order); every payload must have the published size, and the first
    message of each batch must carry the ``_sequence`` metadata that ``maintain_order`` adds.
    """

    def __init__(self, label: str, plan: Sequence[int], payload_size: int) -> None:
        self.label = label
        self.plan = list(plan)
        self.payload_size = payload_size
        #: Messages received.
        self.received = 0
        #: Receive calls that returned messages.
        self.batches = 0
        #: Seconds from the start of the run to the last message received.
        self.last_message_at = 0.0
        self._next_sequence = 1
        self._next_index = [0] * len(self.plan)
        self._sequence_problems = 0
        self._order_problems = 0
        self._payload_problems = 0
        self._problems: list[str] = []

    def _problem(self, text: str) -> None:
        if len(self._problems) < _MAX_PROBLEMS:
            self._problems.append(text)

    def feed(self, batch: Sequence[Message]) -> None:
        """Check one received batch."""
        self.batches += 1
        first = batch[0]
        if first.topic != TOPIC or first.metadata.get("_sequence") != str(first.sequence):
            self._payload_problems += 1
            self._problem(
                f"message {first.sequence} has topic {first.topic!r} and "
                f"_sequence metadata {first.metadata.get('_sequence')!r}"
            )
        expected = self._next_sequence
        next_index = self._next_index
        producers = len(next_index)
        size = self.payload_size
        unpack = _HEADER.unpack_from
        for msg in batch:
            sequence = msg.sequence
            if sequence != expected:
                self._sequence_problems += 1
                self._problem(f"expected sequence {expected}, got {sequence}")
                expected = sequence if sequence is not None else expected
            expected += 1
            payload = msg.payload
            if len(payload) != size:
                self._payload_problems += 1
                self._problem(f"sequence {sequence}: payload of {len(payload)} bytes, not {size}")
                continue
            producer, index = unpack(payload)
            if producer >= producers:
                self._order_problems += 1
                self._problem(f"sequence {sequence}: unknown producer {producer}")
            else:
                if index != next_index[producer]:
                    self._order_problems += 1
                    self._problem(
                        f"producer {producer}: expected index {next_index[producer]}, got {index}"
                    )
                next_index[producer] = index + 1
        self._next_sequence = expected
        self.received += len(batch)

    def checks(self, total: int) -> list[Check]:
        """The verdicts for this stream once it has ended."""
        label = self.label
        gapless = (
            self._sequence_problems == 0
            and self.received == total
            and self._next_sequence == total + 1
        )
        complete = self._next_index == self.plan
        return [
            Check(
                f"{label}: every message, sequences gapless",
                gapless,
                f"{self.received:,} of {total:,} received, sequences 1..{self._next_sequence - 1:,}"
                + (
                    f", {self._sequence_problems:,} out of place"
                    if self._sequence_problems
                    else ", in order"
                ),
            ),
            Check(
                f"{label}: per-producer order",
                self._order_problems == 0 and complete,
                f"{len(self.plan)} producers, each in publish order and complete"
                if self._order_problems == 0 and complete
                else f"{self._order_problems:,} out of order; per producer got up to index "
                f"{[i - 1 for i in self._next_index]} of {[n - 1 for n in self.plan]}",
            ),
            Check(
                f"{label}: payloads and metadata",
                self._payload_problems == 0,
                f"{self.payload_size}-byte payloads, topic and _sequence metadata as published"
                if self._payload_problems == 0
                else f"{self._payload_problems:,} bad messages",
            ),
        ]

    def problems(self) -> list[str]:
        """The first few problems seen, word for word."""
        return list(self._problems)


@dataclasses.dataclass(frozen=True, slots=True)
class DemoReport:
    """What one demo run did and found."""

    #: The run's settings.
    settings: DemoSettings
    #: The engine that ran it (``kincir.IMPLEMENTATION``).
    engine: str
    #: Messages the producers published.
    published: int
    #: Publishes refused with QueueFull and retried by the producers.
    retries: int
    #: Seconds from the start until the last producer finished.
    publish_seconds: float
    #: Seconds from the start until both subscribers had ended.
    elapsed: float
    #: The subscribers' stream checks, A then B.
    streams: tuple[StreamCheck, ...]
    #: What ``shutdown(timeout=...)`` returned: True if every subscriber drained in time.
    drained: bool
    #: Every verdict, streams included.
    checks: tuple[Check, ...]
    #: Unexpected errors raised in the worker threads.
    errors: tuple[str, ...]
    #: The broker's health at the end (after shutdown, so ``is_healthy`` is False).
    health: BrokerHealth
    #: The broker's statistics at the end.
    stats: StatsSnapshot | None
    #: The topic's counters at the end.
    topic: TopicInfo | None

    @property
    def ok(self) -> bool:
        """True if every check passed and no worker failed."""
        return not self.errors and all(check.ok for check in self.checks)

    @property
    def delivered(self) -> int:
        """Deliveries over both subscribers."""
        return sum(stream.received for stream in self.streams)


class _Run:
    """The shared state of one run: the abort flag, worker errors and the clock."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.errors: list[str] = []
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def guarded(
        self, name: str, work: Callable[[], None], on_error: Callable[[], object] | None = None
    ) -> Callable[[], None]:
        """``work`` wrapped so that a failure is recorded and stops the producers."""

        def target() -> None:
            try:
                work()
            except BaseException as exc:  # a worker thread must report, never die silently
                with self._lock:
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self.abort.set()
                if on_error is not None:
                    on_error()

        return target


class _Producer:
    """Publishes one producer's share of messages in batches, retrying when the topic is full."""

    def __init__(
        self,
        run: _Run,
        broker: InMemoryBroker,
        producer_id: int,
        count: int,
        settings: DemoSettings,
    ) -> None:
        self._run = run
        self._publisher = InMemoryPublisher(broker)
        self.producer_id = producer_id
        self._count = count
        self._batch = settings.batch
        self._padding = bytes(settings.payload_size - _HEADER.size)
        self.published = 0
        self.retries = 0

    def __call__(self) -> None:
        pack = _HEADER.pack
        pid = self.producer_id
        padding = self._padding
        abort = self._run.abort
        index = 0
        while index < self._count and not abort.is_set():
            end = min(index + self._batch, self._count)
            payloads = [pack(pid, i) + padding for i in range(index, end)]
            while True:
                try:
                    self._publisher.publish_sync(TOPIC, payloads)
                    break
                except QueueFull:
                    # Under the "error" policy nothing was published: wait for the readers.
                    self.retries += 1
                    if abort.is_set():
                        return
                    time.sleep(_RETRY_PAUSE)
            self.published += end - index
            index = end


def _consume_blocking(run: _Run, sub: InMemorySubscriber, stream: StreamCheck, limit: int) -> None:
    """Subscriber B: a thread blocked in ``receive_batch_sync`` until the broker shuts down."""
    while True:
        try:
            batch = sub.receive_batch_sync(limit)
        except BrokerShutdown:
            return
        stream.feed(batch)
        stream.last_message_at = run.elapsed()


async def _consume_async(
    run: _Run, sub: InMemorySubscriber, stream: StreamCheck, limit: int
) -> None:
    """Subscriber A: an asyncio task awaiting ``receive_batch`` until the broker shuts down."""
    while True:
        try:
            batch = await sub.receive_batch(limit)
        except BrokerShutdown:
            return
        stream.feed(batch)
        stream.last_message_at = run.elapsed()


def _stats_checks(
    stats: StatsSnapshot | None, published: int, delivered: int, retries: int
) -> list[Check]:
    if stats is None:
        return [Check("broker stats", False, "stats() returned None with enable_stats on")]
    counted = (stats.messages_published(), stats.messages_consumed(), stats.queue_full_errors())
    lost = stats.messages_dropped() + stats.messages_expired() + stats.messages_lagged()
    ok = counted == (published, delivered, retries) and lost == 0
    return [
        Check(
            "broker stats agree",
            ok,
            f"published {counted[0]:,}, consumed {counted[1]:,}, queue_full {counted[2]:,}, "
            f"lost {lost:,}"
            + ("" if ok else f" (expected {published:,}, {delivered:,}, {retries:,}, 0)"),
        )
    ]


def run_demo(settings: DemoSettings | None = None) -> DemoReport:
    """Run the pipeline once and return what happened; prints nothing."""
    settings = settings or DemoSettings()
    plan = settings.plan()
    total = settings.messages
    config = InMemoryConfig(
        max_queue_size=settings.queue_size,
        enable_stats=True,
        maintain_order=True,
        overflow="error",
    )
    broker = InMemoryBroker(config)
    # Both subscribe before the first publish, so each reads the topic from sequence 1.
    sub_a = InMemorySubscriber(broker)
    sub_b = InMemorySubscriber(broker)
    sub_a.subscribe(TOPIC)
    sub_b.subscribe(TOPIC)
    stream_a = StreamCheck("A (asyncio)", plan, settings.payload_size)
    stream_b = StreamCheck("B (thread)", plan, settings.payload_size)

    run = _Run()
    limit = settings.receive_batch
    # A failed subscriber leaves the topic, so its unread messages no longer hold producers back.
    consumers = [
        threading.Thread(
            target=run.guarded(
                "subscriber A",
                lambda: asyncio.run(_consume_async(run, sub_a, stream_a, limit)),
                sub_a.close,
            ),
            name="kincir-demo-subscriber-a",
            daemon=True,
        ),
        threading.Thread(
            target=run.guarded(
                "subscriber B",
                lambda: _consume_blocking(run, sub_b, stream_b, limit),
                sub_b.close,
            ),
            name="kincir-demo-subscriber-b",
            daemon=True,
        ),
    ]
    producers = [_Producer(run, broker, pid, count, settings) for pid, count in enumerate(plan)]
    producer_threads = [
        threading.Thread(
            target=run.guarded(f"producer {p.producer_id}", p),
            name=f"kincir-demo-producer-{p.producer_id}",
            daemon=True,
        )
        for p in producers
    ]

    drained = False
    finished = False
    try:
        for thread in consumers + producer_threads:
            thread.start()
        for thread in producer_threads:
            thread.join()
        publish_seconds = run.elapsed()
        drained = broker.shutdown(timeout=settings.drain_timeout)
        for thread in consumers:
            thread.join(timeout=settings.drain_timeout)
        elapsed = run.elapsed()
        finished = True
    finally:
        if not finished or any(t.is_alive() for t in consumers):
            # Interrupted or stuck: wake everything so no thread outlives the run.
            run.abort.set()
            broker.force_shutdown()
            for thread in consumers + producer_threads:
                thread.join(timeout=1.0)

    published = sum(p.published for p in producers)
    retries = sum(p.retries for p in producers)
    streams = (stream_a, stream_b)
    delivered = sum(s.received for s in streams)
    stats = broker.stats()
    checks = [
        Check(
            "producers published everything",
            published == total,
            f"{published:,} of {total:,} by {len(plan)} producers",
        ),
        *stream_a.checks(total),
        *stream_b.checks(total),
        Check(
            "subscribers drained on shutdown",
            drained,
            "shutdown(timeout) returned True"
            if drained
            else f"not drained within {settings.drain_timeout:g} s",
        ),
        Check(
            "subscribers ended on BrokerShutdown",
            not any(t.is_alive() for t in consumers),
            "both receive loops returned",
        ),
        *_stats_checks(stats, published, delivered, retries),
    ]
    try:
        topic: TopicInfo | None = broker.topic_info(TOPIC)
    except LookupError:
        topic = None
    return DemoReport(
        settings=settings,
        engine=kincir.IMPLEMENTATION,
        published=published,
        retries=retries,
        publish_seconds=publish_seconds,
        elapsed=elapsed,
        streams=streams,
        drained=drained,
        checks=tuple(checks),
        errors=tuple(run.errors),
        health=broker.health_check(),
        stats=stats,
        topic=topic,
    )


# -- output ---------------------------------------------------------------------------------------


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "n/a"


def _table(title: str, rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in rows)
    return [title, *(f"  {key:<{width}}  {value}" for key, value in rows)]


def summary_line(report: DemoReport) -> str:
    """One line: verdict, engine, counts, time and rates."""
    verdict = "OK" if report.ok else "FAILED"
    a, b = report.streams
    return (
        f"kincir demo [{report.engine}]: {verdict} - {report.published:,} published, "
        f"{a.received:,} + {b.received:,} delivered in {report.elapsed:.2f} s "
        f"({_rate(report.published, report.publish_seconds)} msg/s published, "
        f"{_rate(report.delivered, report.elapsed)} deliveries/s)"
    )


def format_report(report: DemoReport) -> str:
    """The full report: pipeline, throughput, checks, health, stats, then the summary line."""
    s = report.settings
    plan = s.plan()
    share = f"{plan[0]:,}" if len(set(plan)) == 1 else f"{plan[-1]:,}-{plan[0]:,}"
    lines = [
        f"kincir {kincir.__version__} demo - engine: {report.engine}",
        f"pipeline: {s.producers} producers x {share} messages (batches of {s.batch}, "
        f"{s.payload_size}-byte payloads)",
        f"          -> topic {TOPIC!r} (max_queue_size={s.queue_size:,}, overflow=error, "
        "maintain_order, stats)",
        "          -> subscriber A: asyncio task, await receive_batch()",
        "          -> subscriber B: thread, receive_batch_sync()",
        "",
    ]
    lines += _table(
        "throughput",
        [
            (
                "published",
                f"{report.published:,} messages in {report.publish_seconds:.3f} s "
                f"({_rate(report.published, report.publish_seconds)} msg/s)",
            ),
            ("backpressure", f"{report.retries:,} publishes refused with QueueFull and retried"),
            *(
                (
                    f"subscriber {stream.label}",
                    f"{stream.received:,} delivered in {stream.batches:,} batches, "
                    f"caught up at {stream.last_message_at:.3f} s",
                )
                for stream in report.streams
            ),
            ("wall time", f"{report.elapsed:.3f} s until both subscribers ended"),
            ("deliveries", f"{report.delivered:,} ({_rate(report.delivered, report.elapsed)}/s)"),
        ],
    )
    lines.append("")
    lines.append("checks")
    lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks]
    lines += [f"  [FAIL] {error}" for error in report.errors]
    for stream in report.streams:
        lines += [f"         {stream.label}: {problem}" for problem in stream.problems()]
    lines.append("")
    h = report.health
    lines += _table(
        "health_check()  (taken after shutdown)",
        [
            ("is_healthy", f"{h.is_healthy}" + ("" if h.is_healthy else " (shut down)")),
            ("topic_count", f"{h.topic_count:,}"),
            ("total_queued_messages", f"{h.total_queued_messages:,}"),
            ("total_subscribers", f"{h.total_subscribers:,}"),
            ("uptime", f"{h.uptime:.3f} s"),
            (
                "memory_usage_estimate",
                f"{h.memory_usage_estimate:,} bytes ({h.memory_usage_mb():.3f} MiB)",
            ),
        ],
    )
    lines.append("")
    st = report.stats
    if st is None:
        lines.append("stats()  None (stats disabled)")
    else:
        lines += _table(
            "stats()",
            [
                ("messages_published", f"{st.messages_published():,}"),
                ("messages_consumed", f"{st.messages_consumed():,}"),
                ("messages_dropped", f"{st.messages_dropped():,}"),
                ("messages_expired", f"{st.messages_expired():,}"),
                ("messages_lagged", f"{st.messages_lagged():,}"),
                ("messages_redelivered", f"{st.messages_redelivered():,}"),
                ("messages_dead_lettered", f"{st.messages_dead_lettered():,}"),
                ("queue_full_errors", f"{st.queue_full_errors():,}"),
                ("active_topics", f"{st.active_topics():,}"),
                ("active_subscribers", f"{st.active_subscribers():,}"),
                ("uptime", f"{st.uptime():.3f} s"),
            ],
        )
    t = report.topic
    if t is not None:
        lines.append("")
        lines += _table(
            f"topic_info({t.name!r})",
            [
                ("total_published", f"{t.total_published:,}"),
                ("total_consumed", f"{t.total_consumed:,}"),
                ("next_sequence", f"{t.next_sequence:,}"),
                ("queue_size", f"{t.queue_size:,}"),
                ("subscriber_count", f"{t.subscriber_count:,}"),
                ("age", f"{t.age():.3f} s"),
            ],
        )
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def _options() -> list[tuple[str, Callable[[str], object], str, str]]:
    """The demo's options, one per ``DemoSettings`` field: flag, type, metavar, help."""
    return [
        ("--producers", positive_int, "N", "producer threads"),
        ("--messages", positive_int, "M", "messages in total, split among the producers"),
        ("--batch", positive_int, "B", "messages per publish"),
        ("--payload-size", positive_int, "BYTES", f"bytes per payload, at least {_HEADER.size}"),
        ("--queue-size", positive_int, "N", "the topic's max_queue_size"),
        ("--receive-batch", positive_int, "N", "most messages a subscriber takes per receive"),
        (
            "--drain-timeout",
            positive_float,
            "SECONDS",
            "how long shutdown waits for the subscribers to drain",
        ),
    ]


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to its subparser."""
    defaults = DemoSettings()
    for flag, kind, metavar, text in _options():
        parser.add_argument(
            flag,
            type=kind,
            default=getattr(defaults, _field(flag)),
            metavar=metavar,
            help=f"{text} (default: %(default)s)",
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")


def run(args: argparse.Namespace) -> int:
    """Run ``kincir demo`` with parsed options; print the report; 0 if every check passed."""
    try:
        settings = DemoSettings(
            **{_field(flag): getattr(args, _field(flag)) for flag, *_ in _options()}
        )
    except ValueError as exc:
        print(f"kincir demo: error: {exc}", file=sys.stderr)
        return 2
    report = run_demo(settings)
    print(summary_line(report) if args.quiet else format_report(report))
    return 0 if report.ok else 1
