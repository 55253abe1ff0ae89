"""``KafkaSubscriber``: assigned partitions alone, a consumer group otherwise."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any, overload

from .._remote import (
    Delivered,
    P,
    RemoteSubscriber,
    decode_message,
    guarded,
)
from ..codecs import Codec
from ._client import (
    TopicPartition,
    aiokafka,
)
from .broker import COUNT_HEADER, SEQUENCE_HEADER, TOPIC_HEADER, KafkaBroker

__all__ = ["KafkaSubscriber"]


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


class KafkaSubscriber(RemoteSubscriber[KafkaBroker[Any], P]):
    """Reads Kafka topics: alone (assigned partitions, fan-out) or in a consumer group."""

    broker_type = KafkaBroker

    # The payload type follows the codec: the subscriber's own, else its broker's (bytes for a
    # private broker built from a URL).
    @overload
    def __init__(
        self,
        broker_or_url: KafkaBroker[P],
        group: str | None = None,
        *,
        codec: None = None,
        prefetch: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: KafkaSubscriber[bytes],
        broker_or_url: str,
        group: str | None = None,
        *,
        codec: None = None,
        prefetch: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self,
        broker_or_url: KafkaBroker[Any] | str,
        group: str | None = None,
        *,
        codec: Codec[P],
        prefetch: int | None = None,
    ) -> None: ...
    def __init__(
        self,
        broker_or_url: KafkaBroker[Any] | str,
        group: str | None = None,
        *,
        codec: Codec[Any] | None = None,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker_or_url, group, codec=codec, prefetch=prefetch)

    def _start(self) -> None:
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
