"""A prometheus_client collector for an ``InMemoryBroker`` (the ``kincir[prometheus]`` extra).

    import kincir.prometheus
    kincir.prometheus.register(broker)  # on prometheus_client.REGISTRY

Each scrape reads one engine snapshot (O(topics)) and exposes the same metrics as
``broker.metrics()``, built from the same table (``kincir.memory.health.METRICS``): the same
sample names, types, help texts, labels and values. The collector holds the broker weakly: it
never keeps a broker alive, and yields nothing once the broker is gone. After a shutdown it keeps
reporting (``kincir_up`` is then 0).

Importing ``kincir`` never imports prometheus_client; only importing this module does.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as exc:
    if exc.name is not None and exc.name.partition(".")[0] != "prometheus_client":
        raise
    raise ImportError(
        "kincir.prometheus needs the prometheus_client package: install the extra with "
        "pip install 'kincir[prometheus]'",
        name="prometheus_client",
    ) from exc

from .memory.health import METRICS, MetricDef, metric_samples

if TYPE_CHECKING:
    from .memory.broker import InMemoryBroker

__all__ = ["KincirCollector", "register"]

_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _family(metric: MetricDef, namespace: str) -> CounterMetricFamily | GaugeMetricFamily:
    name = metric.exposition_name(namespace)
    if metric.kind == "counter":
        # CounterMetricFamily drops the "_total" suffix from the family name; the samples (and
        # the text format's HELP and TYPE lines) carry it, as broker.metrics() does
        return CounterMetricFamily(name, metric.help, labels=metric.labels)
    return GaugeMetricFamily(name, metric.help, labels=metric.labels)


class KincirCollector:
    """A prometheus_client collector exposing one broker's metrics.

    ``namespace`` prefixes every metric name (``kincir_up``, ``kincir_queue_size`` ...); give
    each broker its own namespace (or registry) to expose several brokers from one process.
    """

    def __init__(self, broker: InMemoryBroker, *, namespace: str = "kincir") -> None:
        if not callable(getattr(broker, "_snapshot", None)):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be str, not {type(namespace).__name__}")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), "
                f"got {namespace!r}"
            )
        self._broker: weakref.ref[InMemoryBroker] = weakref.ref(broker)
        self.namespace = namespace

    @property
    def broker(self) -> InMemoryBroker | None:
        """The broker, or None once it has been collected."""
        return self._broker()

    def describe(self) -> list[Metric]:
        """The metric families without samples (prometheus_client checks names with it)."""
        return [_family(metric, self.namespace) for metric in METRICS]

    def collect(self) -> Iterator[Metric]:
        """The broker's metrics now, from one engine snapshot; nothing once the broker is
        gone."""
        broker = self._broker()
        if broker is None:
            return
        snapshot = broker._snapshot()
        del broker  # a scrape in progress must not be what keeps the broker alive
        for metric, samples in metric_samples(snapshot):
            family = _family(metric, self.namespace)
            for labels, value in samples:
                family.add_metric(labels, value)
            yield family

    def __repr__(self) -> str:
        state = "broker gone" if self._broker() is None else "live"
        return f"<KincirCollector namespace={self.namespace!r} {state}>"


def register(
    broker: InMemoryBroker, registry: CollectorRegistry = REGISTRY, *, namespace: str = "kincir"
) -> KincirCollector:
    """Make a ``KincirCollector`` for ``broker``, register it on ``registry`` (the default
    registry unless given) and return it (``registry.unregister(collector)`` removes it)."""
    collector = KincirCollector(broker, namespace=namespace)
    registry.register(collector)
    return collector
