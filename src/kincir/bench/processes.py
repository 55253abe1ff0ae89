"""How the process workloads (W8-W10) run: one producer process and its consumer processes.

Processes are started with ``spawn`` (a fresh interpreter each, nothing inherited from the
bench's own threads), so each side's job is a module-level function of ``kincir.bench.workloads``
that takes its arguments and a ``Handshake``. The consumers set up first (subscribe, connect)
and say so; the producer is released once they all have; the clock is the system's monotonic
clock (``perf_counter_ns``), which every process on the host shares, from the producer's first
message to the last consumer's last one.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
from collections.abc import Callable, Sequence
from typing import Any

from .harness import STUCK_AFTER, BenchError, clock

_SPAWN = multiprocessing.get_context("spawn")


@dataclasses.dataclass
class Handshake:
    """What a job uses to take part: ``ready()`` once set up, ``go()`` to wait for the start,
    ``report(value)`` to hand back what it measured (a time, a list of round trips)."""

    started: Any  # a Semaphore the consumers release once set up
    start: Any  # an Event: the producer may go
    results: Any  # a Queue of (index, value)
    index: int = 0

    def ready(self) -> None:
        self.started.release()

    def go(self) -> None:
        self.start.wait()

    def report(self, value: object) -> None:
        self.results.put((self.index, value))


def _run(job: Callable[..., None], args: tuple[Any, ...], hand: Handshake) -> None:
    try:
        job(*args, hand)
    except BaseException as exc:
        hand.report(BenchError(f"{job.__name__} failed: {type(exc).__name__}: {exc}"))
        raise


def run_processes(
    producer: tuple[Callable[..., None], tuple[Any, ...]],
    consumers: Sequence[tuple[Callable[..., None], tuple[Any, ...]]],
) -> list[object]:
    """Run ``consumers`` then ``producer`` (each a job and its arguments) in processes; what
    each reported, the producer's first. A job that fails or a process still running after
    ``STUCK_AFTER`` seconds raises BenchError (every process is ended first)."""
    started, start, results = _SPAWN.Semaphore(0), _SPAWN.Event(), _SPAWN.Queue()
    jobs = [producer, *consumers]
    processes = [
        _SPAWN.Process(
            target=_run, args=(job, args, Handshake(started, start, results, index)), daemon=True
        )
        for index, (job, args) in enumerate(jobs)
    ]
    try:
        for process in processes[1:]:
            process.start()
        for _ in consumers:
            if not started.acquire(timeout=STUCK_AFTER):
                raise BenchError("a consumer process did not get ready")
        processes[0].start()
        start.set()
        got: dict[int, object] = {}
        while len(got) < len(jobs):
            try:
                index, value = results.get(timeout=STUCK_AFTER)
            except queue.Empty:
                raise BenchError(f"a process is stuck ({len(got)} of {len(jobs)} done)") from None
            if isinstance(value, BenchError):
                raise value
            got[index] = value
        for process in processes:
            process.join(STUCK_AFTER)
        return [got[i] for i in range(len(jobs))]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        results.close()


def elapsed(reports: list[object]) -> int:
    """Nanoseconds from the producer's start (its report) to the last consumer's end."""
    first, *ends = reports
    assert isinstance(first, int) and all(isinstance(end, int) for end in ends)
    return max(end for end in ends if isinstance(end, int)) - first


__all__ = ["Handshake", "clock", "elapsed", "run_processes"]
