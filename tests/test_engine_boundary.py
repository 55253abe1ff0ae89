"""The engine boundary is typed end to end: ``mypy --strict`` checks ``kincir.memory`` against the
engine's stub (``kincir_core/_broker.pyi``), and what crosses the boundary has real types.

Rows are NamedTuples (``kincir_core._rows``), status codes IntEnums (``kincir_core._codes``),
errors the classes of ``kincir_core._errors``. A contract program asserts, with
``typing.assert_type``, the types the internal API returns: a stub that fell back to ``Any`` or a
bare tuple fails here, where ``--strict`` alone would let it pass. (``.ci/lint`` runs mypy over
``src/`` and ``kincir_core/`` too; this test also runs where only the tests run.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_typing import mypy_path

CONTRACT = """\
from __future__ import annotations

from typing import assert_type

from kincir_core import BrokerState, Message
from kincir_core import BrokerCore, SubscriberCore
from kincir_core._broker import Cursor, TopicLog
from kincir_core._rows import BrokerSnapshot, CursorCounts, RetiredCounts, TopicRow
from kincir_core._codes import AppendOutcome, AttachOutcome
from kincir_core import _errors
import kincir
import kincir.memory
import kincir.memory.ack
import kincir.memory.broker
import kincir.memory.health
import kincir_core._broker_py


def rows(broker: BrokerCore, log: TopicLog, cursor: Cursor) -> None:
    snapshot = broker._snapshot()
    assert_type(snapshot, BrokerSnapshot)
    assert_type(snapshot.state, BrokerState)
    assert_type(snapshot.uptime, float)
    assert_type(snapshot.retired, RetiredCounts)
    assert_type(snapshot.retired.dead_lettered, int)
    assert_type(snapshot.topics, list[TopicRow])
    row = log.snapshot()
    assert_type(row, TopicRow)
    assert_type(row.name, str)
    assert_type(row.in_flight, int)
    assert_type(row.overflow, str)
    assert_type(row.capacity, int | None)
    assert_type(cursor.counts(), CursorCounts)
    assert_type(cursor.counts().lagged, int)


def internal_api(broker: BrokerCore, sub: SubscriberCore, message: Message) -> None:
    assert_type(broker._existing("t"), TopicLog)
    assert_type(broker._topic("t"), TopicLog)
    assert_type(broker._group_cursor("t", "g"), Cursor | None)
    assert_type(broker._configure_topic("t", 0, -1), TopicLog)
    assert_type(broker._dead_letter("t", message), bool)
    assert_type(broker._drained(), bool)
    assert_type(broker._letters_due(), bool)
    assert_type(broker._letter_topics, set[str])
    assert_type(broker._count_retired(1, 0, 0, 0, 0), None)
    assert_type(sub._attached_cursors(), tuple[Cursor, ...])
    assert_type(sub._wait_ready(None, lambda: True), bool)
    assert_type(sub._check_receivable(), None)
    assert_type(sub._attached_cursors()[0].log, TopicLog)


def codes() -> None:
    assert_type(AppendOutcome(2), AppendOutcome)
    assert_type(AttachOutcome(3), AttachOutcome)
    state: BrokerState = BrokerState.STOPPED
    assert_type(state == BrokerState.RUNNING, bool)


def errors() -> None:
    # one class each, whichever module names it
    assert_type(kincir.memory.QueueFull("t", 1), _errors.QueueFull)
    assert_type(kincir.memory.BrokerShutdown(), _errors.BrokerShutdown)
    assert_type(kincir.BrokerShutdown(), _errors.BaseBrokerShutdown)
    assert_type(kincir.KincirError(), _errors.KincirError)
"""


def test_mypy_strict_checks_the_boundary_end_to_end(tmp_path: Path) -> None:
    api = pytest.importorskip(
        "mypy.api", reason="mypy is not installed (it is in the test extra: pip install '.[test]')"
    )
    contract = tmp_path / "engine_boundary_contract.py"
    contract.write_text(CONTRACT)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nenable_error_code = ignore-without-code\n")
    args = [
        "--config-file",
        str(config),
        "--strict",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-pretty",
        "--no-color-output",
        str(contract),  # its imports bring in kincir.memory and kincir_core: checked too
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MYPYPATH", os.pathsep.join(str(p) for p in mypy_path()))
        stdout, stderr, status = api.run(args)
    assert status == 0 and not stderr, f"mypy (exit {status}):\n{stderr}\n{stdout}"
