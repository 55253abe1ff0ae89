"""Bad input: every public call rejects wrong types and values, and the broker stays intact.

Each case runs against a broker that already holds state: a topic "keep" with one subscriber and
one queued message. After the rejected call, the broker must be healthy, have the same topics
and queue sizes, deliver the queued message intact, and give the next message the next
sequence number (a rejected publish uses none).
"""

from __future__ import annotations

import math
import types
from datetime import timedelta

import pytest

BAD_TOPIC_NAMES = [
    "",
    "a b",
    "a\x00b",
    "a..b",
    ".a",
    "a.",
    "x" * 256,
    "a.*",
    "a.>",
    "tab\there",
    "new\nline",
]
# Bad as a subscription too: "a.*" and "a.>" are valid patterns there; these are not.
BAD_SUBSCRIPTIONS = [n for n in BAD_TOPIC_NAMES if n not in ("a.*", "a.>")] + [
    "a.b*",
    "a.>.b",
    "*x",
    ">>",
    "a.*.",
    "* .a",
]
GOOD_TOPIC_NAMES = [
    "a",
    "orders",
    "orders.eu",
    "a-b_c",
    "x" * 255,
    "Ünïcödé",
    "a.b.c.d",
    "1",
    "a:b",
]


def state(k):
    broker, pub, sub = k.setup(subscribe="keep")
    precious = k.Message(b"precious", {"k": "v"})
    pub.publish_nowait("keep", [precious])
    return types.SimpleNamespace(k=k, broker=broker, pub=pub, sub=sub, precious=precious)


def fingerprint(s):
    return (
        sorted(s.broker.list_topics()),
        s.broker.topic_count(),
        sorted(
            (i.name, i.queue_size, i.subscriber_count, i.next_sequence)
            for i in s.broker.list_topic_info()
        ),
        s.broker.health_check().total_queued_messages,
        s.sub.subscribed_topics(),
    )


def assert_intact(s, before):
    assert s.broker.health_check().is_healthy is True
    assert fingerprint(s) == before
    got = s.sub.try_receive()
    assert got is not None, "the queued message was lost"
    assert got.payload == b"precious"
    assert got.uuid == s.precious.uuid
    assert got.metadata["k"] == "v"
    assert got.sequence == 1
    assert got.topic == "keep"
    s.pub.publish_nowait("keep", [b"next"])
    nxt = s.sub.try_receive()
    assert (nxt.payload, nxt.sequence) == (b"next", 2)


def aio(make):
    """A case that awaits ``make(state)`` on a fresh event loop."""
    return lambda s: s.k.run(make(s))


# (id, exception name or type, match regex or None, call taking the state)
CASES = [
    # -- publish_nowait ---------------------------------------------------------------------
    ("publish_nowait-int-topic", TypeError, "topic", lambda s: s.pub.publish_nowait(123, [b"x"])),
    ("publish_nowait-none-topic", TypeError, "topic", lambda s: s.pub.publish_nowait(None, [b"x"])),
    (
        "publish_nowait-bytes-topic",
        TypeError,
        "topic",
        lambda s: s.pub.publish_nowait(b"keep", [b"x"]),
    ),
    (
        "publish_nowait-bytes-not-list",
        TypeError,
        "messages",
        lambda s: s.pub.publish_nowait("keep", b"x"),
    ),
    (
        "publish_nowait-str-not-list",
        TypeError,
        "messages",
        lambda s: s.pub.publish_nowait("keep", "x"),
    ),
    (
        "publish_nowait-none-messages",
        TypeError,
        "messages",
        lambda s: s.pub.publish_nowait("keep", None),
    ),
    (
        "publish_nowait-message-not-list",
        TypeError,
        "messages",
        lambda s: s.pub.publish_nowait("keep", s.k.Message(b"x")),
    ),
    (
        "publish_nowait-new-topic-bytes-not-list",
        TypeError,
        "messages",
        lambda s: s.pub.publish_nowait("brand.new", b"x"),
    ),
    # -- publish (async) --------------------------------------------------------------------
    ("publish-int-topic", TypeError, "topic", aio(lambda s: s.pub.publish(123, [b"x"]))),
    ("publish-bytes-not-list", TypeError, "messages", aio(lambda s: s.pub.publish("keep", b"x"))),
    (
        "publish-str-timeout",
        TypeError,
        "timeout",
        aio(lambda s: s.pub.publish("keep", [b"x"], timeout="1")),
    ),
    (
        "publish-negative-timeout",
        ValueError,
        "timeout",
        aio(lambda s: s.pub.publish("keep", [b"x"], timeout=-1)),
    ),
    (
        "publish-nan-timeout",
        ValueError,
        "timeout",
        aio(lambda s: s.pub.publish("keep", [b"x"], timeout=math.nan)),
    ),
    # -- publish_sync -----------------------------------------------------------------------
    ("publish_sync-int-topic", TypeError, "topic", lambda s: s.pub.publish_sync(1, [b"x"])),
    (
        "publish_sync-bytes-not-list",
        TypeError,
        "messages",
        lambda s: s.pub.publish_sync("keep", b"x"),
    ),
    (
        "publish_sync-str-timeout",
        TypeError,
        "timeout",
        lambda s: s.pub.publish_sync("keep", [b"x"], timeout="1"),
    ),
    (
        "publish_sync-negative-timeout",
        ValueError,
        "timeout",
        lambda s: s.pub.publish_sync("keep", [b"x"], timeout=-1),
    ),
    # -- subscribe / unsubscribe ------------------------------------------------------------
    ("subscribe-int", TypeError, "topic", lambda s: s.sub.subscribe(42)),
    ("subscribe-none", TypeError, "topic", lambda s: s.sub.subscribe(None)),
    ("subscribe-bytes", TypeError, "topic", lambda s: s.sub.subscribe(b"keep")),
    ("unsubscribe-int", TypeError, "topic", lambda s: s.sub.unsubscribe(42)),
    ("unsubscribe-unknown", "NotSubscribed", None, lambda s: s.sub.unsubscribe("never")),
    # -- receiving --------------------------------------------------------------------------
    ("try_receive_batch-str", TypeError, "max_messages", lambda s: s.sub.try_receive_batch("3")),
    ("try_receive_batch-float", TypeError, "max_messages", lambda s: s.sub.try_receive_batch(2.0)),
    ("try_receive_batch-bool", TypeError, "max_messages", lambda s: s.sub.try_receive_batch(True)),
    ("try_receive_batch-none", TypeError, "max_messages", lambda s: s.sub.try_receive_batch(None)),
    # a size of 0 returns [] at once (seed parity, tests/test_log_engine.py); negatives are refused
    (
        "try_receive_batch-negative-one",
        ValueError,
        "max_messages",
        lambda s: s.sub.try_receive_batch(-1),
    ),
    (
        "try_receive_batch-negative",
        ValueError,
        "max_messages",
        lambda s: s.sub.try_receive_batch(-3),
    ),
    ("receive_sync-str-timeout", TypeError, "timeout", lambda s: s.sub.receive_sync(timeout="1")),
    ("receive_sync-list-timeout", TypeError, "timeout", lambda s: s.sub.receive_sync(timeout=[1])),
    ("receive_sync-bool-timeout", TypeError, "timeout", lambda s: s.sub.receive_sync(timeout=True)),
    (
        "receive_sync-negative-timeout",
        ValueError,
        "timeout",
        lambda s: s.sub.receive_sync(timeout=-1),
    ),
    (
        "receive_sync-negative-timedelta",
        ValueError,
        "timeout",
        lambda s: s.sub.receive_sync(timeout=timedelta(seconds=-1)),
    ),
    (
        "receive_sync-nan-timeout",
        ValueError,
        "timeout",
        lambda s: s.sub.receive_sync(timeout=math.nan),
    ),
    ("receive_batch_sync-str", TypeError, "max_messages", lambda s: s.sub.receive_batch_sync("3")),
    (
        "receive_batch_sync-negative",
        ValueError,
        "max_messages",
        lambda s: s.sub.receive_batch_sync(-1),
    ),
    (
        "receive_batch_sync-negative-timeout",
        ValueError,
        "timeout",
        lambda s: s.sub.receive_batch_sync(2, timeout=-0.5),
    ),
    (
        "receive_batch_sync-str-timeout",
        TypeError,
        "timeout",
        lambda s: s.sub.receive_batch_sync(2, timeout="0.5"),
    ),
    ("receive-str-timeout", TypeError, "timeout", aio(lambda s: s.sub.receive(timeout="1"))),
    ("receive-negative-timeout", ValueError, "timeout", aio(lambda s: s.sub.receive(timeout=-1))),
    ("receive-nan-timeout", ValueError, "timeout", aio(lambda s: s.sub.receive(timeout=math.nan))),
    ("receive_batch-str", TypeError, "max_messages", aio(lambda s: s.sub.receive_batch("3"))),
    ("receive_batch-negative", ValueError, "max_messages", aio(lambda s: s.sub.receive_batch(-1))),
    (
        "receive_batch-negative-timeout",
        ValueError,
        "timeout",
        aio(lambda s: s.sub.receive_batch(2, timeout=-1)),
    ),
    (
        "receive_batch-str-timeout",
        TypeError,
        "timeout",
        aio(lambda s: s.sub.receive_batch(2, timeout="1")),
    ),
    # -- broker -----------------------------------------------------------------------------
    ("topic_info-int", TypeError, "topic", lambda s: s.broker.topic_info(1)),
    ("topic_info-missing", "TopicNotFound", None, lambda s: s.broker.topic_info("missing")),
    ("delete_topic-int", TypeError, "topic", lambda s: s.broker.delete_topic(1)),
    ("delete_topic-missing", "TopicNotFound", None, lambda s: s.broker.delete_topic("missing")),
    ("clear_topic-int", TypeError, "topic", lambda s: s.broker.clear_topic(None)),
    ("clear_topic-missing", "TopicNotFound", None, lambda s: s.broker.clear_topic("missing")),
    ("consume-int", TypeError, "topic", lambda s: s.broker.consume(1)),
    ("consume-missing", "TopicNotFound", None, lambda s: s.broker.consume("missing")),
    (
        "cleanup_idle_topics-str",
        TypeError,
        "idle|timeout",
        lambda s: s.broker.cleanup_idle_topics("1"),
    ),
    ("cleanup_idle_topics-none", TypeError, "idle", lambda s: s.broker.cleanup_idle_topics(None)),
    ("cleanup_idle_topics-negative", ValueError, None, lambda s: s.broker.cleanup_idle_topics(-1)),
    ("shutdown-str-timeout", TypeError, "timeout", lambda s: s.broker.shutdown(timeout="1")),
    ("shutdown-negative-timeout", ValueError, "timeout", lambda s: s.broker.shutdown(timeout=-1)),
    # -- constructors -----------------------------------------------------------------------
    ("InMemoryPublisher-object", TypeError, "broker", lambda s: s.k.InMemoryPublisher(object())),
    ("InMemoryPublisher-none", TypeError, "broker", lambda s: s.k.InMemoryPublisher(None)),
    ("InMemorySubscriber-object", TypeError, "broker", lambda s: s.k.InMemorySubscriber(object())),
    (
        "InMemorySubscriber-config",
        TypeError,
        "broker",
        lambda s: s.k.InMemorySubscriber(s.k.InMemoryConfig()),
    ),
    ("InMemoryBroker-int-config", TypeError, "config", lambda s: s.k.InMemoryBroker(config=42)),
    (
        "InMemoryBroker-dict-config",
        TypeError,
        "config",
        lambda s: s.k.InMemoryBroker({"max_topics": 1}),
    ),
    ("Message-int-metadata", TypeError, "metadata", lambda s: s.k.Message({"a": 1}, {"k": 1})),
]


def resolve(k, expected):
    return getattr(k, expected) if isinstance(expected, str) else expected


@pytest.mark.parametrize("expected,match,call", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_call_leaves_the_broker_intact(k, expected, match, call):
    s = state(k)
    before = fingerprint(s)
    with pytest.raises(resolve(k, expected), match=match):
        call(s)
    assert_intact(s, before)


@pytest.mark.parametrize(
    ("name", "how"),
    [(n, how) for how in ("publish_nowait", "publish_sync", "publish") for n in BAD_TOPIC_NAMES]
    + [(n, "subscribe") for n in BAD_SUBSCRIPTIONS],
    ids=repr,
)
def test_invalid_topic_names_are_rejected(k, name, how):
    s = state(k)
    before = fingerprint(s)
    calls = {
        "publish_nowait": lambda: s.pub.publish_nowait(name, [b"x"]),
        "publish_sync": lambda: s.pub.publish_sync(name, [b"x"]),
        "publish": lambda: k.run(s.pub.publish(name, [b"x"])),
        "subscribe": lambda: s.sub.subscribe(name),
    }
    with pytest.raises(k.InvalidTopicName) as info:
        calls[how]()
    err = info.value
    assert err.topic == name
    assert isinstance(err, ValueError)
    assert isinstance(err, k.InMemoryError)
    assert_intact(s, before)


@pytest.mark.parametrize("name", BAD_TOPIC_NAMES, ids=repr)
@pytest.mark.parametrize(
    "how", ["topic_info", "delete_topic", "clear_topic", "consume", "unsubscribe"]
)
def test_invalid_topic_names_in_lookups_are_rejected(k, name, how):
    """A lookup by an invalid name: InvalidTopicName, or TopicNotFound / NotSubscribed."""
    s = state(k)
    before = fingerprint(s)
    expected = (k.InvalidTopicName, k.NotSubscribed if how == "unsubscribe" else k.TopicNotFound)
    with pytest.raises(expected):
        getattr(s.sub if how == "unsubscribe" else s.broker, how)(name)
    assert_intact(s, before)


@pytest.mark.parametrize("name", GOOD_TOPIC_NAMES, ids=repr)
def test_valid_topic_names_are_accepted(k, name):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    sub.subscribe(name)
    pub.publish_nowait(name, [b"x"])
    got = sub.try_receive()
    assert got.topic == name
    assert broker.topic_info(name).name == name


def test_rejected_publish_to_a_new_topic_creates_no_topic(k):
    broker = k.new_broker(max_topics=1)
    pub = k.InMemoryPublisher(broker)
    with pytest.raises(TypeError):
        pub.publish_nowait("first", b"not a list")
    with pytest.raises(TypeError):
        pub.publish_nowait("first", {"a": 1})  # an object, but not a list of messages
    assert broker.topic_count() == 0
    # The topic slot was not used up by the rejected calls.
    pub.publish_nowait("second", [b"ok"])
    assert broker.list_topics() == ["second"]


def test_rejected_subscribe_leaves_no_trace(k):
    broker = k.new_broker(max_subscribers_per_topic=1)
    sub = k.InMemorySubscriber(broker)
    with pytest.raises(k.InvalidTopicName):
        sub.subscribe("a b")
    with pytest.raises(TypeError):
        sub.subscribe(1)
    assert broker.topic_count() == 0
    assert sub.is_subscribed() is False
    sub.subscribe("ok")
    assert sub.subscribed_topics() == ["ok"]


def test_message_errors_do_not_reach_the_broker(k):
    broker = k.new_broker()
    _sub = k.subscriber(broker, "t")
    with pytest.raises(TypeError):
        k.Message(b"x", {"a": 1})
    with pytest.raises(TypeError):
        k.Message(b"x").with_metadata("a", 1)
    assert broker.health_check().is_healthy


def test_error_messages_say_what_was_wrong(k):
    s = state(k)
    with pytest.raises(TypeError) as info:
        s.pub.publish_nowait("keep", 123)
    assert "int" in str(info.value)
    with pytest.raises(k.InvalidTopicName) as info2:
        s.pub.publish_nowait("a b", [b"x"])
    assert "a b" in str(info2.value)
