"""The pytest-benchmark suites under bench/ run (once, timing disabled) as a smoke test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
def test_benchmark_suites_run(tmp_path: Path) -> None:
    pytest.importorskip("pytest_benchmark")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(BENCH),
            "-q",
            "--benchmark-disable",
            "-p",
            "no:cacheprovider",
        ],
        # outside the checkout, so that `-m` imports the installed engine, not the source tree
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
