"""``KafkaBroker``: the producer and admin client, topic names, topic and group
administration."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any, overload

from kincir_core import Message

from .._backends import KAFKA
from .._remote import (
    P,
    RemoteBroker,
    encode_message,
    guarded,
)
from ..codecs import Codec
from ..errors import BackendError, ConnectionFailed, KincirError, Unsupported
from ._client import (
    AIOKafkaAdminClient,
    DeleteGroupsRequest_v0,
    NewTopic,
    aiokafka,
    kafka_errors,
)

__all__ = ["COUNT_HEADER", "SEQUENCE_HEADER", "TOPIC_HEADER", "KafkaBroker"]

COUNT_HEADER = "kincir-delivery-count"
SEQUENCE_HEADER = "kincir-sequence"
TOPIC_HEADER = "kincir-topic"
_GROUP_ID_NOT_FOUND = 69  # Kafka's error codes
_TOPIC_ALREADY_EXISTS = 36
_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


def _escape(name: str) -> str:
    """A kincir name in Kafka topic characters: letters, digits and ``-`` stay, every other
    character becomes ``_xx`` (hex of its UTF-8 bytes). No escaped name contains ``.``, so the
    dots that join a prefix, a group and a topic cannot be confused with a name's own."""
    return _UNSAFE.sub(lambda m: "".join(f"_{b:02x}" for b in m.group().encode()), name)


#: Why ``close_topic`` is refused: refusing later produces needs a check that is atomic with
#: them, which Kafka has only through transactions kincir does not use.
NO_END_OF_STREAM = (
    "Kafka cannot refuse a produce to an open topic atomically with recording its end (only a "
    "transactional fence could), and a marker record is read by the one group member that "
    "holds the partition, with the retry topics past it; the redis and memory backends keep "
    "an end of stream"
)
#: Why ``join_async`` is refused.
NO_JOIN = (
    "plain subscribers commit no offsets, and an acknowledging group's retry topics hold "
    "messages beyond the committed ones; the redis and memory backends can join"
)


class KafkaBroker(RemoteBroker[P]):
    """A producer and an admin client for one Kafka cluster; ``url`` is its bootstrap servers
    (``"host:port[,host:port...]"``, an optional ``kafka://`` scheme is dropped).

    Options: ``codec`` (how payloads are encoded and decoded, default ``BytesCodec()``: see
    ``kincir.codecs``; publishers and subscribers may override it), ``prefix`` (topic and
    group name prefix, default ``"kincir."``),
    ``connect_timeout`` (seconds, default 5), ``session_timeout`` (a group member's session,
    seconds, default 10: a member that stops heartbeating is replaced after it),
    ``replication_factor`` of created topics (default 1), ``reconnect_timeout`` (how long a
    receive keeps retrying a lost connection, default 30), ``operation_timeout`` (the longest
    one call to the server may take, default 30).
    """

    backend = "kafka"

    @overload
    def __init__(
        self: KafkaBroker[bytes],
        url: str = ...,
        *,
        codec: None = None,
        prefix: str = ...,
        connect_timeout: float = ...,
        session_timeout: float = ...,
        replication_factor: int = ...,
        reconnect_timeout: float = ...,
        operation_timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        url: str = ...,
        *,
        codec: Codec[P],
        prefix: str = ...,
        connect_timeout: float = ...,
        session_timeout: float = ...,
        replication_factor: int = ...,
        reconnect_timeout: float = ...,
        operation_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        url: str = KAFKA.default_url,
        *,
        codec: Codec[P] | None = None,
        prefix: str = "kincir.",
        connect_timeout: float = 5.0,
        session_timeout: float = 10.0,
        replication_factor: int = 1,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url,
            codec=codec,
            reconnect_timeout=reconnect_timeout,
            operation_timeout=operation_timeout,
        )
        if not isinstance(prefix, str) or re.search(r"[^A-Za-z0-9._-]", prefix):
            raise ValueError(f"prefix must use the characters [A-Za-z0-9._-], got {prefix!r}")
        self.prefix = prefix
        self.bootstrap = url.removeprefix("kafka://")
        self.connect_timeout = float(connect_timeout)
        self.replication_factor = replication_factor
        if not (isinstance(session_timeout, (int, float)) and session_timeout >= 1):
            raise ValueError(f"session_timeout must be >= 1 second, got {session_timeout!r}")
        self.session_timeout = float(session_timeout)
        self.producer: Any = None
        self.admin: Any = None
        self._created: set[str] = set()

    def kafka_topic(self, topic: str) -> str:
        return f"{self.prefix}{_escape(topic)}"

    def retry_topic(self, group: str, topic: str) -> str:
        return f"{self.prefix}retry.{_escape(group)}.{_escape(topic)}"

    def group_id(self, group: str) -> str:
        return f"{self.prefix}{group}"

    def translate(self, exc: Exception) -> KincirError:
        if isinstance(
            exc,
            (OSError, kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError),
        ):
            return ConnectionFailed(self.backend, self.bootstrap, exc)
        return BackendError(self.backend, exc)

    def client_options(self) -> dict[str, Any]:
        ms = int(self.connect_timeout * 1000)
        return {"bootstrap_servers": self.bootstrap, "request_timeout_ms": max(ms, 1000)}

    def group_options(self) -> dict[str, Any]:
        session = int(self.session_timeout * 1000)
        return {
            # a join may take the whole rebalance: requests must outlive it
            "request_timeout_ms": max(session + 5000, int(self.connect_timeout * 1000)),
            "session_timeout_ms": session,
            "heartbeat_interval_ms": max(100, session // 4),
            "rebalance_timeout_ms": session,
        }

    async def _connect(self) -> None:
        producer = aiokafka.AIOKafkaProducer(acks="all", **self.client_options())
        admin = AIOKafkaAdminClient(**self.client_options())
        try:
            await asyncio.wait_for(producer.start(), self.connect_timeout)
            await asyncio.wait_for(admin.start(), self.connect_timeout)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise ConnectionFailed(self.backend, self.bootstrap, exc or "timed out") from exc
        self.producer, self.admin = producer, admin

    async def _close(self) -> None:
        try:
            await self.producer.stop()
        finally:
            await self.admin.close()

    async def _probe(self) -> None:
        await self.admin.describe_cluster()

    async def ensure_topic(self, name: str) -> None:
        """Create the Kafka topic ``name`` (one partition) unless it exists."""
        if name in self._created:
            return
        response = await self.admin.create_topics(
            [NewTopic(name, num_partitions=1, replication_factor=self.replication_factor)]
        )
        for result in response.topic_errors:  # the request answers per topic, never raises
            code = result[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                detail = result[2] if len(result) > 2 and result[2] else f"error code {code}"
                raise kafka_errors.for_code(code)(f"creating topic {name!r}: {detail}")
        self._created.add(name)

    async def _publish(self, topic: str, messages: list[Message]) -> None:
        await self.send(self.kafka_topic(topic), [(m, None) for m in messages])

    async def _close_topic(self, topic: str) -> None:
        raise Unsupported(self.backend, f"close topic {topic!r} (end of stream)", NO_END_OF_STREAM)

    async def _join(self, topic: str) -> None:
        raise Unsupported(self.backend, f"join topic {topic!r}", NO_JOIN)

    async def send(
        self, name: str, records: Sequence[tuple[Message, list[tuple[str, bytes]] | None]]
    ) -> None:
        """Append ``records`` (a message and extra headers) to the Kafka topic ``name``."""
        await self.ensure_topic(name)
        pending = []
        for msg, extra in records:
            payload, headers = encode_message(msg)
            wire = [(k, v.encode()) for k, v in headers.items()]
            if extra:
                wire.extend(extra)
            pending.append(await self.producer.send(name, payload, headers=wire))
        await asyncio.gather(*pending)

    # -- administration -------------------------------------------------------------------

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic (retry topics of its groups stay)."""
        await self.connect()
        name = self.kafka_topic(topic)
        self._created.discard(name)
        await guarded(self, self.admin.delete_topics([name]))

    async def delete_group(self, topic: str, group: str) -> None:
        """Delete a consumer group: its retry topic for ``topic``, and the Kafka group itself
        with its committed offsets (a Kafka group spans topics: this ends it on every topic).
        The group must have no member left."""
        await self.connect()
        retry = self.retry_topic(group, topic)
        self._created.discard(retry)
        with contextlib.suppress(BackendError):  # no retry topic: nothing was ever retried
            await guarded(self, self.admin.delete_topics([retry]))
        await guarded(self, self.delete_kafka_group(self.group_id(group)))

    async def delete_kafka_group(self, group_id: str) -> None:
        """Delete the Kafka consumer group ``group_id`` (DeleteGroups, which aiokafka's admin
        client does not wrap); a group that does not exist is not an error."""
        coordinator = await self.admin.find_coordinator(group_id)
        response = await self.admin._send_request_to_node(
            coordinator, DeleteGroupsRequest_v0([group_id])
        )
        for _, code in response.results:
            if code not in (0, _GROUP_ID_NOT_FOUND):
                raise kafka_errors.for_code(code)(f"deleting consumer group {group_id!r}")
