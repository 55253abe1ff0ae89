"""Errors of the in-memory broker. Each carries its fields as attributes."""

from __future__ import annotations

import kincir_core

from .. import errors as _common
from ..errors import KincirError

__all__ = [
    "AckError",
    "BrokerShutdown",
    "GroupNotFound",
    "InMemoryError",
    "InvalidConfig",
    "InvalidTopicName",
    "MaxSubscribersReached",
    "MaxTopicsReached",
    "NotSubscribed",
    "QueueFull",
    "TopicNotFound",
]

_MODULE = "kincir.memory"


class InMemoryError(KincirError):
    """Base class of the in-memory broker's errors."""

    __module__ = _MODULE


class QueueFull(InMemoryError):
    """A topic has no room for the batch; nothing of it was published."""

    __module__ = _MODULE

    def __init__(self, topic: str, limit: int | None = None) -> None:
        self.topic = topic
        self.limit = limit
        bound = f" (max_queue_size={limit})" if limit is not None else ""
        super().__init__(
            f"queue full for topic {topic!r}{bound}: nothing was published; consume faster, "
            "raise max_queue_size, or retry later"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic, self.limit))


class MaxTopicsReached(InMemoryError):
    """Creating one more topic would exceed ``max_topics``."""

    __module__ = _MODULE

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"maximum number of topics reached: {limit}; delete or clean up idle topics, "
            "or raise max_topics"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.limit,))


class MaxSubscribersReached(InMemoryError):
    """Subscribing would exceed ``max_subscribers_per_topic`` on this topic."""

    __module__ = _MODULE

    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self.limit = limit
        super().__init__(
            f"topic {topic!r} already has the maximum of {limit} subscribers; unsubscribe "
            "another or raise max_subscribers_per_topic"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic, self.limit))


class BrokerShutdown(InMemoryError, _common.BrokerShutdown):
    """The broker was shut down: no more publishing or subscribing, and receives have ended."""

    __module__ = _MODULE

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "the broker is shut down; create a new InMemoryBroker")


class InvalidTopicName(InMemoryError, ValueError):
    """A topic name that kincir does not accept."""

    __module__ = _MODULE

    def __init__(self, topic: str, reason: str = "") -> None:
        self.topic = topic
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(
            f"invalid topic name {topic!r}{why} (a topic is 1-255 characters of dot-separated, "
            "non-empty segments)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic, self.reason))


class TopicNotFound(InMemoryError, LookupError):
    """The named topic does not exist."""

    __module__ = _MODULE

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic not found: {topic!r}; publish or subscribe to create it")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic,))


class GroupNotFound(InMemoryError, LookupError):
    """The topic has no consumer group of that name."""

    __module__ = _MODULE

    def __init__(self, topic: str, group: str) -> None:
        self.topic = topic
        self.group = group
        super().__init__(
            f"topic {topic!r} has no consumer group {group!r}; subscribe with group= to create it"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic, self.group))


class NotSubscribed(InMemoryError, _common.NotSubscribed):
    """A receive or unsubscribe on a subscriber without that subscription."""

    __module__ = _MODULE

    def __init__(self, detail: str = "subscribe to a topic before receiving") -> None:
        super().__init__(f"not subscribed: {detail}")


class InvalidConfig(InMemoryError, ValueError):
    """A configuration value out of range; ``field`` names it."""

    __module__ = _MODULE

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid {field}={value!r}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        reason = str(self).split(": ", 1)[-1]
        return (type(self), (self.field, self.value, reason))


class AckError(InMemoryError, _common.AckError):
    """An acknowledgement that cannot be applied (settled, unknown or foreign handle)."""

    __module__ = _MODULE


kincir_core.set_error_types(
    QueueFull=QueueFull,
    MaxTopicsReached=MaxTopicsReached,
    MaxSubscribersReached=MaxSubscribersReached,
    BrokerShutdown=BrokerShutdown,
    InvalidTopicName=InvalidTopicName,
    TopicNotFound=TopicNotFound,
    NotSubscribed=NotSubscribed,
    GroupNotFound=GroupNotFound,
    InvalidConfig=InvalidConfig,
)
