"""The README's "Testing" examples for the pytest plugin, run as they are written: each
```python block that starts with ``# <file name>.py`` becomes that file of a child pytest run,
on both engines; every test in them must pass."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from test_pytest_plugin import run

pytest_plugins = ["pytester"]

README = Path(__file__).parents[1] / "README.md"
#: The examples the section shows (a block that lost its file-name line would not run).
EXPECTED = {
    "conftest.py",
    "test_orders.py",
    "test_pipeline.py",
    "test_limits.py",
    "test_async_orders.py",
    "test_on_trio.py",
}


def readme_testing_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Testing\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def examples() -> dict[str, str]:
    """File name -> code of each named example of the section."""
    found = {}
    for block in re.findall(r"```python\n(.*?)```", readme_testing_section(), flags=re.S):
        first = block.split("\n", 1)[0]
        named = re.fullmatch(r"# (\w+\.py)", first)
        if named:
            found[named.group(1)] = block
    return found


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def test_the_section_shows_its_examples() -> None:
    assert set(examples()) == EXPECTED


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_examples_pass(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    engine_env: Callable[[str], dict[str, str]],
    engine: str,
) -> None:
    env = engine_env(engine)
    monkeypatch.delenv("KINCIR_NO_EXTENSIONS", raising=False)
    if "KINCIR_NO_EXTENSIONS" in env:
        monkeypatch.setenv("KINCIR_NO_EXTENSIONS", env["KINCIR_NO_EXTENSIONS"])
    files = examples()
    if _missing("anyio") or _missing("trio"):
        files = {name: code for name, code in files.items() if "import anyio" not in code}
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    tests = sum(len(re.findall(r"^(?:async )?def test_", code, re.M)) for code in files.values())
    plugins = ["-p", "no:asyncio"] + (["-p", "no:anyio"] if _missing("anyio") else [])
    result = run(pytester, *plugins)
    result.assert_outcomes(passed=tests)
    assert tests >= 5
