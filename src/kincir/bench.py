"""``kincir bench``: kincir measured against the standard library's queues, workload by workload.

Every workload runs kincir and its baseline in the same process and the same run: one warm-up
run of each side at a tenth of the size, then ``repeat`` timed repetitions (default 5), the
sides taking turns within each repetition (their order alternating from one repetition to the
next) so that a noisy machine disturbs both alike. Each repetition builds fresh brokers and
queues. The garbage collector stays enabled, as users have it (a collection runs *between*
timed runs, never inside one). Times come from ``time.perf_counter_ns``. The median over the
repetitions is reported, and every repetition's raw numbers go to ``--json``.

Payloads are 64 bytes. Per-message workloads build a ``Message`` per send, as a user would;
the queue baselines put the bare payload. Brokers use ``InMemoryConfig.high_performance()``
(unbounded, no ordering metadata, no stats) except where a workload says otherwise.

=========  ==================================================================================
W1         one thread: ``publish_nowait(topic, [Message(p)])`` x N, then ``try_receive()`` x N;
           vs ``queue.SimpleQueue`` put x N, get x N
W2         one thread: batches of 100 raw payloads, ``publish_nowait(topic, batch)`` then
           ``try_receive_batch(100)`` per batch (a reader that keeps up); W2/backlog publishes
           every batch before reading the first (N messages held at once); vs SimpleQueue
           put/get per message
W3         producer thread -> consumer thread (``publish_nowait`` a Message per send /
           ``receive_sync``), timed until the consumer has N; vs SimpleQueue and
           ``queue.Queue`` (and ``janus`` when installed)
W4         one publisher, 8 subscribers, one thread: publish N, then each subscriber drains with
           ``try_receive_batch``; deliveries/s vs 8 SimpleQueues. Also the cost of one publish
           with 64 subscribers against 1 subscriber
W5         asyncio producer task -> consumer task (``await publish`` / ``await receive()``); vs
           ``asyncio.Queue``
W6         ping-pong round trip, median (p50) latency: two threads (two topics, ``receive_sync``
           on each side; vs two SimpleQueues) and two asyncio tasks (vs two asyncio.Queues)
W7         producer thread -> asyncio consumer (``await receive()``); vs an asyncio.Queue fed by
           ``loop.call_soon_threadsafe(q.put_nowait, item)`` (and ``janus`` when installed)
M          memory per queued message: 100k distinct 64-byte payloads published to a topic with
           one subscriber that never reads (default config); tracemalloc's traced-memory delta
           / N, the payload objects included
H          ``health_check()`` and ``stats()`` per call with 1,000,000 queued messages against
           none (stats enabled)
=========  ==================================================================================

Ratios read "greater than 1 is better for kincir": throughput is kincir / baseline, latency is
baseline / kincir. Two rows compare kincir with itself, as cost ratios where lower is better:
W4's publish cost with 64 subscribers / with 1, and H's cost with 1M queued / with none.

``run_bench`` does the work and returns a ``BenchReport`` (dataclasses, no printing);
``format_table``, ``report_json`` and ``plot_ratios`` render it; ``run`` is the command-line
handler that prints. ``--scale FACTOR`` multiplies every workload size: it exists so that tests
can run every code path in a blink (the numbers it gives at tiny sizes are noise).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import importlib
import json
import math
import os
import platform
import queue
import statistics
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import kincir
from kincir import Message
from kincir.memory import (
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
)

from ._argtypes import positive_float, positive_int

__all__ = [
    "DESCRIPTION",
    "HELP",
    "WORKLOADS",
    "BenchError",
    "BenchReport",
    "BenchSettings",
    "Goal",
    "MachineInfo",
    "Measurement",
    "PlotUnavailable",
    "Row",
    "Sample",
    "Sizes",
    "Workload",
    "WorkloadResult",
    "configure_parser",
    "format_table",
    "machine_info",
    "plot_ratios",
    "report_json",
    "run",
    "run_bench",
]

#: One line for ``kincir --help``.
HELP = "measure kincir against the standard library's queues, with the project's goals"
#: The text of ``kincir bench --help``.
DESCRIPTION = (
    "Run the benchmark workloads for kincir and for the standard-library baselines "
    "(queue.SimpleQueue, queue.Queue, asyncio.Queue; janus too when installed) in the same run: "
    "a warm-up, then --repeat timed repetitions per side, median reported. Prints a table of "
    "medians, ratios to the baselines and the goals met or not; progress goes to stderr. "
    "Workloads: W1 one-thread publish/receive, W2 batches, W3 thread to thread, W4 fan-out, "
    "W5 asyncio tasks, W6 ping-pong latency, W7 thread to asyncio, M memory per queued message, "
    "H health/stats cost. Exits 0 when every workload ran (goals met or not), 1 when one failed, "
    "2 on a usage error."
)

#: Bytes per payload.
PAYLOAD_SIZE = 64
#: The payload the throughput workloads send.
PAYLOAD = bytes(range(PAYLOAD_SIZE))
#: Messages per batch in W2.
BATCH = 100
#: Subscribers in W4's fan-out throughput, and the two counts its publish-cost rows compare.
FANOUT = 8
FANOUT_MANY = 64
#: Most messages W4's subscribers take per ``try_receive_batch``.
DRAIN_BATCH = 1000
#: How long a two-sided workload may run before it counts as stuck.
STUCK_AFTER = 300.0

TOPIC = "bench"
PING = "bench.ping"
PONG = "bench.pong"

_now = time.perf_counter_ns


class BenchError(RuntimeError):
    """A workload did not do what it measures (lost messages, a stuck or failed side)."""


class PlotUnavailable(RuntimeError):
    """``--plot`` needs matplotlib, which is not importable."""


# -- settings -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each workload does per repetition."""

    w1_messages: int = 500_000
    w2_messages: int = 1_000_000
    w3_messages: int = 200_000
    w4_messages: int = 150_000
    w4_publishes: int = 300_000
    w5_messages: int = 200_000
    w6_thread_trips: int = 10_000
    w6_async_trips: int = 20_000
    w7_messages: int = 100_000
    m_messages: int = 100_000
    h_queued: int = 1_000_000
    h_calls: int = 20_000
    g_messages: int = 100_000
    r_messages: int = 40_000
    #: B1-B4 belong to ``kincir bench --backend`` (kincir.bench_backends): sizes a server can take.
    b1_messages: int = 20_000
    b2_messages: int = 10_000
    b3_messages: int = 5_000
    b4_trips: int = 500

    @classmethod
    def quick(cls) -> Sizes:
        """The sizes of ``--quick``: a quarter of most, the full million queued for H, a tenth
        of the backend workloads (B1-B4)."""
        full = cls()
        return dataclasses.replace(
            full.scaled(0.25),
            w6_thread_trips=2_000,
            w6_async_trips=4_000,
            m_messages=20_000,
            h_queued=1_000_000,
            h_calls=2_000,
            b1_messages=full.b1_messages // 10,
            b2_messages=full.b2_messages // 10,
            b3_messages=full.b3_messages // 10,
            b4_trips=full.b4_trips // 10,
        )

    def scaled(self, factor: float) -> Sizes:
        """Every size times ``factor``, at least 1 (W2: a whole number of batches, at least 1)."""
        changes: dict[str, int] = {}
        for field in dataclasses.fields(self):
            value: int = getattr(self, field.name)
            if field.name == "w2_messages":
                changes[field.name] = max(1, round(value * factor / BATCH)) * BATCH
            else:
                changes[field.name] = max(1, round(value * factor))
        return dataclasses.replace(self, **changes)

    def warmup(self) -> Sizes:
        """The sizes of the warm-up run: a tenth."""
        return self.scaled(0.1)


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """One workload: a key for ``--only``, a title, and the function that measures it."""

    key: str
    title: str
    measure: Callable[[_Context], tuple[Row, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class BenchSettings:
    """The shape of one benchmark run; invalid values raise ``ValueError``."""

    #: Timed repetitions per side of each workload.
    repeat: int = 5
    #: Smaller sizes (``Sizes.quick()``): the whole run takes seconds.
    quick: bool = False
    #: Multiplies every size (a knob for tests; tiny sizes measure noise).
    scale: float = 1.0
    #: The workloads to run, by key; all of them when None.
    only: tuple[str, ...] | None = None
    #: The workloads to choose from: ``WORKLOADS`` when None (``kincir bench --backend`` passes
    #: its own, kincir.bench_backends).
    suite: tuple[Workload, ...] | None = None

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError("--scale must be a positive number")
        if self.only is not None:
            known = _BY_KEY if self.suite is None else {w.key: w for w in self.suite}
            unknown = [key for key in self.only if key not in known]
            if unknown:
                raise ValueError(
                    f"unknown workload {', '.join(unknown)}; choose from {', '.join(known)}"
                )
            if not self.only:
                raise ValueError("--only needs at least one workload")

    def sizes(self) -> Sizes:
        """The sizes this run uses."""
        base = Sizes.quick() if self.quick else Sizes()
        return base if self.scale == 1.0 else base.scaled(self.scale)

    def workloads(self) -> tuple[Workload, ...]:
        """The selected workloads, in the canonical order."""
        suite = WORKLOADS if self.suite is None else self.suite
        if self.only is None:
            return suite
        return tuple(w for w in suite if w.key in self.only)


# -- results --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One timed run of one side: its value in the measurement's unit, and the raw numbers."""

    value: float
    raw: dict[str, float]


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One side of a comparison over every repetition."""

    #: What was measured: "kincir", "queue.SimpleQueue", "kincir, 64 subscribers" ...
    label: str
    #: The unit of ``values``: "msg/s", "deliveries/s", "us", "us/publish", "us/call", "B/msg".
    unit: str
    #: Whether a larger value is better (throughput) or worse (latency, cost, memory).
    higher_is_better: bool
    #: One sample per repetition, in order.
    samples: tuple[Sample, ...]

    @property
    def values(self) -> tuple[float, ...]:
        """The value of every repetition."""
        return tuple(sample.value for sample in self.samples)

    @property
    def median(self) -> float:
        """The median over the repetitions."""
        return float(statistics.median(self.values))

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the repetitions disagree (0 for one repetition)."""
        values = self.values
        middle = self.median
        return (max(values) - min(values)) / middle if middle else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Goal:
    """A target: the row's ratio (or, with ``on="value"``, kincir's median) vs a threshold."""

    op: Literal[">=", "<="]
    threshold: float
    on: Literal["ratio", "value"] = "ratio"
    #: The unit shown after a value goal ("B").
    unit: str = ""

    def met(self, x: float) -> bool:
        """Whether ``x`` meets the goal."""
        return x >= self.threshold if self.op == ">=" else x <= self.threshold

    def text(self) -> str:
        """The goal as shown in the table: ``>= 0.5x``, ``<= 200 B``."""
        if self.on == "ratio":
            return f"{self.op} {self.threshold:g}x"
        return f"{self.op} {self.threshold:g} {self.unit}".rstrip()


def _ratio(subject: float, reference: float, inverted: bool) -> float:
    numerator, denominator = (reference, subject) if inverted else (subject, reference)
    return numerator / denominator if denominator else math.inf


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: kincir's measurement, what it is compared with, and the goal."""

    #: Unique: "W1", "W3/Queue", "W6/asyncio", "H/stats" ...
    id: str
    #: What the row measures, in a few words.
    name: str
    #: kincir's measurement.
    subject: Measurement
    #: The baseline (or, for a cost ratio, kincir in the reference situation); None for M.
    reference: Measurement | None
    #: The target, if the project set one.
    goal: Goal | None
    #: How the ratio is formed: "kincir/base", "base/kincir", "64 subs/1 sub" ...
    ratio_definition: str = "kincir/base"
    #: True when the ratio is reference / subject (latency: lower is better).
    inverted: bool = False
    #: Further baselines shown in their own column (janus), same ratio rule.
    extras: tuple[Measurement, ...] = ()
    #: Remarks printed under the table.
    notes: tuple[str, ...] = ()

    @property
    def ratio(self) -> float | None:
        """The ratio of the medians, as ``ratio_definition`` says; None without a reference."""
        if self.reference is None:
            return None
        return _ratio(self.subject.median, self.reference.median, self.inverted)

    def extra_ratio(self, extra: Measurement) -> float:
        """The ratio against one of ``extras``."""
        return _ratio(self.subject.median, extra.median, self.inverted)

    def paired_ratios(self) -> tuple[float, ...]:
        """The ratio of each repetition's pair (the sides ran back to back)."""
        if self.reference is None:
            return ()
        return tuple(
            _ratio(s, r, self.inverted)
            for s, r in zip(self.subject.values, self.reference.values, strict=False)
        )

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None without a goal."""
        if self.goal is None:
            return None
        if self.goal.on == "value":
            return self.goal.met(self.subject.median)
        ratio = self.ratio
        return None if ratio is None else self.goal.met(ratio)

    @property
    def spread(self) -> float:
        """The worst spread of the row's measurements."""
        sides = [self.subject, *([self.reference] if self.reference else []), *self.extras]
        return max(side.spread for side in sides)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadResult:
    """What one workload measured, or the error that stopped it."""

    key: str
    title: str
    rows: tuple[Row, ...]
    #: Wall-clock seconds the workload took, warm-up included.
    seconds: float
    #: Why it failed, or None.
    error: str | None = None
    #: Remarks about the workload as a whole (an optional baseline that failed ...).
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class MachineInfo:
    """Where the run happened."""

    python_version: str
    python_implementation: str
    kincir_version: str
    kincir_implementation: str
    kincir_location: str
    platform: str
    machine: str
    processor: str
    cpu_count: int | None
    usable_cpus: int | None
    gc_enabled: bool
    janus_version: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class BenchReport:
    """The result of ``run_bench``."""

    settings: BenchSettings
    sizes: Sizes
    machine: MachineInfo
    workloads: tuple[WorkloadResult, ...]
    #: When the run started (local time, ISO 8601).
    started_at: str
    #: Wall-clock seconds for the whole run.
    seconds: float

    def rows(self) -> Iterator[Row]:
        """Every row of every workload, in table order."""
        for workload in self.workloads:
            yield from workload.rows

    def goals(self) -> tuple[int, int]:
        """(goals met, goals measured)."""
        verdicts = [row.met for row in self.rows() if row.met is not None]
        return sum(verdicts), len(verdicts)

    @property
    def ok(self) -> bool:
        """True when every workload ran (whatever the goals)."""
        return all(w.error is None for w in self.workloads)


def machine_info(janus: ModuleType | None = None) -> MachineInfo:
    """Describe this machine and interpreter."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return MachineInfo(
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        kincir_version=kincir.__version__,
        kincir_implementation=kincir.IMPLEMENTATION,
        kincir_location=os.path.dirname(os.path.abspath(kincir.__file__ or "")),
        platform=platform.platform(),
        machine=platform.machine(),
        processor=platform.processor(),
        cpu_count=os.cpu_count(),
        usable_cpus=usable,
        gc_enabled=gc.isenabled(),
        janus_version=None if janus is None else str(getattr(janus, "__version__", "unknown")),
    )


# -- the harness ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Side:
    """One side of a workload: runs once at the given sizes, returns its sample(s) by name."""

    label: str
    run: Callable[[Sizes], dict[str, Sample]]
    #: An optional baseline (janus): a failure drops it with a note instead of failing the row.
    optional: bool = False


class _Context:
    """What a workload needs from the run: sizes, repetitions, progress, optional baselines."""

    def __init__(
        self,
        settings: BenchSettings,
        progress: Callable[[str], None] | None,
        janus: ModuleType | None,
    ) -> None:
        self.settings = settings
        self.sizes = settings.sizes()
        self.repeat = settings.repeat
        self.janus = janus
        self.notes: list[str] = []
        self._progress = progress
        self._prefix = ""

    def begin(self, index: int, total: int, workload: Workload) -> None:
        self._prefix = f"[{index}/{total}] {workload.key} {workload.title}"
        self.notes = []

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress(f"{self._prefix}: {text}")

    def measure(self, sides: Sequence[_Side]) -> dict[str, list[Sample]]:
        """Warm each side up, then run the timed repetitions; samples by name.

        Within a repetition the sides run back to back; their order alternates between
        repetitions. A failed optional side is dropped (with a note).
        """
        live = list(sides)
        warm = self.sizes.warmup()
        for side in list(live):
            self.say(f"warm-up, {side.label}")
            if not self._attempt(side, warm, live):
                continue
        results: dict[str, list[Sample]] = {}
        for rep in range(self.repeat):
            order = list(live) if rep % 2 == 0 else live[::-1]
            for side in order:
                if side not in live:
                    continue
                self.say(f"repetition {rep + 1}/{self.repeat}, {side.label}")
                got = self._attempt(side, self.sizes, live)
                if got is None:
                    continue
                for name, sample in got.items():
                    results.setdefault(name, []).append(sample)
        return results

    def _attempt(self, side: _Side, sizes: Sizes, live: list[_Side]) -> dict[str, Sample] | None:
        gc.collect()
        if not side.optional:
            return side.run(sizes)
        try:
            return side.run(sizes)
        except Exception as exc:  # an optional baseline must not take the workload down
            live.remove(side)
            self.notes.append(f"{side.label} failed and was left out: {type(exc).__name__}: {exc}")
            return None


def _throughput(count: int, elapsed_ns: int) -> Sample:
    elapsed_ns = max(elapsed_ns, 1)
    return Sample(count * 1e9 / elapsed_ns, {"messages": count, "elapsed_ns": elapsed_ns})


def _cost(calls: int, elapsed_ns: int, key: str = "calls") -> Sample:
    return Sample(elapsed_ns / calls / 1000, {key: calls, "elapsed_ns": elapsed_ns})


def _latency(times: list[int]) -> Sample:
    times.sort()
    n = len(times)

    def pct(q: float) -> float:
        return times[min(n - 1, int(q * n))]

    p50 = float(statistics.median(times))
    return Sample(
        p50 / 1000,
        {
            "round_trips": n,
            "p50_ns": p50,
            "p90_ns": pct(0.9),
            "p99_ns": pct(0.99),
            "min_ns": times[0],
            "max_ns": times[-1],
            "mean_ns": sum(times) / n,
        },
    )


def _one(label: str, run: Callable[[Sizes], Sample], optional: bool = False) -> _Side:
    return _Side(label, lambda sizes: {label: run(sizes)}, optional)


def _measurement(
    samples: dict[str, list[Sample]],
    label: str,
    unit: str,
    higher_is_better: bool,
    name: str | None = None,
) -> Measurement:
    return Measurement(name or label, unit, higher_is_better, tuple(samples[label]))


def _fast_broker(config: InMemoryConfig | None = None) -> InMemoryBroker:
    return InMemoryBroker(config or InMemoryConfig.high_performance())


def _subscriber(broker: InMemoryBroker, topic: str) -> InMemorySubscriber:
    sub = InMemorySubscriber(broker)
    sub.subscribe(topic)
    return sub


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(what)


def _thread_pair(
    produce: Callable[[], None], consume: Callable[[], None], abort: Callable[[], None]
) -> int:
    """Run ``consume`` and ``produce`` on two threads; nanoseconds from go until consumed.

    The consumer starts first (it waits); the clock starts as the producer is released. A
    failing side calls ``abort`` (which must wake the other) and the error is raised here.
    """
    go = threading.Event()
    finished = [0]
    errors: list[BaseException] = []

    def consumer() -> None:
        try:
            consume()
            finished[0] = _now()
        except BaseException as exc:
            errors.append(exc)

    def producer() -> None:
        go.wait()
        try:
            produce()
        except BaseException as exc:
            errors.append(exc)
            abort()

    threads = [
        threading.Thread(target=consumer, name="kincir-bench-consumer", daemon=True),
        threading.Thread(target=producer, name="kincir-bench-producer", daemon=True),
    ]
    try:
        for thread in threads:
            thread.start()
        started = _now()
        go.set()
        for thread in threads:
            thread.join(STUCK_AFTER)
    except BaseException:
        go.set()
        abort()
        raise
    if any(thread.is_alive() for thread in threads):
        abort()
        raise BenchError(f"producer/consumer threads still running after {STUCK_AFTER:g} s")
    if errors:
        raise BenchError(
            f"a worker thread failed: {type(errors[0]).__name__}: {errors[0]}"
        ) from errors[0]
    return finished[0] - started


def _ping_pong_threads(
    ping: Callable[[], list[int]], pong: Callable[[], None], abort: Callable[[], None]
) -> Sample:
    """``pong`` answers on a thread while ``ping`` times round trips on this one."""
    errors: list[BaseException] = []

    def answer() -> None:
        try:
            pong()
        except BaseException as exc:
            errors.append(exc)
            abort()

    thread = threading.Thread(target=answer, name="kincir-bench-pong", daemon=True)
    thread.start()
    try:
        times = ping()
    except BaseException:
        abort()
        thread.join(5.0)
        if errors:
            raise BenchError(
                f"the pong thread failed: {type(errors[0]).__name__}: {errors[0]}"
            ) from errors[0]
        raise
    thread.join(STUCK_AFTER)
    _check(not thread.is_alive(), "the pong thread did not finish")
    if errors:
        raise BenchError(f"the pong thread failed: {errors[0]!r}") from errors[0]
    return _latency(times)


async def _together(
    first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]
) -> tuple[Any, Any]:
    """Run two coroutines as tasks (``first`` created, so started, first); both results.

    If either fails, the other is cancelled and the failure raised.
    """
    tasks = [asyncio.create_task(first), asyncio.create_task(second)]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise BenchError(f"a task failed: {task.exception()!r}") from task.exception()
    return tasks[0].result(), tasks[1].result()


async def _thread_to_loop(produce: Callable[[], None], consume: Coroutine[Any, Any, int]) -> int:
    """``produce`` on a thread feeds ``consume`` (a task on this loop, returning its end time).

    Nanoseconds from releasing the producer until the consumer finished.
    """
    loop = asyncio.get_running_loop()
    consumer = loop.create_task(consume)
    go = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        go.wait()
        try:
            produce()
        except BaseException as exc:
            errors.append(exc)
            try:
                loop.call_soon_threadsafe(consumer.cancel)
            except RuntimeError:  # the loop is closed already
                pass

    thread = threading.Thread(target=producer, name="kincir-bench-producer", daemon=True)
    thread.start()
    try:
        await asyncio.sleep(0)  # the consumer starts and waits for the first message
        started = _now()
        go.set()
        try:
            finished = await consumer
        except asyncio.CancelledError:
            if errors:
                raise BenchError(f"the producer thread failed: {errors[0]!r}") from errors[0]
            raise
    finally:
        go.set()
        if not consumer.done():
            consumer.cancel()
        thread.join(STUCK_AFTER)
    return finished - started


# -- W1: one thread, a Message per publish --------------------------------------------------------


def _w1_kincir(sizes: Sizes) -> Sample:
    n = sizes.w1_messages
    broker = _fast_broker()
    sub = _subscriber(broker, TOPIC)
    publish = InMemoryPublisher(broker).publish_nowait
    receive = sub.try_receive
    payload = PAYLOAD
    msg = None
    started = _now()
    for _ in range(n):
        publish(TOPIC, [Message(payload)])
    for _ in range(n):
        msg = receive()
    elapsed = _now() - started
    _check(msg is not None and sub.try_receive() is None, "W1: kincir lost or kept messages")
    broker.force_shutdown()
    return _throughput(n, elapsed)


def _w1_simple_queue(sizes: Sizes) -> Sample:
    n = sizes.w1_messages
    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    put, get = q.put, q.get
    payload = PAYLOAD
    started = _now()
    for _ in range(n):
        put(payload)
    for _ in range(n):
        get()
    elapsed = _now() - started
    return _throughput(n, elapsed)


def _workload_w1(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure([_one("kincir", _w1_kincir), _one("SimpleQueue", _w1_simple_queue)])
    return (
        Row(
            "W1",
            "1 thread, a Message per publish",
            _measurement(got, "kincir", "msg/s", True),
            _measurement(got, "SimpleQueue", "msg/s", True),
            Goal(">=", 0.5),
        ),
    )


# -- W2: one thread, batches of raw payloads ------------------------------------------------------


def _w2_kincir(sizes: Sizes, backlog: bool = False) -> Sample:
    n = sizes.w2_messages
    batches = n // BATCH
    broker = _fast_broker()
    sub = _subscriber(broker, TOPIC)
    publish = InMemoryPublisher(broker).publish_nowait
    take = sub.try_receive_batch
    batch = [PAYLOAD] * BATCH
    got = 0
    started = _now()
    if backlog:  # every batch published before the first is read: n messages held at once
        for _ in range(batches):
            publish(TOPIC, batch)
        for _ in range(batches):
            got += len(take(BATCH))
    else:  # a reader that keeps up: each batch read after it is published
        for _ in range(batches):
            publish(TOPIC, batch)
            got += len(take(BATCH))
    elapsed = _now() - started
    _check(got == n, f"W2: kincir delivered {got} of {n}")
    broker.force_shutdown()
    return _throughput(n, elapsed)


def _workload_w2(ctx: _Context) -> tuple[Row, ...]:
    def simple_queue(sizes: Sizes) -> Sample:
        return _w1_simple_queue(dataclasses.replace(sizes, w1_messages=sizes.w2_messages))

    def backlog(sizes: Sizes) -> Sample:
        return _w2_kincir(sizes, backlog=True)

    got = ctx.measure(
        [
            _one("kincir", _w2_kincir),
            _one("kincir backlog", backlog),
            _one("SimpleQueue", simple_queue),
        ]
    )
    return (
        Row(
            "W2",
            f"1 thread, batches of {BATCH}",
            _measurement(got, "kincir", "msg/s", True),
            _measurement(got, "SimpleQueue", "msg/s", True),
            Goal(">=", 2.0),
        ),
        Row(
            "W2/backlog",
            f"batches of {BATCH}, all held first",
            _measurement(got, "kincir backlog", "msg/s", True),
            _measurement(got, "SimpleQueue", "msg/s", True),
            Goal(">=", 2.0),
        ),
    )


# -- W3: producer thread -> consumer thread -------------------------------------------------------


def _w3_kincir(sizes: Sizes) -> Sample:
    n = sizes.w3_messages
    broker = _fast_broker()
    sub = _subscriber(broker, TOPIC)
    pub = InMemoryPublisher(broker)

    def produce() -> None:
        publish = pub.publish_nowait
        payload = PAYLOAD
        for _ in range(n):
            publish(TOPIC, [Message(payload)])

    def consume() -> None:
        receive = sub.receive_sync
        for _ in range(n):
            receive()

    elapsed = _thread_pair(produce, consume, broker.force_shutdown)
    _check(sub.try_receive() is None, "W3: kincir delivered too few")
    broker.force_shutdown()
    return _throughput(n, elapsed)


def _w3_queue(
    factory: Callable[[], queue.SimpleQueue[bytes] | queue.Queue[bytes]],
) -> Callable[[Sizes], Sample]:
    def run(sizes: Sizes) -> Sample:
        n = sizes.w3_messages
        q = factory()

        def produce() -> None:
            put = q.put
            payload = PAYLOAD
            for _ in range(n):
                put(payload)

        def consume() -> None:
            get = q.get
            for _ in range(n):
                get()

        return _throughput(n, _thread_pair(produce, consume, lambda: None))

    return run


async def _close_janus(q: Any) -> None:
    aclose = getattr(q, "aclose", None)
    if aclose is not None:
        await aclose()
    else:
        q.close()
        await q.wait_closed()


def _w3_janus(janus: ModuleType) -> Callable[[Sizes], Sample]:
    """janus's sync side on both threads; its queue lives on an event loop in a third thread."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.w3_messages
        loop = asyncio.new_event_loop()
        runner = threading.Thread(
            target=loop.run_forever, name="kincir-bench-janus-loop", daemon=True
        )
        runner.start()
        try:

            async def make() -> Any:
                return janus.Queue()

            q = asyncio.run_coroutine_threadsafe(make(), loop).result(STUCK_AFTER)
            sync_q = q.sync_q

            def produce() -> None:
                put = sync_q.put
                payload = PAYLOAD
                for _ in range(n):
                    put(payload)

            def consume() -> None:
                get = sync_q.get
                for _ in range(n):
                    get()

            elapsed = _thread_pair(produce, consume, lambda: None)
            asyncio.run_coroutine_threadsafe(_close_janus(q), loop).result(STUCK_AFTER)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            runner.join(STUCK_AFTER)
            loop.close()
        return _throughput(n, elapsed)

    return run


def _workload_w3(ctx: _Context) -> tuple[Row, ...]:
    sides = [
        _one("kincir", _w3_kincir),
        _one("SimpleQueue", _w3_queue(queue.SimpleQueue)),
        _one("queue.Queue", _w3_queue(queue.Queue)),
    ]
    if ctx.janus is not None:
        sides.append(_one("janus", _w3_janus(ctx.janus), optional=True))
    got = ctx.measure(sides)
    kincir_side = _measurement(got, "kincir", "msg/s", True)
    extras = (
        (_measurement(got, "janus", "msg/s", True, "janus (sync_q)"),) if "janus" in got else ()
    )
    return (
        Row(
            "W3",
            "thread -> thread",
            kincir_side,
            _measurement(got, "SimpleQueue", "msg/s", True),
            Goal(">=", 0.5),
            extras=extras,
        ),
        Row(
            "W3/Queue",
            "thread -> thread",
            kincir_side,
            _measurement(got, "queue.Queue", "msg/s", True),
            Goal(">=", 10.0),
        ),
    )


# -- W4: fan-out ----------------------------------------------------------------------------------


def _w4_kincir(sizes: Sizes) -> Sample:
    n = sizes.w4_messages
    broker = _fast_broker()
    subs = [_subscriber(broker, TOPIC) for _ in range(FANOUT)]
    publish = InMemoryPublisher(broker).publish_nowait
    payload = PAYLOAD
    counts = []
    started = _now()
    for _ in range(n):
        publish(TOPIC, [Message(payload)])
    for sub in subs:
        take = sub.try_receive_batch
        got = 0
        while True:
            batch = take(DRAIN_BATCH)
            if not batch:
                break
            got += len(batch)
        counts.append(got)
    elapsed = _now() - started
    _check(counts == [n] * FANOUT, f"W4: subscribers got {counts}, not {n} each")
    broker.force_shutdown()
    sample = _throughput(n * FANOUT, elapsed)
    sample.raw["subscribers"] = FANOUT
    return sample


def _w4_simple_queues(sizes: Sizes) -> Sample:
    n = sizes.w4_messages
    queues: list[queue.SimpleQueue[bytes]] = [queue.SimpleQueue() for _ in range(FANOUT)]
    puts = [q.put for q in queues]
    gets = [q.get for q in queues]
    payload = PAYLOAD
    started = _now()
    for _ in range(n):
        for put in puts:
            put(payload)
    for get in gets:
        for _ in range(n):
            get()
    elapsed = _now() - started
    sample = _throughput(n * FANOUT, elapsed)
    sample.raw["subscribers"] = FANOUT
    return sample


def _w4_publish_cost(subscribers: int) -> Callable[[Sizes], Sample]:
    def run(sizes: Sizes) -> Sample:
        n = sizes.w4_publishes
        broker = _fast_broker()
        subs = [_subscriber(broker, TOPIC) for _ in range(subscribers)]
        publish = InMemoryPublisher(broker).publish_nowait
        payload = PAYLOAD
        started = _now()
        for _ in range(n):
            publish(TOPIC, [Message(payload)])
        elapsed = _now() - started
        _check(subs[-1].try_receive() is not None, "W4: the last subscriber got nothing")
        broker.force_shutdown()
        sample = _cost(n, elapsed, "publishes")
        sample.raw["subscribers"] = subscribers
        return sample

    return run


def _workload_w4(ctx: _Context) -> tuple[Row, ...]:
    many, one = f"{FANOUT_MANY} subs", "1 sub"
    got = ctx.measure(
        [
            _one("kincir", _w4_kincir),
            _one(f"{FANOUT} SimpleQueues", _w4_simple_queues),
            _one(many, _w4_publish_cost(FANOUT_MANY)),
            _one(one, _w4_publish_cost(1)),
        ]
    )
    return (
        Row(
            "W4",
            f"fan-out to {FANOUT} subs, 1 thread",
            _measurement(got, "kincir", "deliveries/s", True),
            _measurement(got, f"{FANOUT} SimpleQueues", "deliveries/s", True),
            Goal(">=", 1.5),
        ),
        Row(
            "W4/fanout",
            f"publish cost, {FANOUT_MANY} vs 1 sub",
            _measurement(got, many, "us/publish", False, f"kincir, {many}"),
            _measurement(got, one, "us/publish", False, f"kincir, {one}"),
            Goal("<=", 1.25),
            ratio_definition=f"{many}/{one}",
        ),
    )


# -- W5: asyncio task -> task ---------------------------------------------------------------------


def _w5_kincir(sizes: Sizes) -> Sample:
    n = sizes.w5_messages

    async def main() -> int:
        broker = _fast_broker()
        sub = _subscriber(broker, TOPIC)
        pub = InMemoryPublisher(broker)

        async def consume() -> int:
            receive = sub.receive
            for _ in range(n):
                await receive()
            return _now()

        async def produce() -> None:
            publish = pub.publish
            payload = PAYLOAD
            for _ in range(n):
                await publish(TOPIC, [Message(payload)])

        started = _now()
        finished, _ = await _together(consume(), produce())
        broker.force_shutdown()
        return int(finished) - started

    return _throughput(n, asyncio.run(main()))


def _w5_asyncio_queue(sizes: Sizes) -> Sample:
    n = sizes.w5_messages

    async def main() -> int:
        q: asyncio.Queue[bytes] = asyncio.Queue()

        async def consume() -> int:
            get = q.get
            for _ in range(n):
                await get()
            return _now()

        async def produce() -> None:
            put = q.put
            payload = PAYLOAD
            for _ in range(n):
                await put(payload)

        started = _now()
        finished, _ = await _together(consume(), produce())
        return int(finished) - started

    return _throughput(n, asyncio.run(main()))


def _workload_w5(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure([_one("kincir", _w5_kincir), _one("asyncio.Queue", _w5_asyncio_queue)])
    return (
        Row(
            "W5",
            "asyncio task -> task",
            _measurement(got, "kincir", "msg/s", True),
            _measurement(got, "asyncio.Queue", "msg/s", True),
            Goal(">=", 2.0),
        ),
    )


# -- W6: ping-pong latency ------------------------------------------------------------------------


def _w6_threads_kincir(sizes: Sizes) -> Sample:
    trips = sizes.w6_thread_trips
    broker = _fast_broker()
    ping_sub = _subscriber(broker, PING)
    pong_sub = _subscriber(broker, PONG)
    ping_pub = InMemoryPublisher(broker)
    pong_pub = InMemoryPublisher(broker)

    def pong() -> None:
        receive = ping_sub.receive_sync
        publish = pong_pub.publish_nowait
        payload = PAYLOAD
        for _ in range(trips):
            receive()
            publish(PONG, [Message(payload)])

    def ping() -> list[int]:
        receive = pong_sub.receive_sync
        publish = ping_pub.publish_nowait
        payload = PAYLOAD
        now = _now
        times = [0] * trips
        for i in range(trips):
            started = now()
            publish(PING, [Message(payload)])
            receive()
            times[i] = now() - started
        return times

    sample = _ping_pong_threads(ping, pong, broker.force_shutdown)
    broker.force_shutdown()
    return sample


def _w6_threads_simple_queue(sizes: Sizes) -> Sample:
    trips = sizes.w6_thread_trips
    pings: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    pongs: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def pong() -> None:
        get, put = pings.get, pongs.put
        payload = PAYLOAD
        for _ in range(trips):
            get()
            put(payload)

    def ping() -> list[int]:
        get, put = pongs.get, pings.put
        payload = PAYLOAD
        now = _now
        times = [0] * trips
        for i in range(trips):
            started = now()
            put(payload)
            get()
            times[i] = now() - started
        return times

    return _ping_pong_threads(ping, pong, lambda: None)


def _w6_async_kincir(sizes: Sizes) -> Sample:
    trips = sizes.w6_async_trips

    async def main() -> list[int]:
        broker = _fast_broker()
        ping_sub = _subscriber(broker, PING)
        pong_sub = _subscriber(broker, PONG)
        ping_pub = InMemoryPublisher(broker)
        pong_pub = InMemoryPublisher(broker)

        async def pong() -> None:
            receive = ping_sub.receive
            publish = pong_pub.publish
            payload = PAYLOAD
            for _ in range(trips):
                await receive()
                await publish(PONG, [Message(payload)])

        async def ping() -> list[int]:
            receive = pong_sub.receive
            publish = ping_pub.publish
            payload = PAYLOAD
            now = _now
            times = [0] * trips
            for i in range(trips):
                started = now()
                await publish(PING, [Message(payload)])
                await receive()
                times[i] = now() - started
            return times

        _, times = await _together(pong(), ping())
        broker.force_shutdown()
        return list(times)

    return _latency(asyncio.run(main()))


def _w6_async_queue(sizes: Sizes) -> Sample:
    trips = sizes.w6_async_trips

    async def main() -> list[int]:
        pings: asyncio.Queue[bytes] = asyncio.Queue()
        pongs: asyncio.Queue[bytes] = asyncio.Queue()

        async def pong() -> None:
            get, put = pings.get, pongs.put
            payload = PAYLOAD
            for _ in range(trips):
                await get()
                await put(payload)

        async def ping() -> list[int]:
            get, put = pongs.get, pings.put
            payload = PAYLOAD
            now = _now
            times = [0] * trips
            for i in range(trips):
                started = now()
                await put(payload)
                await get()
                times[i] = now() - started
            return times

        _, times = await _together(pong(), ping())
        return list(times)

    return _latency(asyncio.run(main()))


def _workload_w6(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure(
        [
            _one("kincir threads", _w6_threads_kincir),
            _one("2 SimpleQueues", _w6_threads_simple_queue),
            _one("kincir asyncio", _w6_async_kincir),
            _one("2 asyncio.Queues", _w6_async_queue),
        ]
    )
    return (
        Row(
            "W6/threads",
            "ping-pong p50, 2 threads",
            _measurement(got, "kincir threads", "us", False, "kincir"),
            _measurement(got, "2 SimpleQueues", "us", False),
            Goal(">=", 1.0),
            ratio_definition="base/kincir",
            inverted=True,
        ),
        Row(
            "W6/asyncio",
            "ping-pong p50, 2 tasks",
            _measurement(got, "kincir asyncio", "us", False, "kincir"),
            _measurement(got, "2 asyncio.Queues", "us", False),
            Goal(">=", 1.0),
            ratio_definition="base/kincir",
            inverted=True,
        ),
    )


# -- W7: producer thread -> asyncio consumer ------------------------------------------------------


def _w7_kincir(sizes: Sizes) -> Sample:
    n = sizes.w7_messages

    async def main() -> int:
        broker = _fast_broker()
        sub = _subscriber(broker, TOPIC)
        pub = InMemoryPublisher(broker)

        def produce() -> None:
            publish = pub.publish_nowait
            payload = PAYLOAD
            for _ in range(n):
                publish(TOPIC, [Message(payload)])

        async def consume() -> int:
            receive = sub.receive
            for _ in range(n):
                await receive()
            return _now()

        try:
            return await _thread_to_loop(produce, consume())
        finally:
            broker.force_shutdown()

    return _throughput(n, asyncio.run(main()))


def _w7_asyncio_queue(sizes: Sizes) -> Sample:
    n = sizes.w7_messages

    async def main() -> int:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes] = asyncio.Queue()

        def produce() -> None:
            call = loop.call_soon_threadsafe
            put = q.put_nowait
            payload = PAYLOAD
            for _ in range(n):
                call(put, payload)

        async def consume() -> int:
            get = q.get
            for _ in range(n):
                await get()
            return _now()

        return await _thread_to_loop(produce, consume())

    return _throughput(n, asyncio.run(main()))


def _w7_janus(janus: ModuleType) -> Callable[[Sizes], Sample]:
    def run(sizes: Sizes) -> Sample:
        n = sizes.w7_messages

        async def main() -> int:
            q = janus.Queue()
            try:

                def produce() -> None:
                    put = q.sync_q.put
                    payload = PAYLOAD
                    for _ in range(n):
                        put(payload)

                async def consume() -> int:
                    get = q.async_q.get
                    for _ in range(n):
                        await get()
                    return _now()

                return await _thread_to_loop(produce, consume())
            finally:
                await _close_janus(q)

        return _throughput(n, asyncio.run(main()))

    return run


def _workload_w7(ctx: _Context) -> tuple[Row, ...]:
    sides = [_one("kincir", _w7_kincir), _one("asyncio.Queue", _w7_asyncio_queue)]
    if ctx.janus is not None:
        sides.append(_one("janus", _w7_janus(ctx.janus), optional=True))
    got = ctx.measure(sides)
    extras = (
        (_measurement(got, "janus", "msg/s", True, "janus (sync_q -> async_q)"),)
        if "janus" in got
        else ()
    )
    return (
        Row(
            "W7",
            "thread -> asyncio task",
            _measurement(got, "kincir", "msg/s", True),
            _measurement(got, "asyncio.Queue", "msg/s", True, "asyncio.Queue (threadsafe)"),
            Goal(">=", 6.0),
            extras=extras,
            notes=(
                "W7: the baseline's producer thread calls "
                "loop.call_soon_threadsafe(q.put_nowait, payload) per message.",
            ),
        ),
    )


# -- M: memory per queued message -----------------------------------------------------------------


def _m_kincir(sizes: Sizes) -> Sample:
    n = sizes.m_messages
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        broker = InMemoryBroker()
        sub = _subscriber(broker, TOPIC)
        publish = InMemoryPublisher(broker).publish_nowait
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            publish(TOPIC, [Message(i.to_bytes(PAYLOAD_SIZE, "big"))])
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not already:
            tracemalloc.stop()
    health = broker.health_check()
    _check(health.total_queued_messages == n, f"M: {health.total_queued_messages} queued, not {n}")
    _check(sub.is_subscribed(), "M: the subscriber left")
    broker.force_shutdown()
    traced = after - before
    return Sample(
        traced / n,
        {
            "messages": n,
            "traced_bytes": traced,
            "memory_usage_estimate": health.memory_usage_estimate,
        },
    )


def _workload_m(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure([_one("kincir", _m_kincir)])
    samples = got["kincir"]
    estimate = statistics.median(
        s.raw["memory_usage_estimate"] / s.raw["messages"] for s in samples
    )
    payload_alone = sys.getsizeof(bytes(PAYLOAD_SIZE))
    return (
        Row(
            "M",
            "memory per queued message",
            _measurement(got, "kincir", "B/msg", False),
            None,
            Goal("<=", 200, on="value", unit="B"),
            ratio_definition="",
            notes=(
                f"M: tracemalloc's delta over {ctx.sizes.m_messages:,} queued messages (default "
                f"config, 1 subscriber not reading), each payload object ({payload_alone} B) "
                "included. tracemalloc sees only memory allocated through Python's allocators, "
                "not C malloc/calloc. The broker's own memory_usage_estimate says "
                f"{estimate:,.0f} B/msg.",
            ),
        ),
    )


# -- H: health and stats cost vs queued messages --------------------------------------------------


def _h_kincir(sizes: Sizes) -> dict[str, Sample]:
    queued, calls = sizes.h_queued, sizes.h_calls
    broker = InMemoryBroker(InMemoryConfig(enable_stats=True))
    _subscriber(broker, TOPIC)
    publish = InMemoryPublisher(broker).publish_nowait

    def per_call(fn: Callable[[], object]) -> Sample:
        started = _now()
        for _ in range(calls):
            fn()
        return _cost(calls, _now() - started)

    out = {"health empty": per_call(broker.health_check), "stats empty": per_call(broker.stats)}
    batch = [PAYLOAD] * 1000
    for _ in range(queued // len(batch)):
        publish(TOPIC, batch)
    if queued % len(batch):
        publish(TOPIC, batch[: queued % len(batch)])
    held = broker.health_check().total_queued_messages
    _check(held == queued, f"H: {held} queued, not {queued}")
    gc.collect()
    out["health full"] = per_call(broker.health_check)
    out["stats full"] = per_call(broker.stats)
    broker.force_shutdown()
    for name, sample in out.items():
        sample.raw["queued"] = queued if name.endswith("full") else 0
    return out


def _workload_h(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure([_Side("kincir", _h_kincir)])
    full = f"{ctx.sizes.h_queued:,} queued"
    many = _count(ctx.sizes.h_queued)
    return tuple(
        Row(
            f"H/{key}",
            f"{call}(), {many} vs 0 queued",
            _measurement(got, f"{key} full", "us/call", False, f"kincir, {full}"),
            _measurement(got, f"{key} empty", "us/call", False, "kincir, 0 queued"),
            Goal("<=", 1.5),
            ratio_definition=f"{many}/empty",
        )
        for key, call in (("health", "health_check"), ("stats", "stats"))
    )


# -- G: a consumer group of worker threads ----------------------------------------------------


WORKERS = 4


def _run_threads(targets: Sequence[Callable[[], None]], abort: Callable[[], None]) -> int:
    """Run each target on a thread; nanoseconds until all of them returned."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                abort()

        return run

    threads = [
        threading.Thread(target=guarded(fn), name="kincir-bench-worker", daemon=True)
        for fn in targets
    ]
    started = _now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STUCK_AFTER)
    elapsed = _now() - started
    if any(thread.is_alive() for thread in threads):
        abort()
        raise BenchError(f"worker threads still running after {STUCK_AFTER:g} s")
    if errors:
        raise BenchError(
            f"a worker thread failed: {type(errors[0]).__name__}: {errors[0]}"
        ) from errors[0]
    return elapsed


def _g_kincir(acking: bool) -> Callable[[Sizes], Sample]:
    """A producer thread -> a group of WORKERS member threads (acking: each message acked)."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.g_messages
        broker = _fast_broker()
        members: list[Any] = [
            InMemoryAckSubscriber(broker, "workers")
            if acking
            else InMemorySubscriber(broker, "workers")
            for _ in range(WORKERS)
        ]
        for member in members:
            member.subscribe(TOPIC)
        pub = InMemoryPublisher(broker)
        counts = [0] * WORKERS

        def produce() -> None:
            publish = pub.publish_nowait
            payload = PAYLOAD
            for _ in range(n):
                publish(TOPIC, [Message(payload)])
            broker.shutdown()  # members drain what is left, then their loops end

        def work(i: int) -> Callable[[], None]:
            member = members[i]

            def loop() -> None:
                got = 0
                if acking:
                    receive, ack = member.receive_with_ack_sync, member.ack
                    while True:
                        try:
                            _, handle = receive()
                        except Exception:  # BrokerShutdown: drained
                            break
                        ack(handle)
                        got += 1
                else:
                    for _ in member:
                        got += 1
                counts[i] = got

            return loop

        elapsed = _run_threads([produce, *(work(i) for i in range(WORKERS))], broker.force_shutdown)
        _check(sum(counts) == n, f"G: the group received {sum(counts)}, not {n}")
        broker.force_shutdown()
        sample = _throughput(n, elapsed)
        sample.raw["workers"] = WORKERS
        return sample

    return run


def _g_queue(factory: Callable[[], Any], task_done: bool) -> Callable[[Sizes], Sample]:
    """A producer thread -> WORKERS threads sharing one stdlib queue (``task_done`` per item,
    the stdlib's acknowledgement, with ``queue.Queue``)."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.g_messages
        q = factory()
        counts = [0] * WORKERS

        def produce() -> None:
            put = q.put
            payload = PAYLOAD
            for _ in range(n):
                put(payload)
            for _ in range(WORKERS):
                put(None)

        def work(i: int) -> Callable[[], None]:
            def loop() -> None:
                get = q.get
                done = q.task_done if task_done else None
                got = 0
                while get() is not None:
                    got += 1
                    if done is not None:
                        done()
                counts[i] = got

            return loop

        elapsed = _run_threads([produce, *(work(i) for i in range(WORKERS))], lambda: None)
        _check(sum(counts) == n, f"G: the queue's workers got {sum(counts)}, not {n}")
        return _throughput(n, elapsed)

    return run


def _workload_g(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure(
        [
            _one("kincir", _g_kincir(False)),
            _one("kincir ack", _g_kincir(True)),
            _one("SimpleQueue", _g_queue(queue.SimpleQueue, False)),
            _one("queue.Queue", _g_queue(queue.Queue, True)),
        ]
    )
    return (
        Row(
            "G",
            f"thread -> group of {WORKERS} threads",
            _measurement(got, "kincir", "msg/s", True),
            _measurement(got, "SimpleQueue", "msg/s", True),
            None,
        ),
        Row(
            "G/ack",
            f"same, each message acked ({WORKERS} ack subscribers)",
            _measurement(got, "kincir ack", "msg/s", True, "kincir, ack"),
            _measurement(got, "queue.Queue", "msg/s", True, "queue.Queue, task_done"),
            None,
        ),
    )


# -- R: a Router stage --------------------------------------------------------------------------


def _r_kincir(workers: int) -> Callable[[Sizes], Sample]:
    return lambda sizes: _r_kincir_run(sizes, workers)


def _r_kincir_run(sizes: Sizes, workers: int) -> Sample:
    n = sizes.r_messages
    broker = _fast_broker()
    out = _subscriber(broker, "bench.out")
    router = kincir.Router(broker, TOPIC, "bench.out", lambda msg: msg, concurrency=workers)
    router.start()
    pub = InMemoryPublisher(broker)

    def produce() -> None:
        publish = pub.publish_nowait
        payload = PAYLOAD
        for _ in range(n):
            publish(TOPIC, [Message(payload)])

    def consume() -> None:
        receive = out.receive_sync
        for _ in range(n):
            receive(STUCK_AFTER)

    try:
        elapsed = _thread_pair(produce, consume, broker.force_shutdown)
    finally:
        router.stop(STUCK_AFTER)
        broker.force_shutdown()
    stats = router.stats()
    _check(stats.acked == n, f"R: the router acked {stats.acked}, not {n}")
    sample = _throughput(n, elapsed)
    sample.raw["workers"] = workers
    return sample


def _r_queues(workers: int) -> Callable[[Sizes], Sample]:
    return lambda sizes: _r_queues_run(sizes, workers)


def _r_queues_run(sizes: Sizes, workers: int) -> Sample:
    """The same stage by hand: worker threads, queue.Queue in (task_done), queue.Queue out."""
    n = sizes.r_messages
    inbox: queue.Queue[bytes | None] = queue.Queue()
    outbox: queue.Queue[bytes] = queue.Queue()

    def handler(item: bytes) -> bytes:
        return item

    def stage() -> None:
        get, put, done = inbox.get, outbox.put, inbox.task_done
        while (item := get()) is not None:
            put(handler(item))
            done()

    threads = [
        threading.Thread(target=stage, name="kincir-bench-stage", daemon=True)
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()

    def produce() -> None:
        put = inbox.put
        payload = PAYLOAD
        for _ in range(n):
            put(payload)

    def consume() -> None:
        get = outbox.get
        for _ in range(n):
            get()

    try:
        elapsed = _thread_pair(produce, consume, lambda: None)
    finally:
        for _ in threads:
            inbox.put(None)
        for thread in threads:
            thread.join(STUCK_AFTER)
    return _throughput(n, elapsed)


def _workload_r(ctx: _Context) -> tuple[Row, ...]:
    got = ctx.measure(
        [
            _one("kincir", _r_kincir(1)),
            _one("queue.Queue", _r_queues(1)),
            _one(f"kincir x{WORKERS}", _r_kincir(WORKERS)),
            _one(f"queue.Queue x{WORKERS}", _r_queues(WORKERS)),
        ]
    )
    return (
        Row(
            "R",
            "Router, 1 worker thread, ack on success",
            _measurement(got, "kincir", "msg/s", True, "kincir Router"),
            _measurement(got, "queue.Queue", "msg/s", True, "queue.Queue stage"),
            None,
        ),
        Row(
            f"R/{WORKERS}",
            f"Router, {WORKERS} worker threads",
            _measurement(got, f"kincir x{WORKERS}", "msg/s", True, "kincir Router"),
            _measurement(got, f"queue.Queue x{WORKERS}", "msg/s", True, "queue.Queue stage"),
            None,
        ),
    )


def _count(n: int) -> str:
    """1000000 -> "1M", 20000 -> "20k"."""
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


#: Every workload, in the order they run and print.
WORKLOADS: tuple[Workload, ...] = (
    Workload("W1", "one thread, a Message per publish", _workload_w1),
    Workload("W2", "one thread, batches of raw payloads", _workload_w2),
    Workload("W3", "producer thread -> consumer thread", _workload_w3),
    Workload("W4", "fan-out", _workload_w4),
    Workload("W5", "asyncio producer task -> consumer task", _workload_w5),
    Workload("W6", "ping-pong latency", _workload_w6),
    Workload("W7", "thread -> asyncio task", _workload_w7),
    Workload("M", "memory per queued message", _workload_m),
    Workload("H", "health_check() and stats() cost", _workload_h),
    Workload("G", "consumer group of worker threads", _workload_g),
    Workload("R", "Router stage", _workload_r),
)
_BY_KEY = {w.key: w for w in WORKLOADS}


def _import_janus() -> ModuleType | None:
    try:
        return importlib.import_module("janus")
    except Exception:  # not installed, or broken: janus is never required
        return None


def run_bench(
    settings: BenchSettings | None = None, progress: Callable[[str], None] | None = None
) -> BenchReport:
    """Run the selected workloads and return what they measured; prints nothing.

    ``progress`` is called with a line of text before each warm-up and repetition. A workload
    that fails is reported with its error; the others still run.
    """
    settings = settings or BenchSettings()
    janus = _import_janus()
    ctx = _Context(settings, progress, janus)
    started_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    started = _now()
    selected = settings.workloads()
    results = []
    for index, workload in enumerate(selected, 1):
        ctx.begin(index, len(selected), workload)
        began = _now()
        try:
            rows = workload.measure(ctx)
            error = None
        except Exception as exc:
            rows = ()
            error = f"{type(exc).__name__}: {exc}"
        results.append(
            WorkloadResult(
                workload.key,
                workload.title,
                rows,
                (_now() - began) / 1e9,
                error,
                tuple(ctx.notes),
            )
        )
        gc.collect()
    return BenchReport(
        settings=settings,
        sizes=ctx.sizes,
        machine=machine_info(janus),
        workloads=tuple(results),
        started_at=started_at,
        seconds=(_now() - started) / 1e9,
    )


# -- output ---------------------------------------------------------------------------------------


def _format_value(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f}M {unit}"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k {unit}"
        return f"{value:.0f} {unit}"
    if unit.startswith("us"):
        return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:.3g} {unit}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def _format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if math.isinf(ratio):
        return "inf"
    return f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"


def _verdict(row: Row) -> str:
    met = row.met
    return "-" if met is None else ("met" if met else "NOT MET")


def _machine_line(m: MachineInfo) -> str:
    cpus = (
        f"{m.cpu_count} CPUs"
        if m.usable_cpus in (None, m.cpu_count)
        else f"{m.usable_cpus} of {m.cpu_count} CPUs usable"
    )
    return (
        f"kincir {m.kincir_version} (engine: {m.kincir_implementation}), "
        f"{m.python_implementation} {m.python_version}, {m.platform}, {cpus}"
    )


def format_table(report: BenchReport) -> str:
    """The table of medians, ratios and goals, with its legend and notes."""
    s = report.settings
    has_extras = any(row.extras for row in report.rows())
    header = [
        "id",
        "workload",
        "kincir",
        "baseline",
        "ratio",
        "ratio =",
        "goal",
        "result",
        "spread",
    ]
    if has_extras:
        header[5:5] = ["janus", "vs janus"]
    table: list[list[str]] = [header]
    errors: list[str] = []
    notes: list[str] = []
    for workload in report.workloads:
        if workload.error is not None:
            errors.append(f"{workload.key}: ERROR {workload.error}")
        notes.extend(workload.notes)
        for row in workload.rows:
            notes.extend(row.notes)
            ref = row.reference
            line = [
                row.id,
                row.name,
                _format_value(row.subject.median, row.subject.unit),
                "-" if ref is None else f"{ref.label} {_format_value(ref.median, ref.unit)}",
                _format_ratio(row.ratio),
                row.ratio_definition or "-",
                "-" if row.goal is None else row.goal.text(),
                _verdict(row),
                f"{row.spread:.0%}" if s.repeat > 1 else "-",
            ]
            if has_extras:
                extra = row.extras[0] if row.extras else None
                line[5:5] = (
                    ["-", "-"]
                    if extra is None
                    else [
                        _format_value(extra.median, extra.unit),
                        _format_ratio(row.extra_ratio(extra)),
                    ]
                )
            table.append(line)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        f"kincir bench - {_machine_line(report.machine)}",
        f"{s.repeat} repetition{'s' if s.repeat != 1 else ''} per side after a warm-up, "
        f"median shown; {PAYLOAD_SIZE}-byte payloads"
        + ("; --quick sizes" if s.quick else "")
        + (f"; sizes x{s.scale:g}" if s.scale != 1.0 else ""),
        "",
    ]
    for i, line in enumerate(table):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines += errors
    met, total = report.goals()
    lines.append("")
    if s.suite is None:  # another suite explains its ratios in its notes
        lines += [
            "ratio: throughput is kincir/base and latency base/kincir, so > 1 means kincir is "
            "better; the",
            "       W4/fanout and H rows compare kincir with itself: cost ratios, lower is better.",
        ]
    if s.repeat > 1:
        lines.append("spread: (max - min) / median over the repetitions, worst side of the row.")
    janus = report.machine.janus_version
    if janus is None and any(w.key in ("W3", "W7") for w in report.workloads):
        lines.append("janus: not installed, so W3 and W7 have no janus column.")
    elif janus is not None and s.suite is None:
        lines.append(f"janus {janus}: vs janus = same ratio rule as the baseline column.")
    for note in notes:
        lines += textwrap.wrap(note, 100, subsequent_indent="   ")
    lines += [
        "",
        f"goals met: {met} of {total}; {len(report.workloads)} workloads in "
        f"{report.seconds:.1f} s" + (f"; {len(errors)} failed" if errors else ""),
    ]
    return "\n".join(lines)


def _measurement_json(role: str, m: Measurement) -> dict[str, Any]:
    return {
        "role": role,
        "label": m.label,
        "unit": m.unit,
        "higher_is_better": m.higher_is_better,
        "median": m.median,
        "values": list(m.values),
        "repetitions": [dict(sample.raw) for sample in m.samples],
    }


def _row_json(row: Row) -> dict[str, Any]:
    measurements = [_measurement_json("kincir", row.subject)]
    if row.reference is not None:
        measurements.append(_measurement_json("baseline", row.reference))
    measurements += [_measurement_json("extra", extra) for extra in row.extras]
    return {
        "id": row.id,
        "name": row.name,
        "ratio": row.ratio,
        "ratio_definition": row.ratio_definition or None,
        "paired_ratios": list(row.paired_ratios()),
        "extra_ratios": {extra.label: row.extra_ratio(extra) for extra in row.extras},
        "goal": None
        if row.goal is None
        else {
            "op": row.goal.op,
            "threshold": row.goal.threshold,
            "on": row.goal.on,
            "text": row.goal.text(),
        },
        "met": row.met,
        "measurements": measurements,
        "notes": list(row.notes),
    }


def report_json(report: BenchReport) -> dict[str, Any]:
    """Everything the run measured, every repetition's raw numbers included, as JSON data."""
    met, total = report.goals()
    return {
        "format": "kincir-bench/1",
        "started_at": report.started_at,
        "seconds": report.seconds,
        "machine": dataclasses.asdict(report.machine),
        "settings": {
            "repeat": report.settings.repeat,
            "quick": report.settings.quick,
            "scale": report.settings.scale,
            "only": [w.key for w in report.settings.workloads()],
            "payload_size": PAYLOAD_SIZE,
            "sizes": dataclasses.asdict(report.sizes),
        },
        "goals_met": met,
        "goals_total": total,
        "workloads": [
            {
                "id": w.key,
                "title": w.title,
                "seconds": w.seconds,
                "error": w.error,
                "notes": list(w.notes),
                "rows": [_row_json(row) for row in w.rows],
            }
            for w in report.workloads
        ],
    }


def _import_pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed (pip install matplotlib); "
            "kincir and the benchmark itself need nothing"
        ) from exc
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_ratios(report: BenchReport, path: str | os.PathLike[str]) -> None:
    """Draw every row's ratio as a horizontal bar, its goal as a tick, to a PNG file.

    Raises ``PlotUnavailable`` when matplotlib is not importable.
    """
    pyplot = _import_pyplot()
    rows = [row for row in report.rows() if row.ratio is not None and math.isfinite(row.ratio)]
    colours = {True: "#2e7d32", False: "#c62828", None: "#757575"}
    figure, axes = pyplot.subplots(figsize=(10, 1.6 + 0.42 * max(len(rows), 1)))
    positions = list(range(len(rows)))
    ratios = [float(row.ratio or 0.0) for row in rows]
    axes.barh(positions, ratios, color=[colours[row.met] for row in rows], height=0.6)
    for y, row, ratio in zip(positions, rows, ratios, strict=True):
        if row.goal is not None and row.goal.on == "ratio":
            axes.plot([row.goal.threshold] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
        axes.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=8)
    axes.axvline(1.0, color="#9e9e9e", linestyle=":", linewidth=1)
    axes.set_yticks(positions)
    axes.set_yticklabels([f"{row.id}  ({row.ratio_definition})" for row in rows], fontsize=8)
    axes.invert_yaxis()
    if ratios and max(ratios) / max(min(ratios), 1e-9) > 20:
        axes.set_xscale("log")
    axes.set_xlabel(
        "ratio (black tick: goal; green met, red not met; W4/fanout and H: lower is better)"
    )
    m = report.machine
    axes.set_title(
        f"kincir bench: kincir {m.kincir_version} ({m.kincir_implementation}), "
        f"Python {m.python_version}, {m.cpu_count} CPUs, "
        f"median of {report.settings.repeat}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=120)
    pyplot.close(figure)


# -- command line ---------------------------------------------------------------------------------


def _workload_list(text: str) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys(part.strip().upper() for part in text.split(",") if part.strip()))
    if not keys:
        raise argparse.ArgumentTypeError("name at least one workload")
    unknown = [key for key in keys if key not in _BY_KEY]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown)} (choose from {','.join(_BY_KEY)})"
        )
    return keys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to its subparser."""
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=5,
        metavar="N",
        help="timed repetitions per side, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads: the whole run takes well under 30 s",
    )
    parser.add_argument(
        "--only",
        type=_workload_list,
        default=None,
        metavar="W1,W3,...",
        help=f"run only these workloads ({','.join(_BY_KEY)})",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write every repetition's raw numbers and the machine's "
        "description to PATH as JSON",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="also draw the ratios as a bar chart PNG at PATH (needs matplotlib)",
    )
    parser.add_argument(
        "--scale",
        type=positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply every workload size by FACTOR, after --quick; meant for "
        "tests (tiny sizes measure noise) (default: %(default)s)",
    )


class _StderrProgress:
    """Progress on stderr: one line rewritten in place on a terminal, else a line per step."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self._started:6.1f}s] {text}"
        if self._tty:
            sys.stderr.write(f"\r\x1b[K{line}")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run(args: argparse.Namespace, suite: tuple[Workload, ...] | None = None) -> int:
    """Run ``kincir bench`` with parsed options; print the table; 0 when every workload ran.

    ``suite``: the workloads to run instead of ``WORKLOADS`` (``kincir bench --backend``).
    """
    prog = "kincir bench"
    try:
        settings = BenchSettings(
            repeat=args.repeat, quick=args.quick, scale=args.scale, only=args.only, suite=suite
        )
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.plot is not None:
        try:
            _import_pyplot()
        except PlotUnavailable as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    for option, target in (("--json", args.json), ("--plot", args.plot)):
        if target is not None and not Path(target).resolve().parent.is_dir():
            print(
                f"{prog}: error: {option}: no such directory: {Path(target).parent}",
                file=sys.stderr,
            )
            return 2
    progress = _StderrProgress()
    try:
        report = run_bench(settings, progress)
    finally:
        progress.close()
    print(format_table(report))
    status = 0 if report.ok else 1
    if args.json is not None:
        try:
            Path(args.json).write_text(
                json.dumps(report_json(report), indent=2) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            print(f"{prog}: error: cannot write {args.json}: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"raw results: {args.json}")
    if args.plot is not None:
        try:
            plot_ratios(report, args.plot)
        except (PlotUnavailable, OSError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"chart: {args.plot}")
    return status
