"""The README's Router example runs as printed, on both engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_router_example_runs(engine_env, engine):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("## Router: pipeline stages") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=engine_env(engine),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "{'id': 99, 'ok': True} RouterStats(processed=100, succeeded=100, failed=0, timed_out=0, "
        "acked=100, nacked=0, retried=0, dead_lettered=0, retries_exhausted=0, published=100, "
        "mean_processing_time="
    ), done.stdout
