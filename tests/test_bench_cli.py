"""``kincir bench``: the benchmark instrument runs, prints every selected workload and writes JSON.

These are smoke tests, never timing tests: ``--scale`` (a documented knob of ``kincir bench``)
multiplies every workload size, so each run here moves a few hundred messages at most and the
numbers it prints are noise. What is checked is that every selected workload ran, that its rows
carry numbers, and that the options behave.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import re
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import kincir
from kincir import bench
from kincir.__main__ import main

#: The rows each workload prints, by workload key.
ROWS = {
    "W1": ["W1"],
    "W1o": ["W1o", "W1o/Queue", "W1o/bytes"],
    "W2": ["W2", "W2/backlog"],
    "W3": ["W3", "W3/Queue"],
    "W3o": ["W3o", "W3o/Queue", "W3o/bytes"],
    "W4": ["W4", "W4/fanout"],
    "W5": ["W5"],
    "W5o": ["W5o", "W5o/bytes"],
    "W6": ["W6/threads", "W6/floor", "W6/asyncio"],
    "W7": ["W7"],
    "W8": ["W8"],
    "W8b": ["W8b/fifo", "W8b/zmq"],
    "W9": ["W9"],
    "W10": ["W10"],
    "M": ["M"],
    "H": ["H/health", "H/stats"],
    "G": ["G", "G/ack"],
    "R": [
        "R",
        "R/4",
        "R/4vs1",
        "R/4vs1/Queue",
        "R/4vs1/wait",
        "R/batch",
        "R/timeout",
        "R/never_ack",
    ],
}
# rows measured side by side without a goal of the project's (for objects it set two: the rate
# against bytes, and against queue.Queue)
GOALLESS = {
    "R/batch",
    "R/timeout",
    "R/never_ack",
    "R/4vs1/Queue",
    "W1o",
    "W3o",
    "W5o",
    "W6/floor",
    "W2/backlog",
}
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?[kM]? ")
#: One repetition of the ``--quick`` sizes times 0.01.
TINY = ["--quick", "--repeat", "1", "--scale", "0.01"]


def bench_ok(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run ``kincir bench ARGS``, check that it succeeded; its stdout and stderr."""
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out, err


def table_rows(out: str) -> dict[str, str]:
    """The table's data lines (after the header's rule, up to the first blank line), by id."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows[line.split()[0]] = line
    return rows


def _check_json(path: Path, keys: list[str], repeat: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    machine = data["machine"]
    assert machine["kincir_implementation"] == kincir.IMPLEMENTATION
    assert machine["python_version"]
    assert machine["platform"]
    assert "cpu_count" in machine
    assert data["settings"]["repeat"] == repeat
    assert [w["id"] for w in data["workloads"]] == keys
    for workload in data["workloads"]:
        assert workload["error"] is None, workload
        left_out = workload["id"] in _shm_left_out()
        assert [row["id"] for row in workload["rows"]] == ([] if left_out else ROWS[workload["id"]])
        for row in workload["rows"]:
            for measurement in row["measurements"]:
                assert math.isfinite(measurement["median"]) and measurement["median"] > 0
                assert len(measurement["values"]) == repeat
                assert len(measurement["repetitions"]) == repeat
                for raw in measurement["repetitions"]:
                    assert raw and all(isinstance(v, int | float) for v in raw.values())
            if row["id"] != "M":
                assert isinstance(row["ratio"], float) and row["ratio"] > 0
            assert row["met"] in ((None,) if row["id"] in GOALLESS else (True, False))
    return data


def test_quick_run_prints_and_writes_the_selected_workloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"
    out, err = bench_ok(capsys, *TINY, "--only", "W1,W2,H", "--json", str(path))
    rows = table_rows(out)
    assert sorted(rows) == sorted(ROWS["W1"] + ROWS["W2"] + ROWS["H"])
    for row_id, line in rows.items():
        assert NUMBER.search(line), f"{row_id} has no number: {line}"
        assert re.search(r"\d\.\d\dx", line), f"{row_id} has no ratio: {line}"
        if row_id not in GOALLESS:
            assert re.search(r"\bmet\b|NOT MET", line), line
    assert f"engine: {kincir.IMPLEMENTATION}" in out
    assert "goals met:" in out
    assert "W1" in err and "repetition 1/1" in err  # progress goes to stderr
    _check_json(path, ["W1", "W2", "H"], repeat=1)


def test_every_workload_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    out, _ = bench_ok(capsys, "--quick", "--repeat", "2", "--scale", "0.002", "--json", str(path))
    expected = {key: rows for key, rows in ROWS.items() if key not in _shm_left_out()}
    assert sorted(table_rows(out)) == sorted(r for rows in expected.values() for r in rows)
    data = _check_json(path, list(ROWS), repeat=2)
    # one goal per row, except the rows the project set no goal for
    assert data["goals_total"] == sum(len(rows) for rows in expected.values()) - len(GOALLESS)


def _shm_left_out() -> tuple[str, ...]:
    """The process workloads, whose kincir side needs kincir.shm (Linux, compiled engine)."""
    try:
        import kincir.shm  # noqa: F401
    except ImportError:
        return ("W8", "W8b", "W9", "W10")
    return ()


def test_library_returns_results_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    report = bench.run_bench(
        bench.BenchSettings(quick=True, repeat=1, scale=0.01, only=("W1", "M"))
    )
    assert capsys.readouterr() == ("", "")
    assert [w.key for w in report.workloads] == ["W1", "M"]
    w1, m = report.rows()
    assert w1.reference is not None and w1.ratio is not None and w1.ratio > 0
    assert m.reference is None and m.subject.unit == "B/msg" and m.subject.median > 0
    assert report.ok


class _FakeJanusQueue:
    """Just enough of ``janus.Queue`` for the bench: created on a running loop, two faces."""

    def __init__(self) -> None:
        asyncio.get_running_loop()  # janus refuses to be created without one
        self._items: queue.Queue[bytes] = queue.Queue()
        self.sync_q = self._items
        self.async_q = types.SimpleNamespace(get=self._get)

    async def _get(self) -> bytes:
        while True:
            try:
                return self._items.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.0005)

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


def test_janus_is_an_extra_column_when_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("janus")
    fake.Queue = _FakeJanusQueue  # type: ignore[attr-defined]
    fake.__version__ = "0-fake"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "janus", fake)
    path = tmp_path / "bench.json"
    out, _ = bench_ok(capsys, *TINY, "--only", "W3,W7", "--json", str(path))
    assert "vs janus" in out
    data = _check_json(path, ["W3", "W7"], repeat=1)
    assert data["machine"]["janus_version"] == "0-fake"
    for workload in data["workloads"]:
        first = workload["rows"][0]
        assert [m["role"] for m in first["measurements"]] == ["kincir", "baseline", "extra"]
        assert all(v > 0 for v in first["extra_ratios"].values())


def test_plot_without_matplotlib_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = main(["bench", "--only", "W1", "--plot", str(tmp_path / "ratios.png")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "matplotlib" in err and "not installed" in err
    assert out == ""  # refused before running anything
    assert not (tmp_path / "ratios.png").exists()


def test_plot_draws_with_matplotlib(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for matplotlib: records the calls; savefig writes the file.
    figure, axes = mock.MagicMock(), mock.MagicMock()
    figure.savefig.side_effect = lambda path, **kw: Path(path).write_bytes(b"\x89PNG\r\n")
    pyplot = types.ModuleType("matplotlib.pyplot")
    pyplot.subplots = mock.MagicMock(return_value=(figure, axes))  # type: ignore[attr-defined]
    pyplot.close = mock.MagicMock()  # type: ignore[attr-defined]
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.use = mock.MagicMock()  # type: ignore[attr-defined]
    matplotlib.pyplot = pyplot  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    target = tmp_path / "ratios.png"
    bench_ok(capsys, *TINY, "--only", "W1,H", "--plot", str(target))
    assert target.read_bytes().startswith(b"\x89PNG")
    ratios = axes.barh.call_args.args[1]
    assert len(ratios) == 3 and all(r > 0 for r in ratios)  # W1, H/health, H/stats
    matplotlib.use.assert_called_with("Agg")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "W99"], "unknown workload W99"),
        (["--only", ","], "at least one workload"),
        (["--repeat", "0"], "must be at least 1"),
        (["--scale", "-1"], "must be a positive number"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_json_into_a_missing_directory_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--json", str(tmp_path / "no" / "such.json")]) == 2
    out, err = capsys.readouterr()
    assert "no such directory" in err and out == ""


# -- the object workloads (W1o, W3o, W5o) ----------------------------------------------------------

OBJECT_KEYS = ["W1o", "W3o", "W5o"]


def test_object_workloads_run_and_judge_their_goals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"
    # --only takes the keys in any case
    out, _ = bench_ok(capsys, *TINY, "--only", "w1o,W3O,W5o", "--json", str(path))
    assert sorted(table_rows(out)) == sorted(r for key in OBJECT_KEYS for r in ROWS[key])
    assert "(W1o, W3o, W5o: a 4-key dict)" in out
    assert out.count("each message carries its own 4-key dict") == 1  # one note, not three
    data = _check_json(path, OBJECT_KEYS, repeat=1)
    assert data["settings"]["object_payload_keys"] == 4
    assert data["goals_total"] == 5  # two /Queue rows, three /bytes rows
    for workload in data["workloads"]:
        rows = {row["id"]: row for row in workload["rows"]}
        key = workload["id"]
        first = rows[key]
        assert first["goal"] is None
        assert [m["label"] for m in first["measurements"]] == [
            "kincir",
            "asyncio.Queue" if key == "W5o" else "SimpleQueue",
        ]
        against_bytes = rows[f"{key}/bytes"]
        dicts, raw_bytes = against_bytes["measurements"]
        assert (dicts["label"], raw_bytes["label"]) == ("kincir, dicts", "kincir, bytes")
        assert dicts["repetitions"][0]["messages"] == raw_bytes["repetitions"][0]["messages"]
        assert against_bytes["ratio_definition"] == "dicts/bytes"
        assert against_bytes["goal"]["op"] == ">=" and against_bytes["goal"]["threshold"] == 0.9
        ratio = against_bytes["ratio"]
        assert ratio == pytest.approx(dicts["median"] / raw_bytes["median"])
        assert against_bytes["met"] is (ratio >= 0.9)
        if key != "W5o":
            vs_queue = rows[f"{key}/Queue"]
            assert vs_queue["measurements"][1]["label"] == "queue.Queue"
            assert vs_queue["goal"]["threshold"] == 5.0
            assert vs_queue["met"] is (vs_queue["ratio"] >= 5.0)


@pytest.mark.parametrize("key", OBJECT_KEYS)
def test_an_object_rate_under_nine_tenths_of_the_bytes_rate_misses_its_goal(key: str) -> None:
    [compare] = [c for w in bench.WORKLOADS for c in w.rows if c.id == f"{key}/bytes"]

    def rates(dicts: float, raw: float) -> dict[str, list[bench.Sample]]:
        return {
            compare.kincir: [bench.Sample(dicts, {})],
            str(compare.baseline): [bench.Sample(raw, {})],
        }

    assert compare.row(rates(899_000, 1_000_000)).met is False
    assert compare.row(rates(900_000, 1_000_000)).met is True
    assert compare.row(rates(1_200_000, 1_000_000)).met is True  # faster than bytes is fine


def test_the_object_workloads_move_one_set_of_dicts_by_reference() -> None:
    from kincir.bench import harness
    from kincir.bench.workloads import w1, w3

    sizes = harness.Sizes().scaled(0.0002)  # W1: 100 messages, W3: 40
    payloads = harness.orders(sizes.w1_messages)
    assert harness.orders(sizes.w1_messages) is payloads  # every side gets the same list
    assert len({id(p) for p in payloads}) == len(payloads) == sizes.w1_messages
    assert all(len(p) == harness.ORDER_KEYS for p in payloads)
    assert [p["id"] for p in payloads] == list(range(sizes.w1_messages))

    put: list[object] = []

    class Recording(queue.SimpleQueue[Any]):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            put.append(item)
            super().put(item, block, timeout)

    for side, n in (
        (w1.stdlib_objects(Recording), sizes.w1_messages),
        (w3.stdlib_objects(Recording), sizes.w3_messages),
    ):
        put.clear()
        assert side(sizes).raw["messages"] == n
        expected = harness.orders(n)
        assert len(put) == n and all(a is b for a, b in zip(put, expected, strict=True))
    harness.release_orders()
    assert harness.orders.cache_info().currsize == 0


def test_w1o_refuses_a_payload_that_was_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    from kincir.bench import harness
    from kincir.bench.workloads import w1

    sizes = harness.Sizes().scaled(0.0002)
    assert w1.kincir_objects(sizes).raw["messages"] == sizes.w1_messages
    # an engine that copied payloads would pass W1o off as moving objects by reference
    real_setup = w1.fast_setup

    def copying_setup() -> Any:
        broker, subs, pub = real_setup()
        copying = types.SimpleNamespace(
            send_nowait=lambda topic, payload: pub.send_nowait(topic, dict(payload))
        )
        return broker, subs, copying

    monkeypatch.setattr(w1, "fast_setup", copying_setup)
    with pytest.raises(bench.BenchError, match="copied"):
        w1.kincir_objects(sizes)


def test_a_run_lets_the_dicts_go() -> None:
    from kincir.bench import harness

    report = bench.run_bench(bench.BenchSettings(quick=True, repeat=1, scale=0.01, only=("W1o",)))
    assert report.ok, report.workloads[0].error
    assert harness.orders.cache_info().currsize == 0
