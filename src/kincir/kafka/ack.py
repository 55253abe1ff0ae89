"""``KafkaAckSubscriber``: commits acked offsets; retries go through the group's retry topic."""

from __future__ import annotations

import contextlib
from typing import Any, overload

from kincir_core import Message

from .._remote import (
    Delivered,
    P,
    RemoteAckSubscriber,
)
from ..codecs import Codec
from ._client import (
    TopicPartition,
    kafka_errors,
)
from .broker import COUNT_HEADER, SEQUENCE_HEADER, KafkaBroker
from .subscriber import KafkaSubscriber

__all__ = ["KafkaAckSubscriber"]


class KafkaAckSubscriber(RemoteAckSubscriber[KafkaBroker[Any], P], KafkaSubscriber[P]):
    """Acknowledging Kafka reader: commits acked offsets; retries go to the group's retry
    topic (see the module's rules)."""

    # The payload type follows the codec: the subscriber's own, else its broker's (bytes for a
    # private broker built from a URL).
    @overload
    def __init__(
        self,
        broker_or_url: KafkaBroker[P],
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: None = None,
        prefetch: int = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: KafkaAckSubscriber[bytes],
        broker_or_url: str,
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: None = None,
        prefetch: int = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        broker_or_url: KafkaBroker[Any] | str,
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: Codec[P],
        prefetch: int = ...,
    ) -> None: ...
    def __init__(
        self,
        broker_or_url: KafkaBroker[Any] | str,
        group: str | None = None,
        *,
        ack_timeout: float = 30.0,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
        codec: Codec[Any] | None = None,
        prefetch: int = 1,
    ) -> None:
        super().__init__(
            broker_or_url,
            group,
            ack_timeout=ack_timeout,
            max_deliveries=max_deliveries,
            dead_letter_topic=dead_letter_topic,
            codec=codec,
            prefetch=prefetch,
        )

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
