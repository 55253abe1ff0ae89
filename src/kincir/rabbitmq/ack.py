"""``RabbitMQAckSubscriber``: manual acks; a retry is republished with its delivery count."""

from __future__ import annotations

from .._remote import (
    Delivered,
    RemoteAckSubscriber,
)
from .broker import RabbitMQBroker
from .subscriber import RabbitMQSubscriber, _settle_quietly

__all__ = ["RabbitMQAckSubscriber"]


class RabbitMQAckSubscriber(RemoteAckSubscriber[RabbitMQBroker], RabbitMQSubscriber):
    """Acknowledging reader of RabbitMQ queues (manual acks; see the module's rules)."""

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
