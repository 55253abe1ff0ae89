"""The workloads as data, and the goals the project set for them: one table, ``WORKLOADS``.

A ``Workload`` names its sides (the contestants: kincir and the baselines, each a function of a
family module in ``kincir.bench.workloads``) and its rows; a ``Compare`` is one row of the table:
which side's samples are set against which, in what unit, and the goal. The unit says which way
is better: a rate (``.../s``) is better higher, and its ratio is kincir/base; a latency (``us``)
is better lower, and its ratio is base/kincir, so that a ratio over 1 is always kincir ahead; a
cost (``us/publish``, ``us/call``) or a size (``B/msg``) is better lower, and its ratio is
kincir/reference, kincir compared with itself.

Two kincir workloads are compared in one run by making the reference one a side of the other:
W1o runs W1's kincir side beside its own (as do W3o and W5o with W3's and W5's), so both take
turns in the same repetitions and their ``/bytes`` row is a rate ratio, kincir with dicts over
kincir with bytes.
"""

from __future__ import annotations

import dataclasses
import queue
import statistics
import sys
from collections.abc import Callable, Mapping

from kincir import AckStrategy

from .harness import BATCH, PAYLOAD_SIZE, Context, Measurement, Samples, Side, one
from .results import Goal, Row
from .workloads import g, h, m, r, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10

__all__ = ["OBJECT_WORKLOADS", "WORKLOADS", "Compare", "Workload"]

#: The workloads whose payload is a dict per message rather than PAYLOAD_SIZE bytes.
OBJECT_WORKLOADS = ("W1o", "W3o", "W5o")


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """One row of the table, as data.

    With a workload's ``facts``, the texts (``name``, the labels, ``ratio``, ``notes``) are
    templates whose ``{placeholders}`` the facts fill.
    """

    #: Unique: "W1", "W3/Queue", "W6/asyncio", "H/stats" ...
    id: str
    #: What the row measures, in a few words.
    name: str
    #: The samples of kincir's side, by the name the side gave them.
    kincir: str
    #: The samples of the baseline (or of kincir in the reference situation); None: no ratio.
    baseline: str | None
    #: The unit of both sides' values.
    unit: str
    #: The target, if the project set one.
    goal: Goal | None = None
    #: The labels the sides are shown under; the samples' names when None.
    kincir_label: str | None = None
    baseline_label: str | None = None
    #: How the ratio is formed; None: "kincir/base", or "base/kincir" for a latency.
    ratio: str | None = None
    #: A further baseline (janus) shown in its own column, when its side ran.
    extra: str | None = None
    extra_label: str | None = None
    #: Remarks printed under the table.
    notes: tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        """A rate is better higher; a latency, a cost or a size lower."""
        return self.unit.endswith("/s")

    @property
    def inverted(self) -> bool:
        """A latency's ratio is base/kincir, so that over 1 is kincir ahead."""
        return self.unit == "us"

    def row(self, samples: Samples, facts: Mapping[str, object] | None = None) -> Row:
        """The row, from every repetition's samples."""

        def text(template: str) -> str:
            return template if facts is None else template.format_map(facts)

        def side(name: str, label: str | None) -> Measurement:
            return Measurement(
                text(label or name), self.unit, self.higher_is_better, tuple(samples[name])
            )

        ratio = self.ratio
        if ratio is None:
            ratio = "base/kincir" if self.inverted else "kincir/base"
        extras: tuple[Measurement, ...] = ()
        if self.extra is not None and self.extra in samples:
            extras = (side(self.extra, self.extra_label),)
        return Row(
            self.id,
            text(self.name),
            side(self.kincir, self.kincir_label),
            None if self.baseline is None else side(self.baseline, self.baseline_label),
            self.goal,
            text(ratio),
            inverted=self.inverted,
            extras=extras,
            notes=tuple(text(note) for note in self.notes),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """One workload: a key for ``--only``, a title, its sides and its rows."""

    key: str
    title: str
    #: The contestants, run in turn in every repetition.
    sides: tuple[Side, ...]
    #: The rows of the table it fills.
    rows: tuple[Compare, ...]
    #: Remarks about the workload as a whole, printed under the table.
    notes: tuple[str, ...] = ()
    #: What fills the rows' ``{placeholders}``, from the run's sizes and samples.
    facts: Callable[[Context, Samples], Mapping[str, object]] | None = None

    def measure(self, ctx: Context) -> tuple[Row, ...]:
        """Run the sides (``ctx.measure``) and build the rows."""
        ctx.notes.extend(self.notes)
        got = ctx.measure(self.sides)
        facts = None if self.facts is None else self.facts(ctx, got)
        rows = []
        for compare in self.rows:
            missing = [n for n in (compare.kincir, compare.baseline) if n and n not in got]
            if missing:  # a side that needs what this machine lacks (faster-fifo, Linux ...)
                ctx.notes.append(f"{compare.id}: left out, {' and '.join(missing)} did not run")
                continue
            rows.append(compare.row(got, facts))
        return tuple(rows)


def count(n: int) -> str:
    """1000000 -> "1M", 20000 -> "20k"."""
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def _memory_facts(ctx: Context, got: Samples) -> Mapping[str, object]:
    return {
        "messages": ctx.sizes.m_messages,
        "payload_alone": sys.getsizeof(bytes(PAYLOAD_SIZE)),
        "estimate": statistics.median(
            s.raw["memory_usage_estimate"] / s.raw["messages"] for s in got["kincir"]
        ),
    }


def _health_facts(ctx: Context, got: Samples) -> Mapping[str, object]:
    return {"queued": f"{ctx.sizes.h_queued:,}", "many": count(ctx.sizes.h_queued)}


def _health_row(key: str, call: str) -> Compare:
    return Compare(
        f"H/{key}",
        f"{call}(), {{many}} vs 0 queued",
        f"{key} full",
        f"{key} empty",
        "us/call",
        Goal("<=", 1.5),
        kincir_label="kincir, {queued} queued",
        baseline_label="kincir, 0 queued",
        ratio="{many}/empty",
    )


def _against_bytes(key: str, what: str) -> Compare:
    """The row of an object workload that sets kincir with dicts against kincir with the bytes
    workload's payload: both sides of one workload, so one run and the same repetitions."""
    return Compare(
        f"{key}/bytes",
        f"{what}, dicts vs bytes",
        "kincir",
        "kincir bytes",
        "msg/s",
        Goal(">=", 0.9),
        kincir_label="kincir, dicts",
        baseline_label="kincir, bytes",
        ratio="dicts/bytes",
    )


#: Said once under the table however many object workloads ran (the report drops repeats).
_OBJECT_NOTES = (
    "W1o, W3o, W5o: each message carries its own 4-key dict (id, sku, qty, price), built before "
    "the clock starts; the queues put the very same dicts. Their /bytes rows set kincir with "
    "dicts against kincir with the bytes workload's 64-byte payload, in the same repetitions.",
)

_SLOWER = Goal(">=", 0.5)
_FASTER = Goal(">=", 2.0)
_AS_FAST = Goal(">=", 1.0)
_VS_QUEUE = Goal(">=", 5.0)
_ROUTER = Goal(">=", 1.5)
# 4 workers whose handler waits: at least three quarters of the 4x they would give if their
# waits overlapped perfectly
_WORKERS_OVERLAP = Goal(">=", 3.0)
_MANY, _ONE = f"{w4.FANOUT_MANY} subs", "1 sub"

#: Every workload, in the order they run and print.
WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "W1",
        "one thread, a send per message",
        (one("kincir", w1.kincir_messages), one("SimpleQueue", w1.simple_queue)),
        (Compare("W1", "1 thread, a send per message", "kincir", "SimpleQueue", "msg/s", _SLOWER),),
    ),
    Workload(
        "W1o",
        "one thread, a dict per message",
        (
            one("kincir", w1.kincir_objects),
            one("kincir bytes", w1.kincir_messages),
            one("SimpleQueue", w1.stdlib_objects(queue.SimpleQueue)),
            one("queue.Queue", w1.stdlib_objects(queue.Queue)),
        ),
        (
            Compare("W1o", "1 thread, a dict per message", "kincir", "SimpleQueue", "msg/s"),
            Compare(
                "W1o/Queue",
                "1 thread, a dict per message",
                "kincir",
                "queue.Queue",
                "msg/s",
                _VS_QUEUE,
            ),
            _against_bytes("W1o", "1 thread"),
        ),
        notes=_OBJECT_NOTES,
    ),
    Workload(
        "W2",
        "one thread, batches of raw payloads",
        (
            one("kincir", w2.kincir_batches),
            one("kincir backlog", w2.kincir_backlog),
            one("SimpleQueue", w2.simple_queue),
        ),
        (
            Compare(
                "W2", f"1 thread, batches of {BATCH}", "kincir", "SimpleQueue", "msg/s", _FASTER
            ),
            Compare(
                "W2/backlog",
                f"batches of {BATCH}, all held first",
                "kincir backlog",
                "SimpleQueue",
                "msg/s",
                notes=(
                    "W2/backlog: a million messages held at once; no goal: bound by memory "
                    "(a 48-byte slot per message, freshly faulted in, where SimpleQueue "
                    "holds an 8-byte pointer)",
                ),
            ),
        ),
    ),
    Workload(
        "W3",
        "producer thread -> consumer thread",
        (
            one("kincir", w3.kincir_messages),
            one("SimpleQueue", w3.stdlib_queue(queue.SimpleQueue)),
            one("queue.Queue", w3.stdlib_queue(queue.Queue)),
            one("janus", w3.janus_sync, optional=True, needs="janus"),
        ),
        (
            Compare(
                "W3",
                "thread -> thread",
                "kincir",
                "SimpleQueue",
                "msg/s",
                _SLOWER,
                extra="janus",
                extra_label="janus (sync_q)",
            ),
            Compare(
                "W3/Queue", "thread -> thread", "kincir", "queue.Queue", "msg/s", Goal(">=", 10.0)
            ),
        ),
    ),
    Workload(
        "W3o",
        "producer thread -> consumer thread, a dict per message",
        (
            one("kincir", w3.kincir_objects),
            one("kincir bytes", w3.kincir_messages),
            one("SimpleQueue", w3.stdlib_objects(queue.SimpleQueue)),
            one("queue.Queue", w3.stdlib_objects(queue.Queue)),
        ),
        (
            Compare("W3o", "thread -> thread, dicts", "kincir", "SimpleQueue", "msg/s"),
            Compare(
                "W3o/Queue", "thread -> thread, dicts", "kincir", "queue.Queue", "msg/s", _VS_QUEUE
            ),
            _against_bytes("W3o", "thread -> thread"),
        ),
        notes=_OBJECT_NOTES,
    ),
    Workload(
        "W4",
        "fan-out",
        (
            one("kincir", w4.kincir_fanout),
            one(f"{w4.FANOUT} SimpleQueues", w4.simple_queues),
            one(_MANY, w4.publish_cost(w4.FANOUT_MANY)),
            one(_ONE, w4.publish_cost(1)),
        ),
        (
            Compare(
                "W4",
                f"fan-out to {w4.FANOUT} subs, 1 thread",
                "kincir",
                f"{w4.FANOUT} SimpleQueues",
                "deliveries/s",
                Goal(">=", 1.5),
            ),
            Compare(
                "W4/fanout",
                f"publish cost, {w4.FANOUT_MANY} vs 1 sub",
                _MANY,
                _ONE,
                "us/publish",
                Goal("<=", 1.25),
                kincir_label=f"kincir, {_MANY}",
                baseline_label=f"kincir, {_ONE}",
                ratio=f"{_MANY}/{_ONE}",
            ),
        ),
    ),
    Workload(
        "W5",
        "asyncio producer task -> consumer task",
        (one("kincir", w5.kincir_messages), one("asyncio.Queue", w5.asyncio_queue)),
        (Compare("W5", "asyncio task -> task", "kincir", "asyncio.Queue", "msg/s", _FASTER),),
    ),
    Workload(
        "W5o",
        "asyncio producer task -> consumer task, a dict per message",
        (
            one("kincir", w5.kincir_objects),
            one("kincir bytes", w5.kincir_messages),
            one("asyncio.Queue", w5.asyncio_objects),
        ),
        (
            Compare("W5o", "asyncio task -> task, dicts", "kincir", "asyncio.Queue", "msg/s"),
            _against_bytes("W5o", "asyncio task -> task"),
        ),
        notes=_OBJECT_NOTES,
    ),
    Workload(
        "W6",
        "ping-pong latency",
        (
            one("kincir threads", w6.kincir_threads),
            one("2 SimpleQueues", w6.simple_queue_threads),
            one("2 Locks", w6.lock_handoff_threads),
            one("kincir asyncio", w6.kincir_tasks),
            one("2 asyncio.Queues", w6.asyncio_queue_tasks),
        ),
        (
            Compare(
                "W6/threads",
                "ping-pong p50, 2 threads",
                "kincir threads",
                "2 SimpleQueues",
                "us",
                _AS_FAST,
                kincir_label="kincir",
            ),
            Compare(
                "W6/floor",
                "ping-pong p50, 2 threads: the wake-ups alone",
                "kincir threads",
                "2 Locks",
                "us",
                kincir_label="kincir",
                baseline_label="2 bare Lock hand-offs",
                notes=(
                    "W6/floor: a round trip of two threads handing two bare threading.Locks "
                    "to each other: only the two wake-ups every queue's round trip pays; "
                    "W6/threads cannot beat it by more than the queue's own instructions",
                ),
            ),
            Compare(
                "W6/asyncio",
                "ping-pong p50, 2 tasks",
                "kincir asyncio",
                "2 asyncio.Queues",
                "us",
                _AS_FAST,
                kincir_label="kincir",
            ),
        ),
    ),
    Workload(
        "W7",
        "thread -> asyncio task",
        (
            one("kincir", w7.kincir_messages),
            one("asyncio.Queue", w7.asyncio_queue),
            one("janus", w7.janus_queue, optional=True, needs="janus"),
        ),
        (
            Compare(
                "W7",
                "thread -> asyncio task",
                "kincir",
                "asyncio.Queue",
                "msg/s",
                Goal(">=", 6.0),
                baseline_label="asyncio.Queue (threadsafe)",
                extra="janus",
                extra_label="janus (sync_q -> async_q)",
                notes=(
                    "W7: the baseline's producer thread calls "
                    "loop.call_soon_threadsafe(q.put_nowait, payload) per message.",
                ),
            ),
        ),
    ),
    Workload(
        "W8",
        "process -> process, a message per call",
        (
            one("kincir.shm", w8.kincir_messages, needs="kincir.shm"),
            one("mp.Queue", w8.mp_queue),
        ),
        (
            Compare(
                "W8",
                "process -> process, a send per message",
                "kincir.shm",
                "mp.Queue",
                "msg/s",
                Goal(">=", 10.0),
                baseline_label="multiprocessing.Queue",
                notes=(
                    "W8-W10: processes started with spawn; the clock runs from the producer's "
                    "first message to the last consumer's last one (the host's monotonic "
                    "clock); kincir.shm rings of {slots} slots of {slot_size} bytes.",
                ),
            ),
        ),
        facts=lambda ctx, got: {"slots": w8.SLOTS, "slot_size": w8.SLOT_SIZE},
    ),
    Workload(
        "W8b",
        f"process -> process, batches of {BATCH}",
        (
            one("kincir.shm", w8.kincir_batches, needs="kincir.shm"),
            one("faster-fifo", w8.faster_fifo, optional=True, needs="faster_fifo"),
            one("pyzmq", w8.pyzmq, optional=True, needs="zmq"),
        ),
        (
            Compare(
                "W8b/fifo",
                f"process -> process, batches of {BATCH}",
                "kincir.shm",
                "faster-fifo",
                "msg/s",
                _FASTER,
                baseline_label="faster-fifo put_many/get_many",
            ),
            Compare(
                "W8b/zmq",
                f"process -> process, batches of {BATCH}",
                "kincir.shm",
                "pyzmq",
                "msg/s",
                _FASTER,
                baseline_label="pyzmq ipc:// PUSH/PULL",
                notes=(
                    "W8b: faster-fifo moves a quarter of the messages (it is the slowest); "
                    "pyzmq sends a frame per message, which zmq batches itself.",
                ),
            ),
        ),
    ),
    Workload(
        "W9",
        f"fan-out, 1 process -> {w9.FANOUT} processes",
        (
            one("kincir.shm", w9.kincir_fanout, needs="kincir.shm"),
            one("mp.Queues", w9.mp_queues),
        ),
        (
            Compare(
                "W9",
                f"fan-out, 1 process -> {w9.FANOUT} processes",
                "kincir.shm",
                "mp.Queues",
                "deliveries/s",
                Goal(">=", 10.0),
                baseline_label=f"{w9.FANOUT} multiprocessing.Queues",
            ),
        ),
    ),
    Workload(
        "W10",
        "ping-pong between two processes",
        (
            one("kincir.shm", w10.kincir_round_trips, needs="kincir.shm"),
            one("mp.Pipe", w10.pipe_round_trips),
        ),
        (
            Compare(
                "W10",
                "process ping-pong, p50 round trip",
                "kincir.shm",
                "mp.Pipe",
                "us",
                _AS_FAST,
                baseline_label="multiprocessing.Pipe (bytes)",
            ),
        ),
    ),
    Workload(
        "M",
        "memory per queued message",
        (one("kincir", m.kincir_memory),),
        (
            Compare(
                "M",
                "memory per queued message",
                "kincir",
                None,
                "B/msg",
                Goal("<=", 200, on="value", unit="B"),
                ratio="",
                notes=(
                    "M: tracemalloc's delta over {messages:,} queued messages (default config, 1 "
                    "subscriber not reading), each payload object ({payload_alone} B) included. "
                    "tracemalloc sees only memory allocated through Python's allocators, not C "
                    "malloc/calloc. The broker's own memory_usage_estimate says {estimate:,.0f} "
                    "B/msg.",
                ),
            ),
        ),
        facts=_memory_facts,
    ),
    Workload(
        "H",
        "health_check() and stats() cost",
        (Side("kincir", h.kincir_calls),),
        (_health_row("health", "health_check"), _health_row("stats", "stats")),
        facts=_health_facts,
    ),
    Workload(
        "G",
        "consumer group of worker threads",
        (
            one("kincir", g.kincir_group(False)),
            one("kincir ack", g.kincir_group(True)),
            one("SimpleQueue", g.stdlib_queue(queue.SimpleQueue, False)),
            one("queue.Queue", g.stdlib_queue(queue.Queue, True)),
        ),
        (
            Compare(
                "G",
                f"thread -> group of {g.WORKERS} threads",
                "kincir",
                "SimpleQueue",
                "msg/s",
                _SLOWER,
            ),
            Compare(
                "G/ack",
                f"same, each message acked ({g.WORKERS} ack subscribers)",
                "kincir ack",
                "queue.Queue",
                "msg/s",
                _FASTER,
                kincir_label="kincir, ack",
                baseline_label="queue.Queue, task_done",
            ),
        ),
    ),
    Workload(
        "R",
        "Router stage",
        (
            one("queue.Queue", r.queue_stage(1)),
            one("kincir", r.kincir_router(1)),
            one("kincir timeout", r.kincir_router(1, processing_timeout=r.TIMEOUT)),
            one("kincir never_ack", r.kincir_router(1, ack_strategy=AckStrategy.NEVER_ACK)),
            one(f"kincir x{g.WORKERS}", r.kincir_router(g.WORKERS)),
            one(f"queue.Queue x{g.WORKERS}", r.queue_stage(g.WORKERS)),
            one("kincir batch", r.kincir_router(1, batch_size=r.BATCH_SIZE)),
            one("queue.Queue batch", r.queue_stage(1, r.BATCH_SIZE)),
            one("kincir waiting", r.kincir_router_waiting(1)),
            one(f"kincir waiting x{g.WORKERS}", r.kincir_router_waiting(g.WORKERS)),
        ),
        (
            Compare(
                "R",
                "Router, 1 worker thread, ack on success",
                "kincir",
                "queue.Queue",
                "msg/s",
                _ROUTER,
                kincir_label="kincir Router",
                baseline_label="queue.Queue stage",
            ),
            Compare(
                f"R/{g.WORKERS}",
                f"Router, {g.WORKERS} worker threads",
                f"kincir x{g.WORKERS}",
                f"queue.Queue x{g.WORKERS}",
                "msg/s",
                _ROUTER,
                kincir_label="kincir Router",
                baseline_label="queue.Queue stage",
            ),
            Compare(
                f"R/{g.WORKERS}vs1",
                f"Router, {g.WORKERS} worker threads vs 1",
                f"kincir x{g.WORKERS}",
                "kincir",
                "msg/s",
                _AS_FAST,
                kincir_label=f"kincir, {g.WORKERS} workers",
                baseline_label="kincir, 1 worker",
                ratio=f"{g.WORKERS}/1",
            ),
            Compare(
                f"R/{g.WORKERS}vs1/Queue",
                f"queue.Queue stage, {g.WORKERS} worker threads vs 1",
                f"queue.Queue x{g.WORKERS}",
                "queue.Queue",
                "msg/s",
                kincir_label=f"queue.Queue, {g.WORKERS} workers",
                baseline_label="queue.Queue, 1 worker",
                ratio=f"{g.WORKERS}/1",
            ),
            Compare(
                f"R/{g.WORKERS}vs1/wait",
                f"Router, {g.WORKERS} workers vs 1, handler waits",
                f"kincir waiting x{g.WORKERS}",
                "kincir waiting",
                "msg/s",
                _WORKERS_OVERLAP,
                kincir_label=f"kincir, {g.WORKERS} workers",
                baseline_label="kincir, 1 worker",
                ratio=f"{g.WORKERS}/1",
            ),
            Compare(
                "R/batch",
                f"Router, batch handler of up to {r.BATCH_SIZE}",
                "kincir batch",
                "queue.Queue batch",
                "msg/s",
                kincir_label="kincir Router",
                baseline_label="queue.Queue stage",
            ),
            Compare(
                "R/timeout",
                "Router with processing_timeout vs without",
                "kincir timeout",
                "kincir",
                "msg/s",
                kincir_label="kincir, timeout",
                baseline_label="kincir, no timeout",
                ratio="timeout/none",
            ),
            Compare(
                "R/never_ack",
                "Router NEVER_ACK vs ack on success",
                "kincir never_ack",
                "kincir",
                "msg/s",
                kincir_label="kincir, NEVER_ACK",
                baseline_label="kincir, ack",
                ratio="never/ack",
            ),
        ),
        notes=(
            "R: the handler returns its input; each side's producer thread publishes (puts) one "
            "message at a time and its consumer thread receives (gets) them one at a time; the "
            "queue.Queue stages are worker threads between two queue.Queue (task_done per item); "
            f"the batch sides take up to {r.BATCH_SIZE} ready messages per handler call.",
            f"R/{g.WORKERS}vs1: the echo handler holds the GIL all the time it runs, so "
            f"{g.WORKERS} workers take turns and 1.0x is the ceiling (R/{g.WORKERS}vs1/Queue: "
            "what taking turns costs the hand-made stage); "
            f"R/{g.WORKERS}vs1/wait: a handler that waits {r.WAIT_SECONDS * 1e3:g} ms per "
            "message (time.sleep, as for I/O), where the workers overlap.",
        ),
    ),
)
