"""What a run measured: rows (kincir against a baseline, with a goal), workloads, the machine.

Ratios read "greater than 1 is better for kincir": throughput is kincir / baseline, latency is
baseline / kincir. Rows that compare kincir with itself are cost ratios where lower is better.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import platform
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import kincir

from .harness import Measurement, Sizes

if TYPE_CHECKING:
    from .runner import BenchSettings


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
