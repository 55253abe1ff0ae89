"""``RabbitMQAckSubscriber``: manual acks; a retry is republished with its delivery count."""

from __future__ import annotations

from typing import Any, overload

from .._remote import (
    Delivered,
    P,
    RemoteAckSubscriber,
)
from ..codecs import Codec
from .broker import RabbitMQBroker
from .subscriber import RabbitMQSubscriber, _settle_quietly

__all__ = ["RabbitMQAckSubscriber"]


class RabbitMQAckSubscriber(RemoteAckSubscriber[RabbitMQBroker[Any], P], RabbitMQSubscriber[P]):
    """Acknowledging reader of RabbitMQ queues (manual acks; see the module's rules)."""

    # The payload type follows the codec: the subscriber's own, else its broker's (bytes for a
    # private broker built from a URL).
    @overload
    def __init__(
        self,
        broker_or_url: RabbitMQBroker[P],
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
        self: RabbitMQAckSubscriber[bytes],
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
        broker_or_url: RabbitMQBroker[Any] | str,
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
        broker_or_url: RabbitMQBroker[Any] | str,
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

    def _queue_name(self, d: Delivered) -> str:
        incoming = d.ref
        queue, _ = self._queues.get(d.message.topic or "", (None, None))
        if queue is not None:
            return str(queue.name)
        return str(incoming.routing_key)

    async def _ack(self, delivered: list[Delivered]) -> None:
        for d in delivered:
            await _settle_quietly(d.ref.ack())

    async def _requeue(self, delivered: list[Delivered]) -> None:
        for d in delivered:
            topic = d.message.topic or ""
            if topic in self._queues:
                await self.broker.republish(self._queue_name(d), d.message, d.count)
                await _settle_quietly(d.ref.ack())
            else:  # no longer subscribed: the server requeues it for the others
                await _settle_quietly(d.ref.nack(requeue=True))

    async def _release(self, delivered: list[Delivered]) -> None:
        await self._requeue(delivered)
