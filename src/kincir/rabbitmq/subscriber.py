"""``RabbitMQSubscriber``: a queue per subscriber (or per group) bound to each topic's
exchange, consumed into the local buffer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .._remote import (
    CONTENT_TYPE_KEY,
    UUID_KEY,
    Delivered,
    RemoteSubscriber,
    decode_message,
)
from ._client import AbstractIncomingMessage, aio_pika, aiormq
from .broker import COUNT_HEADER, RabbitMQBroker

__all__ = ["RabbitMQSubscriber"]


def _decode(topic: str, incoming: AbstractIncomingMessage) -> Delivered:
    headers = dict(incoming.headers or {})
    before = headers.pop(COUNT_HEADER, 0)
    server = headers.pop("x-delivery-count", None)
    retries = int(server) if isinstance(server, int) else (1 if incoming.redelivered else 0)
    text = {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in headers.items()}
    if incoming.message_id and UUID_KEY not in text:
        text[UUID_KEY] = incoming.message_id
    if incoming.content_type and CONTENT_TYPE_KEY not in text:  # a producer that is not kincir
        text[CONTENT_TYPE_KEY] = incoming.content_type
    msg = decode_message(incoming.body, text, topic, None)
    count = (before if isinstance(before, int) else 0) + retries + 1
    return Delivered(msg, incoming, count)


class RabbitMQSubscriber(RemoteSubscriber[RabbitMQBroker]):
    """Reads RabbitMQ queues bound to the topics' exchanges (one per subscriber, or a group's)."""

    broker_type = RabbitMQBroker

    def _start(self) -> None:
        self._incoming: asyncio.Queue[tuple[str, AbstractIncomingMessage]] = asyncio.Queue()
        self._channel: Any = None
        self._queues: dict[str, tuple[Any, str]] = {}  # topic -> (queue, consumer tag)

    async def _subscribe(self, topic: str) -> None:
        broker = self.broker
        if self._channel is None:
            self._channel = await broker.channel(self.prefetch)
        if topic in self._queues:
            return  # the robust connection restores queues and consumers itself
        exchange = await self._channel.declare_exchange(
            broker.exchange_name(topic), aio_pika.ExchangeType.FANOUT, durable=True
        )
        if self.group is None:
            queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            queue = await self._channel.declare_queue(
                broker.group_queue(topic, self.group),
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )
        await queue.bind(exchange)

        async def deliver(incoming: AbstractIncomingMessage) -> None:
            self._incoming.put_nowait((topic, incoming))

        tag = await queue.consume(deliver, no_ack=not self._manual)
        self._queues[topic] = (queue, tag)

    async def _unsubscribe(self, topic: str) -> None:
        queue, tag = self._queues.pop(topic)
        await queue.cancel(tag)
        if self.group is None:
            with contextlib.suppress(Exception):
                await queue.delete(if_unused=False, if_empty=False)
        # what the consumer fetched for this topic and nobody took yet goes back
        kept: list[tuple[str, AbstractIncomingMessage]] = []
        dropped: list[tuple[str, AbstractIncomingMessage]] = []
        while not self._incoming.empty():
            item = self._incoming.get_nowait()
            (dropped if item[0] == topic else kept).append(item)
        for item in kept:
            self._incoming.put_nowait(item)
        if self._manual:
            for _, incoming in dropped:
                with contextlib.suppress(Exception):
                    await incoming.nack(requeue=True)
        if not self._queues and self._channel is not None:
            channel, self._channel = self._channel, None
            with contextlib.suppress(Exception):
                await channel.close()

    @property
    def _manual(self) -> bool:
        """Manual acks: an ack subscriber's, and a group member's (acked as it hands a message
        out, so the server hands each member only ``prefetch`` at a time and takes back what a
        closing member did not hand out). A lone subscriber's exclusive queue dies with it."""
        return self.acking or self.group is not None

    async def _ack(self, delivered: list[Delivered]) -> None:
        if self._manual:
            for d in delivered:
                await _settle_quietly(d.ref.ack())

    async def _release(self, delivered: list[Delivered]) -> None:
        if self._manual:
            for d in delivered:
                await _settle_quietly(d.ref.nack(requeue=True))

    async def _fetch(self, wait: float) -> list[Delivered]:
        if self._incoming.empty():
            self.broker.check_connected()
        try:
            first = await asyncio.wait_for(self._incoming.get(), wait)
        except TimeoutError:
            return []
        out = [_decode(*first)]
        while len(out) < self.prefetch and not self._incoming.empty():
            out.append(_decode(*self._incoming.get_nowait()))
        return out


async def _settle_quietly(call: Any) -> None:
    """Ack/nack a delivery; one from a channel that has since closed (a reconnect) is already
    back in its queue on the server: nothing to do."""
    try:
        await call
    except (aio_pika.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError):
        pass
