"""The README's Router examples run as printed, on both engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def router_examples() -> list[str]:
    """The python blocks of the README's Router section, in order."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("## Router: pipeline stages")
    section = text[start : text.index("\n## ", start + 1)]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def run_example(engine_env, engine: str, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=engine_env(engine),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_section_has_its_two_examples():
    assert len(router_examples()) == 2


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_router_example_runs(engine_env, engine):
    out = run_example(engine_env, engine, router_examples()[0])
    assert out.startswith(
        "{'id': 99, 'ok': True} RouterStats(processed=100, succeeded=100, failed=0, timed_out=0, "
        "acked=100, nacked=0, retried=0, dead_lettered=0, retries_exhausted=0, published=100, "
        "mean_processing_time="
    ), out


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_end_of_stream_pipeline_runs(engine_env, engine):
    assert run_example(engine_env, engine, router_examples()[1]) == "6\nTrue True\n"
