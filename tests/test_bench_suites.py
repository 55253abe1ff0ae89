"""The scripts under bench/ run: the pytest-benchmark suites (once, timing disabled), the
callgrind loops (without valgrind) and the codec costs (tiny sizes), as smoke tests."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
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


def _load_script(name: str) -> types.ModuleType:
    """A script of bench/ as a module (bench/ is no package, and bench/codecs.py would shadow
    the standard library's codecs if bench/ went on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loop", sorted(_load_script("callgrind").LOOPS))
def test_callgrind_loops_run(loop: str, tmp_path: Path) -> None:
    # the loops as callgrind runs them, minus valgrind: a loop that breaks would only show as a
    # failure under valgrind, which takes minutes
    _, program = _load_script("callgrind").LOOPS[loop]
    result = subprocess.run(
        [sys.executable, "-c", program, "50"],
        cwd=tmp_path,  # the installed engine, as in test_benchmark_suites_run
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_codec_costs_script_measures_each_codec(tmp_path: Path) -> None:
    pytest.importorskip("kincir.codecs")
    result = subprocess.run(
        [sys.executable, str(BENCH / "codecs.py"), "--runs", "2", "--number", "30"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    #: each codec's row, and the package it needs beyond the standard library
    needs = {
        "JsonCodec": None,
        "PickleCodec": None,
        "MsgpackCodec": "msgpack",
        "MsgspecCodec(Order, json)": "msgspec",
        "MsgspecCodec(Order, msgpack)": "msgspec",
    }
    out = result.stdout.splitlines()
    assert not any("BytesCodec" in line for line in out)  # a dict is no bytes payload
    for name, package in needs.items():
        [line] = [line for line in out if line.startswith(name + " ")]
        if package is None or importlib.util.find_spec(package) is not None:
            costs = [float(x) for x in re.findall(r"(\d+\.\d+) us", line)]
            assert len(costs) == 3 and all(c > 0 for c in costs), line
            assert re.search(r"\d+\.\d B$", line), line
        else:
            assert "not measured" in line and package in line, line
