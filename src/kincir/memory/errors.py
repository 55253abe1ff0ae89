"""Errors of the in-memory broker. Each carries its fields as attributes.

Defined once with the engine (``kincir_core._errors``), which raises them directly; these are the
very same classes.
"""

from __future__ import annotations

from kincir_core._errors import (
    AckError,
    BrokerShutdown,
    GroupNotFound,
    InMemoryError,
    InvalidConfig,
    InvalidTopicName,
    MaxSubscribersReached,
    MaxTopicsReached,
    NotSubscribed,
    QueueFull,
    TopicClosed,
    TopicNotFound,
)

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
    "TopicClosed",
    "TopicNotFound",
]
