"""Where ``kincir bench --backend`` finds each backend and its server: the one place that knows.

A backend's classes are found by name: module ``kincir.<name>``, classes ``<Prefix>Broker``,
``<Prefix>Publisher``, ``<Prefix>Subscriber`` and ``<Prefix>AckSubscriber``. The server address is
``--url``, else the backend's environment variable, else its default on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os

__all__ = ["BACKENDS", "BackendSpec", "default_url"]


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSpec:
    """How to find a backend and its server."""

    #: ``--backend`` NAME, and the module ``kincir.<name>``.
    name: str
    #: The classes' prefix: ``<prefix>Broker`` ...
    prefix: str
    #: The server when neither ``--url`` nor ``env`` says otherwise.
    default_url: str
    #: The environment variable that overrides ``default_url``.
    env: str


#: The backends ``--backend`` knows, by name.
BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("redis", "Redis", "redis://127.0.0.1:6379/0", "KINCIR_REDIS_URL"),
        BackendSpec(
            "rabbitmq", "RabbitMQ", "amqp://guest:guest@127.0.0.1:5672/", "KINCIR_RABBITMQ_URL"
        ),
        BackendSpec("kafka", "Kafka", "127.0.0.1:9092", "KINCIR_KAFKA_URL"),
    )
}


def default_url(name: str) -> str:
    """The server of backend ``name`` when ``--url`` is not given: its env variable, or default."""
    spec = BACKENDS[name]
    return os.environ.get(spec.env) or spec.default_url
