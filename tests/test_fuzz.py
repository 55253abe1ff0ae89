"""Fuzzing the constructors and the newer calls: any input gets a result or a specific error.

A value of a wrong type raises TypeError; a value out of range raises ValueError (InvalidConfig,
InvalidTopicName are ValueErrors); nothing else escapes, and the broker stays healthy with its
data intact.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.just(math.inf),
    st.just(float("nan")),
    st.just(object()),
)
CONFIG_FIELDS = [
    "max_queue_size",
    "max_topics",
    "enable_persistence",
    "maintain_order",
    "enable_stats",
    "default_message_ttl",
    "cleanup_interval",
    "max_subscribers_per_topic",
    "overflow",
]


@FUZZ
@given(payload=anything, metadata=anything)
def test_message_construction(k, payload, metadata):
    try:
        msg = k.Message(payload, metadata)
    except (TypeError, ValueError):
        return
    if isinstance(payload, (bytearray, memoryview)):
        assert type(msg.payload) is bytes and msg.payload == bytes(payload)
    else:
        assert msg.payload is payload
    assert dict(msg.metadata) == (dict(metadata) if metadata else {})


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(CONFIG_FIELDS), anything, max_size=4))
def test_config_construction(k, fields):
    try:
        config = k.InMemoryConfig(**fields)
    except (TypeError, ValueError):
        return
    broker = k.InMemoryBroker(config)
    try:
        assert broker.health_check().is_healthy
    finally:
        broker.force_shutdown()


def _bounded(timeout):
    """A valid waiting time (None: forever) cut to 10 ms (a full topic under ``block`` would
    wait it out);
    anything else unchanged, so its refusal is still checked."""
    if timeout is None:  # wait forever
        return 0.01
    if type(timeout) in (int, float) and timeout == timeout and timeout > 0.01:
        return 0.01
    return timeout


@FUZZ
@given(
    topic=anything,
    overflow=anything,
    size=anything,
    group=anything,
    timeout=anything,
    count=anything,
)
def test_newer_calls_refuse_bad_arguments_cleanly(k, topic, overflow, size, group, timeout, count):
    broker = k.InMemoryBroker(k.InMemoryConfig(max_queue_size=4, overflow="block"))
    try:
        pub = k.InMemoryPublisher(broker)
        sub = k.ack_subscriber(broker, "t", group="g")
        pub.publish_nowait("t", [b"1", b"2"])
        for call in (
            lambda: broker.configure_topic(topic, overflow=overflow),
            lambda: broker.configure_topic("t", max_queue_size=size),
            lambda: broker.delete_group(topic, group),
            lambda: broker.list_groups(topic),
            lambda: k.InMemorySubscriber(broker, group=group),
            lambda: k.InMemoryAckSubscriber(broker, ack_timeout=timeout),
            lambda: k.InMemoryAckSubscriber(broker, max_deliveries=count),
            lambda: k.InMemoryAckSubscriber(broker, dead_letter_topic=topic),
            lambda: sub.receive_with_ack_sync(_bounded(timeout)),
            lambda: sub.nack(count),
            lambda: sub.ack_batch([count]),
            lambda: pub.publish_sync("t", [b"x"], timeout=_bounded(timeout)),
            lambda: sub.subscribe(topic),
        ):
            try:
                call()
            except (TypeError, ValueError, LookupError, k.QueueFull, TimeoutError, k.NotSubscribed):
                pass
        assert broker.health_check().is_healthy
        info = broker.topic_info("t")
        assert info.total_published >= 2
    finally:
        broker.force_shutdown()


@pytest.mark.parametrize("bad", [None, 3, b"t", ["t"]])
def test_pattern_and_group_calls_with_wrong_types(k, bad):
    broker = k.new_broker()
    sub = k.InMemorySubscriber(broker)
    with pytest.raises(TypeError):
        sub.subscribe(bad)
    with pytest.raises(TypeError):
        broker.delete_group(bad, "g")
    if bad is not None:
        with pytest.raises(TypeError):
            sub.unsubscribe(bad)
    with pytest.raises(TypeError):
        broker.configure_topic(bad)
