"""One run of the benchmark: its settings, and ``run_bench``, which measures and prints nothing."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import math
from collections.abc import Callable
from types import ModuleType

from .drive import load_janus
from .harness import Context, Sizes, clock, release_orders
from .results import BenchReport, WorkloadResult, machine_info
from .suite import WORKLOADS, Workload

__all__ = ["BenchSettings", "run_bench"]

#: The workloads of ``WORKLOADS`` by key.
BY_KEY = {w.key: w for w in WORKLOADS}


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
    #: its own, kincir.bench.backends).
    suite: tuple[Workload, ...] | None = None

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError("--scale must be a positive number")
        if self.only is not None:
            known = BY_KEY if self.suite is None else {w.key: w for w in self.suite}
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


def _import_janus() -> ModuleType | None:
    try:
        return load_janus()
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
    ctx = Context(settings, progress, janus)
    started_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    started = clock()
    selected = settings.workloads()
    results = []
    for index, workload in enumerate(selected, 1):
        ctx.begin(index, len(selected), workload)
        began = clock()
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
                (clock() - began) / 1e9,
                error,
                tuple(ctx.notes),
            )
        )
        release_orders()
        gc.collect()
    return BenchReport(
        settings=settings,
        sizes=ctx.sizes,
        machine=machine_info(janus),
        workloads=tuple(results),
        started_at=started_at,
        seconds=(clock() - started) / 1e9,
    )
