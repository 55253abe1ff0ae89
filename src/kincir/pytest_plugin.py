"""kincir's pytest plugin (registered through the ``pytest11`` entry point when kincir is
installed): fixtures for testing code that uses an in-memory broker.

- ``kincir_config``: the ``InMemoryConfig`` the broker fixture uses —
  ``InMemoryConfig.for_testing()`` (small limits, stats on); override the fixture to change it.
- ``kincir_broker``: a fresh ``InMemoryBroker`` per test, shut down after it. At teardown the
  test fails if a topic still holds messages (published, never delivered to a reader that
  should have had them), unless the test is marked ``@pytest.mark.kincir_allow_undelivered``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .memory import InMemoryBroker, InMemoryConfig

__all__ = ["kincir_broker", "kincir_config"]

_MARKER = "kincir_allow_undelivered"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}: the kincir_broker fixture accepts messages left undelivered at teardown",
    )


@pytest.fixture
def kincir_config() -> InMemoryConfig:
    """The configuration of ``kincir_broker``: ``InMemoryConfig.for_testing()``."""
    return InMemoryConfig.for_testing()


@pytest.fixture
def kincir_broker(
    request: pytest.FixtureRequest, kincir_config: InMemoryConfig
) -> Iterator[InMemoryBroker]:
    """A fresh broker, shut down after the test; fails the test if messages were left
    undelivered (unless marked ``kincir_allow_undelivered``)."""
    broker = InMemoryBroker(kincir_config)
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
    if left and request.node.get_closest_marker(_MARKER) is None:
        where = ", ".join(f"{name!r}: {count}" for name, count in sorted(left.items()))
        pytest.fail(
            f"kincir_broker: messages left undelivered at the end of the test ({where}); "
            f"receive them, or mark the test @pytest.mark.{_MARKER}",
            pytrace=False,
        )
