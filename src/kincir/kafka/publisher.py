"""``KafkaPublisher``."""

from __future__ import annotations

from .._remote import (
    RemotePublisher,
)
from .broker import KafkaBroker

__all__ = ["KafkaPublisher"]


class KafkaPublisher(RemotePublisher[KafkaBroker]):
    """Publishes to Kafka topics; ``KafkaPublisher(broker)`` or ``KafkaPublisher(url)``."""

    broker_type = KafkaBroker
