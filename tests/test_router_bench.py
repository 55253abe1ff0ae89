"""``kincir bench``'s Router rows (workload R): each Router configuration against a hand-made
``queue.Queue`` stage, and each option against the plain Router, in one run. Structure only,
never speed: tiny sizes, one repetition."""

from __future__ import annotations

import dataclasses

import pytest

from kincir import bench
from kincir.bench.harness import Sizes
from kincir.bench.workloads import r

#: The goals: >= 1.5x the hand-made stage, 4 workers at least as fast as 1, and 3x as fast
#: when the handler waits.
GOALS = {"R": 1.5, "R/4": 1.5, "R/4vs1": 1.0, "R/4vs1/wait": 3.0}
ROWS = {
    "R": ("kincir Router", "queue.Queue stage", "kincir/base"),
    "R/4": ("kincir Router", "queue.Queue stage", "kincir/base"),
    "R/4vs1": ("kincir, 4 workers", "kincir, 1 worker", "4/1"),
    "R/4vs1/Queue": ("queue.Queue, 4 workers", "queue.Queue, 1 worker", "4/1"),
    "R/4vs1/wait": ("kincir, 4 workers", "kincir, 1 worker", "4/1"),
    "R/batch": ("kincir Router", "queue.Queue stage", "kincir/base"),
    "R/timeout": ("kincir, timeout", "kincir, no timeout", "timeout/none"),
    "R/never_ack": ("kincir, NEVER_ACK", "kincir, ack", "never/ack"),
}


@pytest.fixture(scope="module")
def rows():
    report = bench.run_bench(bench.BenchSettings(quick=True, repeat=2, scale=0.01, only=("R",)))
    assert [w.key for w in report.workloads] == ["R"]
    return {row.id: row for row in report.rows()}


def test_the_router_rows_and_their_sides(rows):
    assert list(rows) == list(ROWS)
    for row_id, (subject, reference, ratio) in ROWS.items():
        row = rows[row_id]
        assert (row.subject.label, row.reference.label, row.ratio_definition) == (
            subject,
            reference,
            ratio,
        )
        goal = GOALS.get(row_id)
        assert (row.goal.threshold if row.goal else None) == goal
        assert row.subject.unit == row.reference.unit == "msg/s"
        assert len(row.subject.values) == len(row.reference.values) == 2
        assert all(v > 0 for v in row.subject.values + row.reference.values)
        assert row.ratio is not None and row.ratio > 0


def test_the_option_rows_compare_with_the_plain_router_of_the_same_run(rows):
    plain = rows["R"].subject.samples
    assert rows["R/timeout"].reference.samples == plain
    assert rows["R/never_ack"].reference.samples == plain


def test_the_worker_counts_are_recorded(rows):
    assert [s.raw["workers"] for s in rows["R"].subject.samples] == [1, 1]
    assert [s.raw["workers"] for s in rows["R/4"].subject.samples] == [4, 4]
    assert rows["R/batch"].subject.samples[0].raw["batch_size"] == r.BATCH_SIZE
    assert [s.raw["workers"] for s in rows["R/4vs1/wait"].subject.samples] == [4, 4]
    assert [s.raw["workers"] for s in rows["R/4vs1/wait"].reference.samples] == [1, 1]


def test_the_waiting_handler_waits_and_returns_its_input(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(r.time, "sleep", waits.append)
    item = object()
    assert r._wait_then_echo(item) is item
    assert waits == [r.WAIT_SECONDS]


@pytest.mark.parametrize("workers", [1, 3])
def test_the_hand_made_batch_stage_moves_every_item_and_ends(workers):
    sizes = dataclasses.replace(Sizes(), r_messages=500)
    sample = r.queue_stage(workers, 7)(sizes)
    assert sample.value > 0
