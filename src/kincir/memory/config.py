"""``InMemoryConfig``: a frozen configuration with the seed's builder and profiles."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import kincir_core

from .errors import InvalidConfig

if TYPE_CHECKING:
    from ..codecs import Codec

__all__ = ["OVERFLOW_POLICIES", "InMemoryConfig", "Overflow", "check_overflow", "check_queue_size"]

Overflow = Literal["error", "block", "drop_oldest", "drop_newest"]
#: What a publish to a full topic can do: raise QueueFull, wait for room, drop the oldest held
#: messages, or drop the new ones.
OVERFLOW_POLICIES: tuple[str, ...] = kincir_core.OVERFLOW_POLICIES


#: The largest finite limit (the engine stores limits as signed 64-bit counts).
MAX_LIMIT = 2**62


def _limit(field: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{field} must be int or None, not {type(value).__name__}")
    if value < 1:
        raise InvalidConfig(field, value, "must be >= 1, or None for no limit")
    if value > MAX_LIMIT:
        raise InvalidConfig(field, value, f"must be <= {MAX_LIMIT}, or None for no limit")
    return int(value)


def _seconds(field: str, value: Any, *, optional: bool) -> float | None:
    if value is None:
        if optional:
            return None
        raise TypeError(f"{field} must be a number of seconds or a timedelta, not None")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(
            f"{field} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidConfig(field, seconds, "must be a finite number of seconds > 0")
    return seconds


def check_overflow(policy: Any) -> str:
    """Return ``policy`` if it names an overflow policy, else raise TypeError/InvalidConfig."""
    if type(policy) is not str:
        raise TypeError(f"overflow must be str, not {type(policy).__name__}")
    if policy not in OVERFLOW_POLICIES:
        raise InvalidConfig("overflow", policy, f"must be one of {', '.join(OVERFLOW_POLICIES)}")
    return policy


def check_queue_size(value: Any) -> int | None:
    """Return a valid ``max_queue_size`` (None = unbounded), else raise."""
    return _limit("max_queue_size", value)


def _check_codec(codec: Any) -> None:
    if codec is None:
        return
    if not (
        callable(getattr(codec, "encode", None))
        and callable(getattr(codec, "decode", None))
        and isinstance(getattr(codec, "content_type", None), str)
    ):
        raise TypeError(
            "codec must be a kincir.codecs codec (encode, decode and a str content_type), "
            f"not {type(codec).__name__}"
        )


def _flag(field: str, value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"{field} must be bool, not {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class InMemoryConfig:
    """Settings of an ``InMemoryBroker``; frozen, every ``with_*`` returns a new config.

    Durations are seconds (int or float) or ``datetime.timedelta``; they are stored as float
    seconds. ``None`` means "no limit" for the limits and "never" for the TTL.
    """

    #: Most messages a topic holds (published, not yet read by every reader); None = no bound.
    max_queue_size: int | None = None
    #: Most topics the broker holds at once; None = no bound.
    max_topics: int | None = None
    #: Hold messages for a topic with no reader (and a last reader's unread ones).
    enable_persistence: bool = True
    #: Add the ``_sequence`` metadata key to delivered messages.
    maintain_order: bool = True
    #: Make ``stats()`` return snapshots (None when off).
    enable_stats: bool = False
    #: Age after which a message is never delivered; None = messages never expire.
    default_message_ttl: float | None = None
    #: How often the TTL cleanup pass reclaims expired messages, in seconds.
    cleanup_interval: float = 60.0
    #: Most subscribers a topic may have at once; None = no bound.
    max_subscribers_per_topic: int | None = None
    #: What a publish to a full topic does: "error" raises QueueFull (nothing of the batch is
    #: published), "block" waits for room, "drop_oldest" drops the oldest held messages (readers
    #: behind lose them: lagged), "drop_newest" drops the new ones. Per topic: configure_topic.
    overflow: Overflow = "error"
    #: Wire fidelity for tests: a ``kincir.codecs`` codec that every publish runs its payloads
    #: through (encode, then decode), so an in-memory test suite meets an unencodable payload,
    #: or one that does not decode as it was sent, before the code moves to a network backend.
    #: None (the default): payloads are shared by reference, never serialized.
    codec: Codec[Any] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_queue_size", _limit("max_queue_size", self.max_queue_size))
        set_(self, "max_topics", _limit("max_topics", self.max_topics))
        set_(
            self,
            "max_subscribers_per_topic",
            _limit("max_subscribers_per_topic", self.max_subscribers_per_topic),
        )
        set_(self, "enable_persistence", _flag("enable_persistence", self.enable_persistence))
        set_(self, "maintain_order", _flag("maintain_order", self.maintain_order))
        set_(self, "enable_stats", _flag("enable_stats", self.enable_stats))
        set_(
            self,
            "default_message_ttl",
            _seconds("default_message_ttl", self.default_message_ttl, optional=True),
        )
        set_(
            self,
            "cleanup_interval",
            _seconds("cleanup_interval", self.cleanup_interval, optional=False),
        )
        check_overflow(self.overflow)
        _check_codec(self.codec)

    # -- profiles -------------------------------------------------------------------------------

    @classmethod
    def new(cls) -> InMemoryConfig:
        """The default configuration (the seed's ``InMemoryConfig::new()``)."""
        return cls()

    @classmethod
    def default(cls) -> InMemoryConfig:
        """The default configuration: no limits, persistence and ordering on, stats off."""
        return cls()

    @classmethod
    def for_testing(cls) -> InMemoryConfig:
        """Small limits that surface mistakes early, with stats on."""
        return cls(
            max_queue_size=100, max_topics=10, max_subscribers_per_topic=5, enable_stats=True
        )

    @classmethod
    def high_performance(cls) -> InMemoryConfig:
        """No limits, no ordering metadata, no stats: the least work per message."""
        return cls(maintain_order=False, enable_stats=False, cleanup_interval=300.0)

    @classmethod
    def for_high_performance(cls) -> InMemoryConfig:
        """Alias of ``high_performance()`` (the seed's name)."""
        return cls.high_performance()

    # -- builder --------------------------------------------------------------------------------

    def _with(self, **changes: Any) -> InMemoryConfig:
        return dataclasses.replace(self, **changes)

    def with_max_queue_size(self, size: int | None) -> InMemoryConfig:
        """Bound what a topic holds (None = unbounded)."""
        return self._with(max_queue_size=size)

    def with_max_topics(self, limit: int | None) -> InMemoryConfig:
        """Bound the number of topics (None = unbounded)."""
        return self._with(max_topics=limit)

    def with_stats(self, enabled: bool) -> InMemoryConfig:
        """Turn statistics snapshots on or off."""
        return self._with(enable_stats=enabled)

    def with_maintain_order(self, enabled: bool) -> InMemoryConfig:
        """Turn the ``_sequence`` metadata key on or off."""
        return self._with(maintain_order=enabled)

    def with_ordering(self, enabled: bool) -> InMemoryConfig:
        """Alias of ``with_maintain_order`` (the seed's other name)."""
        return self.with_maintain_order(enabled)

    def with_message_ttl(self, ttl: float | timedelta | None) -> InMemoryConfig:
        """Set the message time-to-live (None = messages never expire)."""
        return self._with(default_message_ttl=ttl)

    def with_cleanup_interval(self, interval: float | timedelta) -> InMemoryConfig:
        """Set how often expired messages are reclaimed."""
        return self._with(cleanup_interval=interval)

    def with_persistence(self, enabled: bool) -> InMemoryConfig:
        """Hold (True) or drop (False) messages published while a topic has no reader."""
        return self._with(enable_persistence=enabled)

    def with_max_subscribers_per_topic(self, limit: int | None) -> InMemoryConfig:
        """Bound the subscribers per topic (None = unbounded)."""
        return self._with(max_subscribers_per_topic=limit)

    def with_overflow(self, policy: Overflow) -> InMemoryConfig:
        """Choose what a publish to a full topic does."""
        return self._with(overflow=policy)

    def with_codec(self, codec: Codec[Any] | None) -> InMemoryConfig:
        """Run every published payload through ``codec`` (wire fidelity; None: off)."""
        return self._with(codec=codec)


InMemoryConfig.__module__ = "kincir.memory"
