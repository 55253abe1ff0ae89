"""broker.metrics(): Prometheus text exposition of every topic's counters and gauges."""

from __future__ import annotations

import re

LINE = re.compile(r'^(kincir_[a-z_]+)(\{topic="((?:[^"\\]|\\.)*)"\})? (-?[0-9.e+]+)$')


def parse(text):
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = LINE.match(line)
        assert match, f"not an exposition line: {line!r}"
        name, _, topic, value = match.groups()
        assert name in types, f"{name} has no TYPE line"
        samples[(name, topic)] = float(value)
    return samples, types


def test_metrics_reflect_the_topics(k):
    broker, pub, sub = k.setup(max_queue_size=2, subscribe="orders")
    pub.publish_nowait("orders", [b"1", b"2"])
    sub.try_receive()
    try:
        pub.publish_nowait("orders", [b"3", b"4"])
    except k.QueueFull:
        pass
    acker = k.InMemoryAckSubscriber(broker)
    acker.subscribe('we"ird\\topic')
    pub.publish_nowait('we"ird\\topic', [b"x"])
    acker.try_receive_with_ack()
    samples, types = parse(broker.metrics())
    assert types["kincir_messages_published_total"] == "counter"
    assert types["kincir_queue_size"] == "gauge"
    assert samples[("kincir_up", None)] == 1
    assert samples[("kincir_topics", None)] == 2
    assert samples[("kincir_messages_published_total", "orders")] == 2
    assert samples[("kincir_messages_consumed_total", "orders")] == 1
    assert samples[("kincir_queue_size", "orders")] == 1
    assert samples[("kincir_queue_full_errors_total", "orders")] == 1
    assert samples[("kincir_subscribers", "orders")] == 1
    assert samples[("kincir_in_flight", 'we\\"ird\\\\topic')] == 1
    broker.shutdown()
    samples, _ = parse(broker.metrics())
    assert samples[("kincir_up", None)] == 0
