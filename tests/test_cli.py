"""The command line: ``kincir demo`` runs the pipeline end to end and checks what it moved."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import kincir
from kincir.__main__ import main


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_demo_moves_every_message_on_each_engine(
    engine: str, tmp_path: Path, engine_env: Callable[[str], dict[str, str]]
) -> None:
    env = engine_env(engine)
    result = subprocess.run(
        [sys.executable, "-m", "kincir", "demo", "--messages", "20000", "--producers", "3"],
        # outside the checkout, so that `-m` imports the installed engine, not the source tree
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"engine: {engine}" in out
    assert "20,000 of 20,000 received, sequences 1..20,000" in out
    assert "[FAIL]" not in out
    assert "19,999 of 19,999 shipped, 0 twice, poisoned order (0, 7) held back" in out
    assert "poisoned order dead-lettered: order (0, 7) dead-lettered after 3 deliveries" in out
    assert "messages_published      60,000" in out


def test_version_names_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert kincir.__version__ in out
    assert kincir.IMPLEMENTATION in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
