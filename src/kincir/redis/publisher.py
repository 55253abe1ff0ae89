"""``RedisPublisher``."""

from __future__ import annotations

from .._remote import RemotePublisher
from .broker import RedisBroker

__all__ = ["RedisPublisher"]


class RedisPublisher(RemotePublisher[RedisBroker]):
    """Publishes to Redis streams; ``RedisPublisher(broker)`` or ``RedisPublisher(url)``."""

    broker_type = RedisBroker
