"""``RabbitMQPublisher``."""

from __future__ import annotations

from .._remote import (
    RemotePublisher,
)
from .broker import RabbitMQBroker

__all__ = ["RabbitMQPublisher"]


class RabbitMQPublisher(RemotePublisher[RabbitMQBroker]):
    """Publishes to RabbitMQ exchanges; ``RabbitMQPublisher(broker)`` or ``(url)``."""

    broker_type = RabbitMQBroker
