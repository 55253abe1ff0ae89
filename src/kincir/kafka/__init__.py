"""kincir over Kafka (``pip install 'kincir[kafka]'``, aiokafka).

A topic is a Kafka topic of one partition (``<prefix><topic>``, created on first use): one
partition keeps the topic's order, and ``Message.sequence`` is the offset + 1, gapless as long as
only kincir writes the topic (no transactions or compaction). Metadata and uuid travel as record
headers.

- ``KafkaSubscriber(broker)``: no consumer group; the partition is assigned directly and read
  from its end at ``subscribe`` time (fan-out).
- ``group="g"``: a Kafka consumer group ``<prefix><group>``. The first ``subscribe`` of a new
  group commits the topic's end offset for it, so the group starts with the messages published
  after that. One partition means one member of a group reads a topic at a time; the others
  take over when it leaves (each message still goes to exactly one member).
- ``KafkaAckSubscriber``: auto-commit off; ``ack`` marks an offset done and commits the lowest
  offset not yet acked. A nack, a missed ack deadline or a closing member publishes the message
  to the group's retry topic (``<prefix>retry.<group>.<topic>``, read by the group's members
  only) with its delivery count in the ``kincir-delivery-count`` header, then marks the original
  done. Messages a crashed member had in flight come back from the committed offset, but Kafka
  does not count those deliveries.

A batch is published record by record (not a Kafka transaction): a connection lost mid-batch
may leave a prefix published.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import re
from collections.abc import Sequence
from typing import Any

try:
    import aiokafka  # type: ignore[import-untyped]
    from aiokafka import errors as kafka_errors
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from aiokafka.protocol.admin import (  # type: ignore[import-untyped]
        DeleteGroupsRequest_v0,
    )
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("kincir.kafka needs aiokafka: pip install 'kincir[kafka]'") from exc

from kincir_core import Message

from .._remote import (
    Delivered,
    RemoteAckHandle,
    RemoteAckSubscriber,
    RemoteBroker,
    RemotePublisher,
    RemoteSubscriber,
    decode_message,
    encode_message,
    guarded,
)
from ..errors import BackendError, ConnectionFailed, KincirError

__all__ = [
    "KafkaAckSubscriber",
    "KafkaBroker",
    "KafkaPublisher",
    "KafkaSubscriber",
]

AckHandle = RemoteAckHandle

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


class KafkaBroker(RemoteBroker):
    """A producer and an admin client for one Kafka cluster; ``url`` is its bootstrap servers
    (``"host:port[,host:port...]"``, an optional ``kafka://`` scheme is dropped).

    Options: ``prefix`` (topic and group name prefix, default ``"kincir."``),
    ``connect_timeout`` (seconds, default 5), ``session_timeout`` (a group member's session,
    seconds, default 10: a member that stops heartbeating is replaced after it),
    ``replication_factor`` of created topics (default 1), ``reconnect_timeout`` (how long a
    receive keeps retrying a lost connection, default 30), ``operation_timeout`` (the longest
    one call to the server may take, default 30).
    """

    backend = "kafka"

    def __init__(
        self,
        url: str = "127.0.0.1:9092",
        *,
        prefix: str = "kincir.",
        connect_timeout: float = 5.0,
        session_timeout: float = 10.0,
        replication_factor: int = 1,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url, reconnect_timeout=reconnect_timeout, operation_timeout=operation_timeout
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


def _decode(topic: str, record: Any) -> Delivered:
    headers: dict[str, str] = {}
    for key, value in record.headers or ():
        headers[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    before = headers.pop(COUNT_HEADER, "0")
    sequence = headers.pop(SEQUENCE_HEADER, None)
    headers.pop(TOPIC_HEADER, None)
    seq = int(sequence) if sequence is not None else record.offset + 1
    msg = decode_message(record.value or b"", headers, topic, seq)
    return Delivered(msg, record, int(before) + 1 if before.isdigit() else 1)


class KafkaPublisher(RemotePublisher[KafkaBroker]):
    """Publishes to Kafka topics; ``KafkaPublisher(broker)`` or ``KafkaPublisher(url)``."""

    broker_type = KafkaBroker


class KafkaSubscriber(RemoteSubscriber[KafkaBroker]):
    """Reads Kafka topics: alone (assigned partitions, fan-out) or in a consumer group."""

    broker_type = KafkaBroker

    def __init__(
        self,
        broker_or_url: KafkaBroker | str,
        group: str | None = None,
        *,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker_or_url, group, prefetch=prefetch)
        self._consumer: Any = None
        self._names: dict[str, str] = {}  # Kafka topic -> kincir topic

    def _group_id(self) -> str | None:
        return None if self.group is None else self.broker.group_id(self.group)

    async def _consumer_for(self) -> Any:
        if self._consumer is None:
            consumer = aiokafka.AIOKafkaConsumer(
                group_id=self._group_id(),
                enable_auto_commit=self._group_id() is not None and not self.acking,
                auto_offset_reset="earliest",
                max_poll_records=self.prefetch,
                fetch_max_wait_ms=100,
                **{
                    **self.broker.client_options(),
                    **(self.broker.group_options() if self._group_id() is not None else {}),
                },
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    def _kafka_topics(self, topic: str) -> list[str]:
        return [self.broker.kafka_topic(topic)]

    async def _subscribe(self, topic: str) -> None:
        broker = self.broker
        names = self._kafka_topics(topic)
        for name in names:
            await broker.ensure_topic(name)
            self._names[name] = topic
        consumer = await self._consumer_for()
        group = self._group_id()
        if group is None:
            await self._assign(consumer, names)
        else:
            for name in names:
                await self._start_group_at_end(group, name)
            consumer.subscribe(topics=sorted(self._names))

    async def _assign(self, consumer: Any, new: list[str]) -> None:
        """Assign the partitions of every subscribed topic, keeping the positions of those
        already read; new ones start at their end."""
        kept = {}
        for tp in consumer.assignment():
            if tp.topic in self._names:
                kept[tp] = await consumer.position(tp)
        consumer.assign([TopicPartition(name, 0) for name in self._names])
        for tp, offset in kept.items():
            consumer.seek(tp, offset)
        fresh = [TopicPartition(name, 0) for name in new if TopicPartition(name, 0) not in kept]
        if fresh:
            await consumer.seek_to_end(*fresh)
            for tp in fresh:
                await consumer.position(tp)  # fixes the position now, not at the first fetch

    async def _start_group_at_end(self, group: str, name: str) -> None:
        """A group new to ``name`` starts at its current end (commit that offset for it)."""
        tp = TopicPartition(name, 0)
        probe = aiokafka.AIOKafkaConsumer(
            group_id=group, enable_auto_commit=False, **self.broker.client_options()
        )
        await probe.start()
        try:
            probe.assign([tp])
            if await probe.committed(tp) is None:
                end = (await probe.end_offsets([tp]))[tp]
                await probe.commit({tp: end})
        finally:
            await probe.stop()

    async def _unsubscribe(self, topic: str) -> None:
        for name in self._kafka_topics(topic):
            self._names.pop(name, None)
        consumer = self._consumer
        if consumer is None:
            return
        if not self._names:
            self._consumer = None
            await self._stop(consumer)
        elif self._group_id() is None:
            await self._assign(consumer, [])
        else:
            consumer.subscribe(topics=sorted(self._names))

    async def _stop(self, consumer: Any) -> None:
        await consumer.stop()

    async def _detach(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._stop(consumer)

    async def close(self) -> None:
        """Stop the consumer, then forget the subscriptions (and close an owned broker)."""
        # Stopping first, not after unsubscribing topic by topic: aiokafka's fetcher swallows the
        # cancellation of stop() while it waits out a fetch after an assignment change, and then
        # runs on until the server answers (30 s on Tansu).
        if self.acking and self._buffer and not self.broker.is_shutdown():
            # fetched, never handed out: back to the group
            fetched = [d for d in self._buffer if not d.settled]
            self._buffer.clear()
            await guarded(self.broker, self._release(fetched))
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._stop(consumer)
        await super().close()

    async def _fetch(self, wait: float) -> list[Delivered]:
        consumer = self._consumer
        if consumer is None:
            await asyncio.sleep(wait)
            return []
        batches = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)))
        streams = []
        for tp, records in batches.items():
            topic = self._names.get(tp.topic)
            if topic is not None:
                streams.append([_decode(topic, r) for r in records])
        # interleave the partitions by time, never reordering one partition's records
        return list(heapq.merge(*streams, key=lambda d: d.ref.timestamp))


class KafkaAckSubscriber(RemoteAckSubscriber[KafkaBroker], KafkaSubscriber):
    """Acknowledging Kafka reader: commits acked offsets; retries go to the group's retry
    topic (see the module's rules)."""

    def _start_acking(self) -> None:
        # per partition: offsets handed out and not yet acked, and those acked above the lowest
        self._open: dict[TopicPartition, set[int]] = {}
        self._done: dict[TopicPartition, set[int]] = {}

    def _group_id(self) -> str:
        return self.broker.group_id(self.group_name)

    def _kafka_topics(self, topic: str) -> list[str]:
        return [self.broker.kafka_topic(topic), self.broker.retry_topic(self.group_name, topic)]

    async def _fetch(self, wait: float) -> list[Delivered]:
        out = await KafkaSubscriber._fetch(self, wait)
        for d in out:
            record = d.ref
            self._open.setdefault(TopicPartition(record.topic, record.partition), set()).add(
                record.offset
            )
        return out

    async def _ack(self, delivered: list[Delivered]) -> None:
        commits = {}
        for d in delivered:
            record = d.ref
            tp = TopicPartition(record.topic, record.partition)
            open_ = self._open.get(tp)
            if open_ is None or record.offset not in open_:
                continue  # from before a rebalance: the partition's new owner has it
            open_.discard(record.offset)
            done = self._done.setdefault(tp, set())
            done.add(record.offset)
            low = min(open_) if open_ else max(done) + 1
            done.difference_update({o for o in done if o < low})
            commits[tp] = low
        consumer = self._consumer
        if commits and consumer is not None:
            # after a rebalance the partition may be another member's: it redelivers from the
            # last commit (at-least-once)
            with contextlib.suppress(
                kafka_errors.CommitFailedError, kafka_errors.IllegalStateError
            ):
                await consumer.commit(commits)

    async def _requeue(self, delivered: list[Delivered]) -> None:
        by_topic: dict[str, list[tuple[Message, list[tuple[str, bytes]]]]] = {}
        for d in delivered:
            msg = d.message
            extra = [
                (COUNT_HEADER, str(d.count).encode()),
                (SEQUENCE_HEADER, str(msg.sequence).encode()),
            ]
            name = self.broker.retry_topic(self.group_name, msg.topic or "")
            by_topic.setdefault(name, []).append((msg, extra))
        for name, records in by_topic.items():
            await self.broker.send(name, records)
        await self._ack(delivered)

    async def _release(self, delivered: list[Delivered]) -> None:
        await self._requeue(delivered)

    async def _stop(self, consumer: Any) -> None:
        self._open.clear()
        self._done.clear()
        await KafkaSubscriber._stop(self, consumer)
        if self._private is not None:
            with contextlib.suppress(Exception):  # the group outlives us only as clutter
                await self.broker.delete_kafka_group(self._group_id())
            retries = [self.broker.retry_topic(self.group_name, t) for t in self._topics]
            if retries:
                with contextlib.suppress(Exception):
                    await self.broker.admin.delete_topics(retries)
