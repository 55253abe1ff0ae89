"""The README's Router examples run as printed, on both engines."""

from __future__ import annotations

import pytest

SECTION = "## Router: pipeline stages"


def test_the_section_has_its_two_examples(readme_blocks):
    assert len(readme_blocks(SECTION)) == 2


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_router_example_runs(run_readme_example, engine):
    out = run_readme_example(SECTION, engine, 0)
    assert out.startswith(
        "{'id': 99, 'ok': True} RouterStats(processed=100, succeeded=100, failed=0, timed_out=0, "
        "acked=100, nacked=0, retried=0, dead_lettered=0, retries_exhausted=0, published=100, "
        "mean_processing_time="
    ), out


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_end_of_stream_pipeline_runs(run_readme_example, engine):
    assert run_readme_example(SECTION, engine, 1) == "6\nTrue True\n"
