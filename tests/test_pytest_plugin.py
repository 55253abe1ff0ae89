"""The pytest plugin's fixtures, run in a child pytest (with ``-p kincir.pytest_plugin``: the
entry point registers it the same way once kincir is installed)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest
from kincir.memory import (
    InMemoryAckSubscriber, InMemoryConfig, InMemoryPublisher, InMemorySubscriber
)

def test_uses_a_broker(kincir_broker, kincir_config):
    assert kincir_broker.config == kincir_config == InMemoryConfig.for_testing()
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    InMemoryPublisher(kincir_broker).publish_nowait("t", [b"x"])
    assert sub.try_receive().payload == b"x"

def test_leaves_a_message(kincir_broker):
    InMemoryPublisher(kincir_broker).publish_nowait("orders", [b"x", b"y"])

def test_leaves_a_message_in_flight(kincir_broker):
    sub = InMemoryAckSubscriber(kincir_broker)
    sub.subscribe("jobs")
    InMemoryPublisher(kincir_broker).publish_nowait("jobs", [b"x"])
    sub.try_receive_with_ack()  # never acked: still undelivered

@pytest.mark.kincir_allow_undelivered
def test_may_leave_a_message(kincir_broker):
    InMemoryPublisher(kincir_broker).publish_nowait("orders", [b"x"])

class TestOverride:
    @pytest.fixture
    def kincir_config(self):
        return InMemoryConfig(max_queue_size=1)

    def test_config_override(self, kincir_broker):
        assert kincir_broker.config.max_queue_size == 1

def test_broker_is_fresh_and_shut_down_after(kincir_broker):
    assert kincir_broker.topic_count() == 0
"""


def _installed() -> bool:
    """True when kincir's pytest11 entry point is installed (pytest then loads the plugin)."""
    from importlib.metadata import entry_points

    return any(ep.value == "kincir.pytest_plugin" for ep in entry_points(group="pytest11"))


def test_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=TESTS)
    args = [] if _installed() else ["-p", "kincir.pytest_plugin"]
    result = pytester.runpytest_subprocess(*args, "-q", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines(["*messages left undelivered*'orders': 2*"])
    # an unsettled message is undelivered too, though it is in flight, not queued (issue 12)
    result.stdout.fnmatch_lines(["*messages left undelivered*'jobs': 1*"])
