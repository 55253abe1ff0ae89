"""The errors the engine raises, defined once: both engines raise these classes directly.

An implementation module: users import them from ``kincir`` (``KincirError``, the common
``BrokerShutdown``, ``NotSubscribed``, ``AckError``) and ``kincir.memory`` (the in-memory broker's
errors), which re-export these very classes. Each class's ``__module__`` is its public module, so
reprs, tracebacks and pickles name ``kincir.X`` / ``kincir.memory.X`` as before. The in-memory
broker's ``BrokerShutdown``, ``NotSubscribed`` and ``AckError`` refine the common ones of the same
public name; here the common ones are ``BaseBrokerShutdown``, ``BaseNotSubscribed`` and
``BaseAckError`` (their ``__name__`` and ``__qualname__`` stay the public name).
"""

from __future__ import annotations

__all__ = [
    "AckError",
    "BaseAckError",
    "BaseBrokerShutdown",
    "BaseNotSubscribed",
    "BaseTopicClosed",
    "BrokerShutdown",
    "GroupNotFound",
    "InMemoryError",
    "InvalidConfig",
    "InvalidTopicName",
    "KincirError",
    "MaxSubscribersReached",
    "MaxTopicsReached",
    "NotSubscribed",
    "QueueFull",
    "TopicClosed",
    "TopicNotFound",
]

_COMMON = "kincir"
_MODULE = "kincir.memory"

# -- kincir's common vocabulary (re-exported by kincir.errors) ----------------------------------


class KincirError(Exception):
    """Base class of every error kincir raises on purpose."""

    __module__ = _COMMON


class BaseBrokerShutdown(KincirError):
    """The broker was shut down (or closed): no more publishing, subscribing or receiving."""

    __module__ = _COMMON


class BaseNotSubscribed(KincirError):
    """A receive or unsubscribe on a subscriber without that subscription."""

    __module__ = _COMMON


class BaseTopicClosed(KincirError):
    """The topic was closed for writing: publishing to it is refused (``reading`` False), and
    its readers end once they have everything published before the close (``reading`` True).
    Every backend that keeps an end of stream raises it with these fields."""

    __module__ = _COMMON

    def __init__(self, topic: str, reading: bool = False) -> None:
        self.topic = topic
        self.reading = reading
        if reading:
            detail = (
                f"topic {topic!r} was closed for writing and everything published to it was "
                "received: the stream has ended"
            )
        else:
            detail = (
                f"topic {topic!r} is closed for writing: nothing was published; delete the "
                "topic to start it afresh"
            )
        super().__init__(detail)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.topic, self.reading))


class BaseAckError(KincirError):
    """An acknowledgement that cannot be applied (settled, unknown or foreign handle)."""

    __module__ = _COMMON


for _cls in (BaseBrokerShutdown, BaseNotSubscribed, BaseTopicClosed, BaseAckError):
    _cls.__name__ = _cls.__qualname__ = _cls.__name__.removeprefix("Base")


# -- the in-memory broker's errors (re-exported by kincir.memory.errors) ------------------------


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


class BrokerShutdown(InMemoryError, BaseBrokerShutdown):
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


class TopicClosed(InMemoryError, BaseTopicClosed):
    """The topic was closed for writing (``close_topic``): a publish to it is refused, and a
    receive raises this once every message published before the close was delivered (and, for
    an acknowledging reader, settled). The broker itself goes on."""

    __module__ = _MODULE


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


class NotSubscribed(InMemoryError, BaseNotSubscribed):
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


class AckError(InMemoryError, BaseAckError):
    """An acknowledgement that cannot be applied (settled, unknown or foreign handle)."""

    __module__ = _MODULE
