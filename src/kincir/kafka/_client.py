"""The client library, imported once (with the install hint when it is missing)."""

from __future__ import annotations

from .._backends import KAFKA

try:
    import aiokafka  # type: ignore[import-untyped]
    from aiokafka import errors as kafka_errors
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from aiokafka.protocol.admin import (  # type: ignore[import-untyped]
        DeleteGroupsRequest_v0,
    )
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(KAFKA.install_hint) from exc

__all__ = [
    "AIOKafkaAdminClient",
    "DeleteGroupsRequest_v0",
    "NewTopic",
    "TopicPartition",
    "aiokafka",
    "kafka_errors",
]
