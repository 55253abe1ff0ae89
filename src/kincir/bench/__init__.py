"""``kincir bench``: kincir measured against the standard library's queues, workload by workload.

Every workload runs kincir and its baseline in the same process and the same run: one warm-up
run of each side at a tenth of the size, then ``repeat`` timed repetitions (default 5), the
sides taking turns within each repetition (their order alternating from one repetition to the
next) so that a noisy machine disturbs both alike. Each repetition builds fresh brokers and
queues. The garbage collector stays enabled, as users have it (a collection runs *between*
timed runs, never inside one). Times come from ``time.perf_counter_ns``. The median over the
repetitions is reported, and every repetition's raw numbers go to ``--json``.

Payloads are 64 bytes, except in W1o, W3o and W5o: there each message carries its own 4-key dict
(``{"id": i, "sku": "A-1", "qty": 3, "price": 9.5}``), the dicts built before the clock starts
and the baselines putting the very same dicts. Per-message workloads send one payload per call
(``send_nowait(topic, p)`` / ``await send(topic, p)``), as a user's loop would; the queue
baselines put the bare payload. Brokers use
``InMemoryConfig.high_performance()`` (unbounded, no ordering metadata, no stats) except where a
workload says otherwise.

=========  ==================================================================================
W1         one thread: ``send_nowait(topic, p)`` x N, then ``try_receive()`` x N;
           vs ``queue.SimpleQueue`` put x N, get x N
W1o        W1 with a dict per message; vs SimpleQueue and ``queue.Queue``, and vs W1's kincir
           side run in the same repetitions (the /bytes row: dict rate / bytes rate)
W2         one thread: batches of 100 raw payloads, ``publish_nowait(topic, batch)`` then
           ``try_receive_batch(100)`` per batch (a reader that keeps up); W2/backlog publishes
           every batch before reading the first (N messages held at once: no goal, it measures
           memory); vs SimpleQueue put/get per message
W3         producer thread -> consumer thread (``send_nowait`` /
           ``receive_sync``), timed until the consumer has N; vs SimpleQueue and
           ``queue.Queue`` (and ``janus`` when installed)
W3o        W3 with a dict per message; vs SimpleQueue and ``queue.Queue`` (no janus), and vs W3's
           kincir side in the same repetitions
W4         one publisher, 8 subscribers, one thread: publish N, then each subscriber drains with
           ``try_receive_batch``; deliveries/s vs 8 SimpleQueues. Also the cost of one publish
           with 64 subscribers against 1 subscriber
W5         asyncio producer task -> consumer task (``await send`` / ``await receive()``); vs
           ``asyncio.Queue``
W5o        W5 with a dict per message; vs ``asyncio.Queue``, and vs W5's kincir side in the same
           repetitions
W6         ping-pong round trip, median (p50) latency: two threads (two topics, ``receive_sync``
           on each side; vs two SimpleQueues) and two asyncio tasks (vs two asyncio.Queues);
           W6/floor sets the threads' round trip against two bare ``threading.Lock`` hand-offs
           (the two wake-ups alone, which every queue's round trip pays)
W7         producer thread -> asyncio consumer (``await receive()``); vs an asyncio.Queue fed by
           ``loop.call_soon_threadsafe(q.put_nowait, item)`` (and ``janus`` when installed)
M          memory per queued message: 100k distinct 64-byte payloads published to a topic with
           one subscriber that never reads (default config); tracemalloc's traced-memory delta
           / N, the payload objects included
H          ``health_check()`` and ``stats()`` per call with 1,000,000 queued messages against
           none (stats enabled)
G          producer thread -> a consumer group of 4 worker threads, plain and acking each
           message; vs 4 threads sharing a SimpleQueue, and a queue.Queue with ``task_done``
R          a ``Router`` stage (1 and 4 worker threads, ack on success); vs the same stage built
           by hand from two ``queue.Queue`` and threads; R/4vs1/wait sets 4 workers against 1
           with a handler that waits 0.5 ms per message (``time.sleep``, as for I/O)
=========  ==================================================================================

Ratios read "greater than 1 is better for kincir": throughput is kincir / baseline, latency is
baseline / kincir. Some rows compare kincir with itself: as cost ratios where lower is better,
W4's publish cost with 64 subscribers / with 1, and H's cost with 1M queued / with none; as rate
ratios where higher is better, the /bytes rows of W1o, W3o and W5o, kincir's rate with a dict per
message / its rate with W1's, W3's, W5's 64-byte payload.

The package: ``harness`` (sizes, samples, repetitions, medians) and ``drive`` (the threads and
tasks a side runs on); ``workloads`` (one module per family: the code each side runs); ``suite``
(the workloads as data, one table, with the project's goals); ``runner`` (``BenchSettings``,
``run_bench``, which does the work and returns a ``BenchReport``, printing nothing);
``results`` (rows, reports); ``report`` (``format_table``, ``report_json``, ``plot_ratios``);
``backends`` (``kincir bench --backend``; its servers and classes come from the registry
``kincir._backends``); ``cli`` (the command line, which prints). ``--scale FACTOR`` multiplies
every workload size: it exists so that tests can run every code path in a blink (the numbers it
gives at tiny sizes are noise).
"""

from __future__ import annotations

from .cli import DESCRIPTION, configure_parser, run
from .harness import BenchError, Measurement, Sample, Sizes
from .report import PlotUnavailable, format_table, plot_ratios, report_json
from .results import BenchReport, Goal, MachineInfo, Row, WorkloadResult, machine_info
from .runner import BenchSettings, run_bench
from .suite import WORKLOADS, Compare, Workload

__all__ = [
    "DESCRIPTION",
    "WORKLOADS",
    "BenchError",
    "BenchReport",
    "BenchSettings",
    "Compare",
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
