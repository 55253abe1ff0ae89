"""The harness: sizes, samples, the repetitions of each side and the medians over them.

Every workload runs its sides (kincir and its baselines) in the same process and the same run:
one warm-up run of each side at a tenth of the size, then ``repeat`` timed repetitions, the sides
taking turns within each repetition (their order alternating from one repetition to the next) so
that a noisy machine disturbs both alike. The garbage collector stays enabled, as users have it
(a collection runs *between* timed runs, never inside one). Times come from
``time.perf_counter_ns``.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import statistics
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from kincir.memory import InMemoryBroker, InMemoryConfig, InMemoryPublisher, InMemorySubscriber

if TYPE_CHECKING:
    from .runner import BenchSettings
    from .suite import Workload

#: Bytes per payload.
PAYLOAD_SIZE = 64
#: The payload the throughput workloads send.
PAYLOAD = bytes(range(PAYLOAD_SIZE))
#: What the object workloads (W1o, W3o, W5o) send: a small dict per message, an order line.
Order = dict[str, int | str | float]
#: Keys per dict payload.
ORDER_KEYS = 4
#: Messages per batch in W2 (and B1-B3's producer).
BATCH = 100
#: How long a two-sided workload may run before it counts as stuck.
STUCK_AFTER = 300.0

TOPIC = "bench"
PING = "bench.ping"
PONG = "bench.pong"

clock = time.perf_counter_ns


class BenchError(RuntimeError):
    """A workload did not do what it measures (lost messages, a stuck or failed side)."""


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
    #: R/wait: each message waits WAIT_SECONDS in its handler, so fewer of them.
    r_wait_messages: int = 2_000
    #: W8-W10 run in processes (kincir.shm against multiprocessing and the IPC libraries).
    w8_messages: int = 400_000
    w8b_messages: int = 2_000_000
    w9_messages: int = 150_000
    w10_trips: int = 5_000
    #: B1-B4 belong to ``kincir bench --backend`` (kincir.bench.backends): sizes a server can take.
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
class Sample:
    """One timed run of one side: its value in the measurement's unit, and the raw numbers."""

    value: float
    raw: dict[str, float]


#: Every repetition's samples, by the name of the side (or part of a side) that took them.
Samples = dict[str, list[Sample]]


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
class Side:
    """One contestant of a workload: runs once at the given sizes, returns its sample(s) by name."""

    label: str
    run: Callable[[Sizes], dict[str, Sample]]
    #: An optional baseline (janus): a failure drops it with a note instead of failing the row.
    optional: bool = False
    #: An optional module the side needs ("janus"): without it the side is left out.
    needs: str | None = None


def one(
    label: str, run: Callable[[Sizes], Sample], optional: bool = False, needs: str | None = None
) -> Side:
    """A side that takes one sample per run, under its own label."""
    return Side(label, lambda sizes: {label: run(sizes)}, optional, needs)


class Context:
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

    def available(self, side: Side) -> bool:
        """Whether the module ``side`` needs (if any) was found for this run."""
        if side.needs is None:
            return True
        if side.needs == "janus":
            return self.janus is not None
        try:  # imported, not just found: kincir.shm is there but refuses on the twin
            importlib.import_module(side.needs)
        except ImportError:
            return False
        return True

    def measure(self, sides: Sequence[Side]) -> Samples:
        """Warm each side up, then run the timed repetitions; samples by name.

        Within a repetition the sides run back to back; their order alternates between
        repetitions. A failed optional side is dropped (with a note).
        """
        live = [side for side in sides if self.available(side)]
        warm = self.sizes.warmup()
        for side in list(live):
            self.say(f"warm-up, {side.label}")
            if not self._attempt(side, warm, live):
                continue
        results: Samples = {}
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

    def _attempt(self, side: Side, sizes: Sizes, live: list[Side]) -> dict[str, Sample] | None:
        gc.collect()
        if not side.optional:
            return side.run(sizes)
        try:
            return side.run(sizes)
        except Exception as exc:  # an optional baseline must not take the workload down
            live.remove(side)
            self.notes.append(f"{side.label} failed and was left out: {type(exc).__name__}: {exc}")
            return None


@functools.lru_cache(maxsize=1)
def orders(n: int) -> list[Order]:
    """``n`` distinct dicts of ORDER_KEYS keys: the object workloads' payloads, one per message.

    Cached, so that every side of a workload (kincir and the queues it is set against) moves the
    very same objects, built before any clock starts; one size at a time (the warm-up's, then the
    repetitions'). ``release_orders()`` lets them go once the workload is done.
    """
    return [{"id": i, "sku": "A-1", "qty": 3, "price": 9.5} for i in range(n)]


def release_orders() -> None:
    """Drop the cached ``orders`` (about 100 MB at W1's full size, which would
    outlive the workload)."""
    orders.cache_clear()


def throughput(count: int, elapsed_ns: int) -> Sample:
    """``count`` messages in ``elapsed_ns``: messages per second."""
    elapsed_ns = max(elapsed_ns, 1)
    return Sample(count * 1e9 / elapsed_ns, {"messages": count, "elapsed_ns": elapsed_ns})


def cost(calls: int, elapsed_ns: int, key: str = "calls") -> Sample:
    """``calls`` calls in ``elapsed_ns``: microseconds per call."""
    return Sample(elapsed_ns / calls / 1000, {key: calls, "elapsed_ns": elapsed_ns})


def latency(times: list[int]) -> Sample:
    """Round trips in nanoseconds: the median in microseconds, percentiles in the raw numbers."""
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


def check(condition: bool, what: str) -> None:
    """``BenchError(what)`` unless ``condition``."""
    if not condition:
        raise BenchError(what)


def fast_broker(config: InMemoryConfig | None = None) -> InMemoryBroker:
    """A broker with ``InMemoryConfig.high_performance()`` unless ``config`` says otherwise."""
    return InMemoryBroker(config or InMemoryConfig.high_performance())


def subscriber(broker: InMemoryBroker, topic: str) -> InMemorySubscriber:
    """A plain subscriber of ``broker``, subscribed to ``topic``."""
    sub = InMemorySubscriber(broker)
    sub.subscribe(topic)
    return sub


def fast_setup(
    topic: str = TOPIC, subscribers: int = 1
) -> tuple[InMemoryBroker, list[InMemorySubscriber], InMemoryPublisher]:
    """A ``fast_broker()``, ``subscribers`` subscribers of ``topic`` and a publisher, made in
    that order: what a workload's kincir side sets up before it starts its clock."""
    broker = fast_broker()
    subs = [subscriber(broker, topic) for _ in range(subscribers)]
    return broker, subs, InMemoryPublisher(broker)
