"""kincir.prometheus: a prometheus_client collector exposing exactly what broker.metrics() does."""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import weakref

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import kincir.prometheus
from kincir.memory.health import METRICS


def exposition(text):
    """(families, samples) of an exposition text, as prometheus_client's parser reads it:
    families as (name, type, help), samples as (name, labels, value)."""
    families = set()
    samples = {}
    for family in text_string_to_metric_families(text):
        families.add((family.name, family.type, family.documentation))
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return families, samples


def scrape(collector):
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector)
    return prometheus_client.generate_latest(registry).decode()


def workload(k):
    """A broker with several topics, a consumer group, acks, dead letters, drops, lag, a refused
    publish and TTL expiry."""
    broker = k.new_broker(max_queue_size=3, default_message_ttl=60.0, enable_stats=True)
    pub = k.InMemoryPublisher(broker)
    plain = k.subscriber(broker, "orders")
    pub.publish_nowait("orders", [b"1", b"2"])
    assert plain.try_receive().payload == b"1"
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("orders", [b"3", b"4", b"5"])

    members = k.members(broker, "events", group="billing")
    pub.publish_nowait("events", [b"a", b"b", b"c"])
    assert members[0].try_receive() is not None
    assert members[1].try_receive() is not None

    acker = k.ack_subscriber(broker, "jobs", max_deliveries=2, dead_letter_topic="jobs.dlq")
    pub.publish_nowait("jobs", [b"j1", b"j2", b"j3"])
    _, first = acker.try_receive_with_ack()
    acker.ack(first)
    _, second = acker.try_receive_with_ack()
    acker.nack(second)
    _, again = acker.try_receive_with_ack()
    acker.nack(again)  # second delivery: dead-lettered
    _, third = acker.try_receive_with_ack()  # left in flight

    rejecter = k.ack_subscriber(broker, "tasks")
    pub.publish_nowait("tasks", [b"t"])
    _, handle = rejecter.try_receive_with_ack()
    rejecter.nack(handle, requeue=False)  # no dead-letter topic: dropped

    broker.configure_topic("ticks", overflow="drop_oldest", max_queue_size=2)
    slow = k.subscriber(broker, "ticks")
    for tick in (b"1", b"2", b"3", b"4"):
        pub.publish_nowait("ticks", [tick])  # the two oldest are lost: lagged

    stale = k.InMemorySubscriber(broker)
    stale.subscribe('we"ird\\topic')
    pub.publish_nowait('we"ird\\topic', [b"old"])
    k.core._advance_clock(61)
    assert stale.try_receive() is None  # expired
    pub.publish_nowait('we"ird\\topic', [b"new"])
    keep = (plain, members, acker, third, rejecter, slow, stale)
    return broker, keep


def test_collector_exposes_the_same_samples_as_broker_metrics(k):
    broker, _keep = workload(k)
    collector = kincir.prometheus.KincirCollector(broker)
    ours_families, ours = exposition(broker.metrics())
    theirs_families, theirs = exposition(scrape(collector))
    assert theirs_families == ours_families
    uptime = ("kincir_uptime_seconds", frozenset())
    assert abs(ours.pop(uptime) - theirs.pop(uptime)) < 5
    assert theirs == ours
    # the workload reached every kind of counter
    by_name = {}
    for (name, labels), value in ours.items():
        by_name.setdefault(name, {})[dict(labels).get("topic")] = value
    assert set(by_name["kincir_messages_published_total"]) == {
        "orders",
        "events",
        "jobs",
        "jobs.dlq",
        "tasks",
        "ticks",
        'we"ird\\topic',
    }
    assert by_name["kincir_topics"][None] == 7
    assert by_name["kincir_queue_full_errors_total"]["orders"] == 1
    assert by_name["kincir_messages_consumed_total"]["events"] == 2
    assert by_name["kincir_messages_dead_lettered_total"]["jobs"] == 1
    assert by_name["kincir_messages_redelivered_total"]["jobs"] == 1
    assert by_name["kincir_in_flight"]["jobs"] == 1
    assert by_name["kincir_messages_dropped_total"]["tasks"] == 1
    assert by_name["kincir_messages_lagged_total"]["ticks"] == 2
    assert by_name["kincir_messages_expired_total"]['we"ird\\topic'] == 1
    assert by_name["kincir_queue_size"]['we"ird\\topic'] == 1


def test_sample_names_and_types_come_from_the_shared_table(k):
    broker = k.new_broker()
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    text = scrape(kincir.prometheus.KincirCollector(broker))
    declared = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            declared[name] = kind
    assert declared == {m.exposition_name(): m.kind for m in METRICS}
    assert "kincir_messages_published_total" in declared  # counters keep their _total suffix
    assert all(m.exposition_name().endswith("_total") == (m.kind == "counter") for m in METRICS)
    assert len({m.name for m in METRICS}) == len(METRICS)
    assert 'kincir_messages_published_total{topic="t"} 1.0' in text.splitlines()


def test_describe_names_every_family_without_samples(k):
    collector = kincir.prometheus.KincirCollector(k.new_broker())
    described = collector.describe()
    assert [(f.name, f.type) for f in described] == [
        (m.exposition_name().removesuffix("_total"), m.kind) for m in METRICS
    ]
    assert all(not f.samples for f in described)


def test_one_scrape_reads_one_snapshot(k, monkeypatch):
    broker = k.new_broker()
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    collector = kincir.prometheus.KincirCollector(broker)
    calls = []
    real = type(broker)._snapshot

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(type(broker), "_snapshot", counting)
    scrape(collector)
    assert len(calls) == 1


def test_register_on_a_registry_and_unregister(k):
    broker = k.new_broker()
    registry = prometheus_client.CollectorRegistry()
    collector = kincir.prometheus.register(broker, registry)
    assert isinstance(collector, kincir.prometheus.KincirCollector)
    assert registry.get_sample_value("kincir_up") == 1
    assert registry.get_sample_value("kincir_topics") == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        kincir.prometheus.register(broker, registry)
    second = kincir.prometheus.register(broker, registry, namespace="other")
    assert registry.get_sample_value("other_up") == 1
    registry.unregister(collector)
    registry.unregister(second)
    assert registry.get_sample_value("kincir_up") is None


def test_register_defaults_to_the_global_registry(k):
    broker = k.new_broker()
    collector = kincir.prometheus.register(broker, namespace=f"kincir_test_{k.impl}")
    try:
        assert prometheus_client.REGISTRY.get_sample_value(f"kincir_test_{k.impl}_up") == 1
    finally:
        prometheus_client.REGISTRY.unregister(collector)


def test_namespace_prefixes_every_name(k):
    broker = k.new_broker()
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    _, samples = exposition(scrape(kincir.prometheus.KincirCollector(broker, namespace="app")))
    names = {name for name, _ in samples}
    assert names == {"app_" + m.exposition_name("").lstrip("_") for m in METRICS}
    assert samples[("app_messages_published_total", frozenset({("topic", "t")}))] == 1


def test_the_collector_keeps_working_after_shutdown(k):
    broker, pub, _sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"x"])
    registry = prometheus_client.CollectorRegistry()
    kincir.prometheus.register(broker, registry)
    broker.shutdown()
    assert registry.get_sample_value("kincir_up") == 0
    assert registry.get_sample_value("kincir_queue_size", {"topic": "t"}) == 1
    broker.force_shutdown()
    assert registry.get_sample_value("kincir_up") == 0
    # force_shutdown drops the topic (issue 12, seed parity): its series go with it, as
    # after delete_topic
    assert registry.get_sample_value("kincir_queue_size", {"topic": "t"}) is None
    assert registry.get_sample_value("kincir_messages_published_total", {"topic": "t"}) is None


def test_the_collector_does_not_keep_the_broker_alive(k):
    broker = k.InMemoryBroker(k.InMemoryConfig(default_message_ttl=5.0))  # with a cleanup thread
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    registry = prometheus_client.CollectorRegistry()
    collector = kincir.prometheus.register(broker, registry)
    assert collector.broker is broker
    ref = weakref.ref(broker)
    broker.shutdown()
    del broker
    gc.collect()
    assert ref() is None
    assert collector.broker is None
    assert list(collector.collect()) == []
    assert prometheus_client.generate_latest(registry) == b""
    assert "broker gone" in repr(collector)


def test_the_collector_refuses_what_is_not_a_broker(k):
    with pytest.raises(TypeError, match="InMemoryBroker"):
        kincir.prometheus.KincirCollector(object())
    with pytest.raises(TypeError, match="namespace"):
        kincir.prometheus.KincirCollector(k.new_broker(), namespace=1)
    with pytest.raises(ValueError, match="namespace"):
        kincir.prometheus.KincirCollector(k.new_broker(), namespace="not-a-name")


def test_importing_kincir_does_not_import_prometheus_client():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys, kincir, kincir.memory, kincir.router\n"
        "assert 'prometheus_client' not in sys.modules, 'kincir imported prometheus_client'\n"
        "import kincir.prometheus\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    env = dict(os.environ)
    paths = [os.path.join(root, "src"), root]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_without_prometheus_client_the_import_error_names_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "prometheus_client" or n.startswith("prometheus_")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "kincir.prometheus")
    with pytest.raises(ImportError, match=r"kincir\[prometheus\]") as caught:
        importlib.import_module("kincir.prometheus")
    assert caught.value.name == "prometheus_client"
