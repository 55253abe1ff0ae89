"""The report of a run: the table of medians, ratios and goals met; the JSON; the chart."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import textwrap
from typing import Any

from .harness import ORDER_KEYS, PAYLOAD_SIZE, Measurement
from .results import BenchReport, MachineInfo, Row
from .suite import OBJECT_WORKLOADS

__all__ = ["PlotUnavailable", "format_table", "plot_ratios", "report_json"]


class PlotUnavailable(RuntimeError):
    """``--plot`` needs matplotlib, which is not importable."""


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
        + (
            f" ({', '.join(objects)}: a {ORDER_KEYS}-key dict)"
            if (objects := [w.key for w in report.workloads if w.key in OBJECT_WORKLOADS])
            else ""
        )
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
            "       W4/fanout and H rows compare kincir with itself: cost ratios, lower is better;",
            "       the /bytes rows too, as rates: kincir with dicts / bytes, higher is better.",
        ]
    if s.repeat > 1:
        lines.append("spread: (max - min) / median over the repetitions, worst side of the row.")
    janus = report.machine.janus_version
    if janus is None and any(w.key in ("W3", "W7") for w in report.workloads):
        lines.append("janus: not installed, so W3 and W7 have no janus column.")
    elif janus is not None and s.suite is None:
        lines.append(f"janus {janus}: vs janus = same ratio rule as the baseline column.")
    for note in dict.fromkeys(notes):  # the object workloads share their note
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
            "object_payload_keys": ORDER_KEYS,
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


def import_pyplot() -> Any:
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
    pyplot = import_pyplot()
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
        "ratio (black tick: goal; green met, red not met; W4/fanout and H: lower is better; "
        "/bytes: kincir with dicts / with bytes)"
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
