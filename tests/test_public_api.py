"""The public surface: exported names, public module names, protocols and the error hierarchy."""

from __future__ import annotations

import inspect
import pickle

import pytest

import kincir
import kincir.memory
import kincir_core

EXPECTED_KINCIR = {
    "Message",
    "KincirError",
    "Publisher",
    "PublisherStats",
    "Subscriber",
    "SubscriberStats",
    "IMPLEMENTATION",
    "__version__",
}
EXPECTED_MEMORY = {
    "InMemoryBroker",
    "InMemoryConfig",
    "InMemoryPublisher",
    "InMemorySubscriber",
    "InMemoryError",
    "QueueFull",
    "MaxTopicsReached",
    "MaxSubscribersReached",
    "BrokerShutdown",
    "InvalidTopicName",
    "TopicNotFound",
    "NotSubscribed",
    "InvalidConfig",
    "AckError",
    "BrokerHealth",
    "TopicInfo",
    "StatsSnapshot",
    "PublisherStats",
    "SubscriberStats",
}


def public_items(k):
    for module in (k.kincir, k.memory):
        for name in module.__all__:
            yield module, name, getattr(module, name)


def test_all_names_exist(k):
    for module in (k.kincir, k.memory):
        assert len(module.__all__) == len(set(module.__all__)), "duplicate name in __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"


def test_expected_names_are_exported(k):
    assert set(k.kincir.__all__) >= EXPECTED_KINCIR
    assert set(k.memory.__all__) >= EXPECTED_MEMORY


def test_star_import_gives_the_public_names(k):
    for module in (k.kincir, k.memory):
        namespace: dict[str, object] = {}
        exec(f"from {module.__name__} import *", namespace)
        # Star import goes through sys.modules: compare names, not objects, for the twin copy.
        assert set(module.__all__) <= set(namespace)


def test_fixture_holds_every_public_name(k):
    for module, name, value in public_items(k):
        if module is k.kincir and name in k.memory.__all__:
            # kincir's common error, refined by the in-memory broker: the fixture holds the latter
            assert issubclass(getattr(k, name), value)
        else:
            assert getattr(k, name) is value


def test_memory_errors_refine_the_common_ones(k):
    for name in ("BrokerShutdown", "NotSubscribed", "AckError"):
        assert issubclass(getattr(k.memory, name), getattr(k.kincir, name))
        assert issubclass(getattr(k.memory, name), k.memory.InMemoryError)


def test_public_classes_have_public_module_names(k):
    for _module, name, value in public_items(k):
        if inspect.isclass(value):
            assert value.__module__ in ("kincir", "kincir.memory"), (name, value.__module__)
            assert "kincir_core" not in value.__module__
            assert "kincir_core" not in repr(value)
            assert value.__qualname__ == name, (name, value.__qualname__)


def test_public_classes_resolve_by_their_module_name(k):
    """``kincir.memory.QueueFull`` really is the class named that (pickle relies on it)."""
    for _module, name, value in public_items(k):
        if inspect.isclass(value):
            home = k.kincir if value.__module__ == "kincir" else k.memory
            assert getattr(home, value.__qualname__) is value, name


def test_reprs_do_not_show_the_engine(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [k.Message(b"x", {"a": "b"})])
    delivered = sub.try_receive()
    objects = [
        broker,
        pub,
        sub,
        k.Message(b"x"),
        delivered,
        broker.health_check(),
        broker.topic_info("t"),
        k.InMemoryConfig(),
        sub.subscribe("t"),
    ]
    for obj in objects:
        assert "kincir_core" not in repr(obj), repr(obj)
        assert "kincir_core" not in repr(type(obj)), repr(type(obj))
        assert "_py" not in type(obj).__module__
    assert type(broker).__name__ == "InMemoryBroker"
    assert type(pub).__name__ == "InMemoryPublisher"
    assert type(sub).__name__ == "InMemorySubscriber"
    assert "InMemoryBroker" in repr(broker)
    assert "InMemoryPublisher" in repr(pub)
    assert "InMemorySubscriber" in repr(sub)


def test_errors_raised_by_the_engine_show_public_names(k):
    broker = k.new_broker(max_queue_size=1)
    pub = k.InMemoryPublisher(broker)
    pub.publish_nowait("t", [b"x"])
    raised = []
    for call in (
        lambda: pub.publish_nowait("t", [b"y"]),
        lambda: pub.publish_nowait("a b", [b"y"]),
        lambda: broker.topic_info("nope"),
        lambda: k.InMemorySubscriber(broker).try_receive(),
    ):
        with pytest.raises(k.KincirError) as info:
            call()
        raised.append(info.value)
    assert [type(e).__name__ for e in raised] == [
        "QueueFull",
        "InvalidTopicName",
        "TopicNotFound",
        "NotSubscribed",
    ]
    for e in raised:
        assert type(e).__module__ == "kincir.memory"
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown) as info:
        pub.publish_nowait("t", [b"z"])
    assert type(info.value).__module__ == "kincir.memory"


def test_publisher_and_subscriber_satisfy_the_protocols(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    assert isinstance(pub, k.Publisher)
    assert isinstance(sub, k.Subscriber)
    assert not isinstance(object(), k.Publisher)
    assert not isinstance(object(), k.Subscriber)
    assert not isinstance(broker, k.Subscriber)


def test_protocols_are_runtime_checkable_protocols(k):
    for proto in (k.Publisher, k.Subscriber):
        assert getattr(proto, "_is_protocol", False) is True
        assert getattr(proto, "_is_runtime_protocol", False) is True
        assert proto.__module__ == "kincir"


@pytest.mark.parametrize(
    "child,parents",
    [
        ("InMemoryError", ["KincirError"]),
        ("QueueFull", ["InMemoryError", "KincirError"]),
        ("MaxTopicsReached", ["InMemoryError", "KincirError"]),
        ("MaxSubscribersReached", ["InMemoryError", "KincirError"]),
        ("BrokerShutdown", ["InMemoryError", "KincirError"]),
        ("NotSubscribed", ["InMemoryError", "KincirError"]),
        ("AckError", ["InMemoryError", "KincirError"]),
        ("InvalidTopicName", ["InMemoryError", "KincirError", ValueError]),
        ("InvalidConfig", ["InMemoryError", "KincirError", ValueError]),
        ("TopicNotFound", ["InMemoryError", "KincirError", LookupError]),
    ],
)
def test_error_hierarchy(k, child, parents):
    cls = getattr(k, child)
    assert issubclass(cls, Exception)
    for parent in parents:
        parent_cls = getattr(k, parent) if isinstance(parent, str) else parent
        assert issubclass(cls, parent_cls), (child, parent)


def test_kincir_error_is_the_root(k):
    assert issubclass(k.KincirError, Exception)
    assert k.KincirError.__module__ == "kincir"
    assert not issubclass(k.QueueFull, ValueError)
    assert not issubclass(k.BrokerShutdown, LookupError)


def test_error_fields_and_messages(k):
    cases = [
        (k.QueueFull("orders", 10), {"topic": "orders", "limit": 10}),
        (k.MaxTopicsReached(5), {"limit": 5}),
        (k.MaxSubscribersReached("orders", 3), {"topic": "orders", "limit": 3}),
        (k.InvalidTopicName("a b"), {"topic": "a b"}),
        (k.TopicNotFound("gone"), {"topic": "gone"}),
        (k.InvalidConfig("max_topics", 0, "must be >= 1"), {"field": "max_topics", "value": 0}),
    ]
    for err, fields in cases:
        for name, value in fields.items():
            assert getattr(err, name) == value
        assert str(err), type(err).__name__
    assert str(k.BrokerShutdown())
    assert str(k.NotSubscribed())


def test_errors_pickle_with_their_fields(k):
    errors = [
        k.QueueFull("orders", 10),
        k.MaxTopicsReached(5),
        k.MaxSubscribersReached("orders", 3),
        k.InvalidTopicName("a b", "it contains ' '"),
        k.TopicNotFound("gone"),
        k.InvalidConfig("max_topics", 0, "must be >= 1"),
        k.BrokerShutdown(),
    ]
    with k.activated():
        for err in errors:
            copy = pickle.loads(pickle.dumps(err))
            assert type(copy) is type(err)
            assert str(copy) == str(err)
            assert vars(copy) == vars(err)


def test_implementation_names_the_engine(k):
    assert k.impl == k.IMPLEMENTATION
    assert k.impl == k.core.IMPLEMENTATION
    assert k.IMPLEMENTATION in ("cython", "python")


def test_main_import_reports_its_engine():
    assert kincir_core.IMPLEMENTATION in ("cython", "python")
    assert kincir.IMPLEMENTATION == kincir_core.IMPLEMENTATION
    assert kincir.memory.InMemoryBroker.__module__ == "kincir.memory"


def test_version_is_a_string():
    assert isinstance(kincir.__version__, str)
    assert kincir.__version__.count(".") >= 1


def test_message_is_the_engine_message(k):
    broker = k.new_broker()
    sub = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"raw"])
    assert type(sub.try_receive()) is k.Message


def test_public_methods_have_docstrings(k):
    for cls in (
        k.InMemoryBroker,
        k.InMemoryPublisher,
        k.InMemorySubscriber,
        k.InMemoryConfig,
        k.Message,
        k.BrokerHealth,
        k.TopicInfo,
        k.StatsSnapshot,
    ):
        assert cls.__doc__, cls
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attr = getattr(cls, name)
            if callable(attr):
                assert attr.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_every_package_of_the_source_tree_is_in_the_distribution() -> None:
    """``pyproject.toml`` lists the packages a wheel carries: a subpackage missing there would
    work from the checkout and be absent once installed."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root / "src").parts)
        for init in (root / "src").rglob("__init__.py")
    }
    assert found - listed == set(), "packages missing from pyproject.toml"
