"""Frozen snapshots of a broker: ``BrokerHealth``, ``TopicInfo`` and ``StatsSnapshot``.

Each is built from one engine call (``BrokerCore._snapshot``), costs O(topics) whatever the
number of queued messages, and never changes after it is taken.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from kincir_core import BrokerState
from kincir_core._rows import BrokerSnapshot, TopicRow

__all__ = ["METRICS", "BrokerHealth", "MetricDef", "StatsSnapshot", "TopicInfo", "metric_samples"]

_MODULE = "kincir.memory"
_MB = 1024.0 * 1024.0


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic at the moment it was read."""

    #: The topic's name.
    name: str
    #: Messages not yet read by the reader furthest behind (in-flight ones are ``in_flight``).
    queue_size: int
    #: Subscribers attached to the topic.
    subscriber_count: int
    #: Messages written to the topic's log since it was created.
    total_published: int
    #: Deliveries from the topic (a message read by three subscribers counts three times); an
    #: acknowledging reader's once acked or dead-lettered (until then it is ``in_flight``).
    total_consumed: int
    #: Unix time (seconds) at which the topic was created.
    created_at: float
    #: Unix time (seconds) of the last publish, subscribe, unsubscribe, consume() or clear.
    last_activity: float
    #: The sequence number the next published message will get.
    next_sequence: int
    #: (reader, message) pairs that expired before they were read.
    total_expired: int = 0
    #: Messages dropped: on arrival with no reader and persistence off, or by clear/leave.
    total_dropped: int = 0
    #: Publishes refused with QueueFull.
    queue_full_errors: int = 0
    #: Estimated bytes the held messages and the topic's allocated ring occupy (an object
    #: payload counts as a reference).
    memory_usage_estimate: int = 0
    #: (reader, message) pairs lost by readers that were behind, to the drop_oldest policy.
    total_lagged: int = 0
    #: Redeliveries by acknowledgement (nack with requeue, missed ack deadline, closed reader).
    total_redelivered: int = 0
    #: Messages sent to a dead-letter topic.
    total_dead_lettered: int = 0
    #: Messages delivered to acknowledging readers and not yet settled (nor queued, nor consumed).
    in_flight: int = 0
    #: The topic's overflow policy.
    overflow: str = "error"
    #: The topic's capacity (``max_queue_size``); None = unbounded.
    max_queue_size: int | None = None

    def age(self) -> float:
        """Seconds since the topic was created."""
        return max(0.0, time.time() - self.created_at)

    def idle_time(self) -> float:
        """Seconds since the topic's last activity."""
        return max(0.0, time.time() - self.last_activity)

    def is_active(self) -> bool:
        """True if the topic has a subscriber or holds messages."""
        return self.subscriber_count > 0 or self.queue_size > 0

    def throughput_rate(self) -> float:
        """Messages published per second over the topic's lifetime."""
        age = self.age()
        return self.total_published / age if age > 0 else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerHealth:
    """The broker's health at the moment it was read."""

    #: False once the broker is shut down.
    is_healthy: bool
    #: Topics that exist.
    topic_count: int
    #: Messages held over all topics.
    total_queued_messages: int
    #: Subscribers attached over all topics.
    total_subscribers: int
    #: Seconds since the broker was created.
    uptime: float
    #: Estimated bytes held by queued messages and topics, kept incrementally: what the broker
    #: allocates (slots, its Messages, rings) plus the length of bytes payloads; an object
    #: payload is shared with the publisher and counts as a reference (README, "Payloads").
    memory_usage_estimate: int

    def is_overloaded(self, max_topics: int, max_messages: int) -> bool:
        """True if there are more than ``max_topics`` topics or ``max_messages`` queued."""
        return self.topic_count > max_topics or self.total_queued_messages > max_messages

    def memory_usage_mb(self) -> float:
        """``memory_usage_estimate`` in mebibytes."""
        return self.memory_usage_estimate / _MB


@dataclasses.dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Broker counters at the moment they were read; methods use the seed's spelling.

    Delivery counters count (reader, message) events: a message read by three subscribers is
    consumed three times. Each message is in exactly one term; over each reader, published =
    consumed + in_flight + dropped + expired + queued (dead-lettered messages are consumed).
    """

    published: int
    consumed: int
    dropped: int
    expired: int
    lagged: int
    redelivered: int
    dead_lettered: int
    queue_full: int
    topics: int
    subscribers: int
    queued: int
    uptime_seconds: float
    in_flight: int = 0

    def messages_published(self) -> int:
        """Messages written to topic logs."""
        return self.published

    def messages_consumed(self) -> int:
        """Deliveries to readers."""
        return self.consumed

    def messages_dropped(self) -> int:
        """Messages dropped: on arrival (drop_newest, or no reader with persistence off), by
        drop_oldest, clear or delete, and rejected messages without a dead-letter topic."""
        return self.dropped

    def messages_expired(self) -> int:
        """(reader, message) pairs whose TTL ran out before the read."""
        return self.expired

    def messages_lagged(self) -> int:
        """Messages readers lost to the drop_oldest policy (0 under the error policy)."""
        return self.lagged

    def messages_redelivered(self) -> int:
        """Redeliveries by acknowledgement (0 without ack subscribers)."""
        return self.redelivered

    def messages_dead_lettered(self) -> int:
        """Messages sent to a dead-letter topic (0 without ack subscribers)."""
        return self.dead_lettered

    def messages_in_flight(self) -> int:
        """Messages delivered to acknowledging readers and not yet settled (a gauge)."""
        return self.in_flight

    def queue_full_errors(self) -> int:
        """Publishes refused with QueueFull."""
        return self.queue_full

    def active_topics(self) -> int:
        """Topics that exist."""
        return self.topics

    def active_subscribers(self) -> int:
        """Subscribers attached over all topics."""
        return self.subscribers

    def messages_pending(self) -> int:
        """Messages held over all topics."""
        return self.queued

    def uptime(self) -> float:
        """Seconds since the broker was created."""
        return self.uptime_seconds


for _cls in (TopicInfo, BrokerHealth, StatsSnapshot):
    _cls.__module__ = _MODULE


def topic_info(row: TopicRow) -> TopicInfo:
    """Build a TopicInfo from one row of the engine's snapshot."""
    return TopicInfo(
        row.name,
        row.queued,
        row.subscribers,
        row.published,
        row.delivered,
        row.created_at,
        row.last_activity,
        row.next_sequence,
        row.expired,
        row.dropped,
        row.queue_full,
        row.held_bytes,
        row.lagged,
        row.redelivered,
        row.dead_lettered,
        row.in_flight,
        row.overflow,
        row.capacity,
    )


def broker_health(snapshot: BrokerSnapshot, topic_overhead: int) -> BrokerHealth:
    """Build a BrokerHealth from the engine's snapshot."""
    rows = snapshot.topics
    return BrokerHealth(
        is_healthy=snapshot.state == BrokerState.RUNNING,
        topic_count=len(rows),
        total_queued_messages=sum(r.queued for r in rows),
        total_subscribers=sum(r.subscribers for r in rows),
        uptime=snapshot.uptime,
        memory_usage_estimate=sum(r.held_bytes for r in rows) + topic_overhead * len(rows),
    )


def stats_snapshot(snapshot: BrokerSnapshot) -> StatsSnapshot:
    """Build a StatsSnapshot from the engine's snapshot (retired topics included)."""
    retired, rows = snapshot.retired, snapshot.topics
    return StatsSnapshot(
        published=retired.published + sum(r.published for r in rows),
        consumed=retired.delivered + sum(r.delivered for r in rows),
        expired=retired.expired + sum(r.expired for r in rows),
        dropped=retired.dropped + sum(r.dropped for r in rows),
        queue_full=retired.queue_full + sum(r.queue_full for r in rows),
        lagged=retired.lagged + sum(r.lagged for r in rows),
        redelivered=retired.redelivered + sum(r.redelivered for r in rows),
        dead_lettered=retired.dead_lettered + sum(r.dead_lettered for r in rows),
        topics=len(rows),
        subscribers=sum(r.subscribers for r in rows),
        queued=sum(r.queued for r in rows),
        uptime_seconds=snapshot.uptime,
        in_flight=sum(r.in_flight for r in rows),
    )


# -- Metrics: one table for broker.metrics() and kincir.prometheus -------------------------------

#: A metric's samples: (label values, value) pairs, label values in ``MetricDef.labels`` order.
Samples = list[tuple[tuple[str, ...], float]]


@dataclasses.dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric of the broker: ``broker.metrics()`` and ``kincir.prometheus`` both render
    ``METRICS``, so their names, types, help texts and labels cannot drift apart."""

    #: Name without the namespace prefix and, for a counter, without the ``_total`` suffix
    #: (prometheus_client's convention: its CounterMetricFamily adds the suffix).
    name: str
    #: "counter" or "gauge".
    kind: str
    #: The HELP text.
    help: str
    #: Label names: ``()`` for a broker-wide metric, ``("topic",)`` for a per-topic one.
    labels: tuple[str, ...]
    #: The metric's samples in one engine snapshot.
    samples: Callable[[BrokerSnapshot], Samples]

    def exposition_name(self, namespace: str = "kincir") -> str:
        """The metric's name in the text exposition format (``_total`` on a counter)."""
        name = f"{namespace}_{self.name}" if namespace else self.name
        return f"{name}_total" if self.kind == "counter" else name


def _broker_wide(read: Callable[[BrokerSnapshot], float]) -> Callable[[BrokerSnapshot], Samples]:
    return lambda snapshot: [((), read(snapshot))]


def _per_topic(read: Callable[[TopicRow], float]) -> Callable[[BrokerSnapshot], Samples]:
    """Samples from one field (``read``) of every topic row of the snapshot."""
    return lambda snapshot: [((row.name,), read(row)) for row in snapshot.topics]


_TOPIC = ("topic",)

#: Every metric, in exposition order.
METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "up",
        "gauge",
        "1 while the broker runs, 0 once it is shut down.",
        (),
        _broker_wide(lambda snapshot: 1 if snapshot.state == BrokerState.RUNNING else 0),
    ),
    MetricDef(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker was created.",
        (),
        _broker_wide(lambda snapshot: float(snapshot.uptime)),
    ),
    MetricDef("topics", "gauge", "Topics that exist.", (), _broker_wide(lambda s: len(s.topics))),
    MetricDef(
        "messages_published",
        "counter",
        "Messages written to the topic's log.",
        _TOPIC,
        _per_topic(lambda r: r.published),
    ),
    MetricDef(
        "messages_consumed",
        "counter",
        "Deliveries to readers.",
        _TOPIC,
        _per_topic(lambda r: r.delivered),
    ),
    MetricDef(
        "messages_expired",
        "counter",
        "(reader, message) pairs whose TTL ran out before the read.",
        _TOPIC,
        _per_topic(lambda r: r.expired),
    ),
    MetricDef(
        "messages_dropped", "counter", "Messages dropped.", _TOPIC, _per_topic(lambda r: r.dropped)
    ),
    MetricDef(
        "queue_full_errors",
        "counter",
        "Publishes refused for want of room.",
        _TOPIC,
        _per_topic(lambda r: r.queue_full),
    ),
    MetricDef(
        "messages_lagged",
        "counter",
        "(reader, message) pairs lost to the drop_oldest policy.",
        _TOPIC,
        _per_topic(lambda r: r.lagged),
    ),
    MetricDef(
        "messages_redelivered",
        "counter",
        "Redeliveries by acknowledgement.",
        _TOPIC,
        _per_topic(lambda r: r.redelivered),
    ),
    MetricDef(
        "messages_dead_lettered",
        "counter",
        "Messages sent to a dead-letter topic.",
        _TOPIC,
        _per_topic(lambda r: r.dead_lettered),
    ),
    MetricDef(
        "queue_size", "gauge", "Messages not yet read.", _TOPIC, _per_topic(lambda r: r.queued)
    ),
    MetricDef(
        "subscribers",
        "gauge",
        "Subscribers attached to the topic.",
        _TOPIC,
        _per_topic(lambda r: r.subscribers),
    ),
    MetricDef(
        "in_flight",
        "gauge",
        "Messages delivered to acknowledging readers and not yet settled.",
        _TOPIC,
        _per_topic(lambda r: r.in_flight),
    ),
    MetricDef(
        "memory_usage_bytes",
        "gauge",
        "Estimated bytes the held messages occupy.",
        _TOPIC,
        _per_topic(lambda r: r.held_bytes),
    ),
)


def metric_samples(snapshot: BrokerSnapshot) -> list[tuple[MetricDef, Samples]]:
    """Every metric of ``METRICS`` with its samples, all from the one engine ``snapshot``."""
    return [(metric, metric.samples(snapshot)) for metric in METRICS]


def _escape(value: str, quote: bool) -> str:
    value = value.replace("\\", "\\\\").replace("\n", "\\n")
    return value.replace('"', '\\"') if quote else value


def _value(value: float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def prometheus_text(snapshot: BrokerSnapshot) -> str:
    """The engine's snapshot in Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for metric, samples in metric_samples(snapshot):
        name = metric.exposition_name()
        lines.append(f"# HELP {name} {_escape(metric.help, quote=False)}")
        lines.append(f"# TYPE {name} {metric.kind}")
        for values, value in samples:
            labels = ",".join(
                f'{label}="{_escape(v, quote=True)}"'
                for label, v in zip(metric.labels, values, strict=True)
            )
            lines.append(
                f"{name}{{{labels}}} {_value(value)}" if labels else f"{name} {_value(value)}"
            )
    return "\n".join(lines) + "\n"
