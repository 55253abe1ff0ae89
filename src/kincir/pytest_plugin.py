"""kincir's pytest plugin (registered through the ``pytest11`` entry point when kincir is
installed): fixtures for testing code that uses an in-memory broker.

- ``kincir_config``: the ``InMemoryConfig`` the broker fixture starts from, ``DEFAULT_CONFIG``
  (the production defaults with stats on); override the fixture to change it.
- ``kincir_broker``: a fresh ``InMemoryBroker`` per test, shut down after it, configured by
  ``kincir_config`` with the fields of the test's ``@pytest.mark.kincir(...)`` markers on top.
  At teardown a passing test fails if a topic still holds messages (published, never delivered
  to a reader that should have had them), unless it is marked
  ``@pytest.mark.kincir_allow_undelivered``.
- ``async def`` tests that use a kincir fixture or carry the ``kincir`` marker run on a fresh
  asyncio event loop, with no other plugin needed; a test that pytest-asyncio (its ``asyncio``
  marker) or anyio (its ``anyio_backend`` fixture) runs is left to that plugin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Generator, Iterator

import pytest

from .memory import InMemoryBroker, InMemoryConfig

__all__ = ["DEFAULT_CONFIG", "kincir_broker", "kincir_config"]

#: What ``kincir_config`` returns: the production defaults (no limits, so code that works in
#: production is not refused in tests) with stats on, so a test can assert on ``stats()``.
DEFAULT_CONFIG = InMemoryConfig(enable_stats=True)

_ALLOW_UNDELIVERED = "kincir_allow_undelivered"
_MARKER = "kincir"
_FIXTURES = frozenset({"kincir_broker", "kincir_config"})
_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(InMemoryConfig))
_CALL_PASSED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_ALLOW_UNDELIVERED}: the kincir_broker fixture accepts messages left undelivered "
        "at teardown",
    )
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**fields): InMemoryConfig fields that kincir_broker sets on top of "
        "kincir_config; an async test carrying it runs on an asyncio event loop",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses kincir on a fresh asyncio event loop."""
    # pytest-asyncio swaps the tests it runs for plain functions before this hook: they are
    # not coroutine functions here. anyio runs the tests that ask for its anyio_backend.
    if (
        not inspect.iscoroutinefunction(pyfuncitem.obj)
        or "anyio_backend" in pyfuncitem.fixturenames
    ):
        return None
    if pyfuncitem.get_closest_marker(_MARKER) is None and _FIXTURES.isdisjoint(
        pyfuncitem.fixturenames
    ):
        return None  # not ours: pytest reports the unsupported async test as usual
    funcargs = pyfuncitem.funcargs
    testargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    with asyncio.Runner() as runner:
        runner.run(pyfuncitem.obj(**testargs))
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test itself passed: ``kincir_broker`` checks only passing tests."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


def _marked_config(node: pytest.Item, base: InMemoryConfig) -> InMemoryConfig:
    """``base`` with the fields of the node's ``kincir`` markers set, the closest last."""
    config = base
    for mark in reversed(list(node.iter_markers(_MARKER))):
        unknown = sorted(set(mark.kwargs) - _CONFIG_FIELDS)
        if mark.args or unknown:
            wrong = ", ".join(unknown) if unknown else f"positional arguments {mark.args!r}"
            pytest.fail(
                f"@pytest.mark.{_MARKER} takes InMemoryConfig fields as keywords, not {wrong} "
                f"(fields: {', '.join(sorted(_CONFIG_FIELDS))})",
                pytrace=False,
            )
        config = dataclasses.replace(config, **mark.kwargs)
    return config


@pytest.fixture
def kincir_config() -> InMemoryConfig:
    """The configuration ``kincir_broker`` starts from: ``DEFAULT_CONFIG``."""
    return DEFAULT_CONFIG


@pytest.fixture
def kincir_broker(
    request: pytest.FixtureRequest, kincir_config: InMemoryConfig
) -> Iterator[InMemoryBroker]:
    """A fresh broker, shut down after the test; fails a passing test that left messages
    undelivered (unless marked ``kincir_allow_undelivered``)."""
    broker = InMemoryBroker(_marked_config(request.node, kincir_config))
    left: dict[str, int] = {}
    try:
        yield broker
        # unread or unsettled (in flight is its own term, not part of queue_size)
        left = {
            info.name: info.queue_size + info.in_flight
            for info in broker.list_topic_info()
            if info.queue_size or info.in_flight
        }
    finally:
        broker.force_shutdown()
    if (
        left
        and request.node.stash.get(_CALL_PASSED, False)  # a failure or skip says enough
        and request.node.get_closest_marker(_ALLOW_UNDELIVERED) is None
    ):
        where = ", ".join(f"{name!r}: {count}" for name, count in sorted(left.items()))
        pytest.fail(
            f"kincir_broker: messages left undelivered at the end of the test ({where}); "
            f"receive them, or mark the test @pytest.mark.{_ALLOW_UNDELIVERED}",
            pytrace=False,
        )
