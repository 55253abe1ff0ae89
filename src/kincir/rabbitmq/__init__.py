"""kincir over RabbitMQ (``pip install 'kincir[rabbitmq]'``, aio-pika).

A topic is a durable fanout exchange (``<prefix><topic>``); messages are published persistent,
with publisher confirms, their metadata as AMQP headers and their uuid as ``message_id``.

- ``RabbitMQSubscriber(broker)``: an exclusive, auto-deleted queue bound to the exchange when
  ``subscribe`` returns (fan-out: every subscriber sees every message published after it).
- ``group="g"``: the members share one durable quorum queue (``<prefix><n>:<topic>.<group>``,
  ``n`` the topic's length), which outlives them (it keeps collecting messages while the group
  has no member) until ``RabbitMQBroker.delete_group``.
- ``RabbitMQAckSubscriber``: manual acks with ``prefetch`` unacked messages per member
  (``basic.qos``); ``ack`` is ``basic.ack``. A nack or a missed ack deadline publishes the
  message again to the same queue (the default exchange, routed by queue name) with its delivery
  count in the ``kincir-delivery-count`` header, then acks the original: the count is exact, and
  the retry goes to the back of the queue. Messages of a member whose connection died are
  requeued by the server (``redelivered``), counted as one more delivery. Past
  ``max_deliveries``, kincir publishes the message to the dead-letter topic's exchange.

There are no per-topic sequence numbers in AMQP: ``Message.sequence`` is 0. A batch is published
message by message (each confirmed): a connection lost mid-batch may leave a prefix published.
The connection is aio-pika's robust connection: after a server restart it reconnects and
restores exchanges, queues, bindings and consumers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

try:
    import aio_pika
    import aiormq
    from aio_pika.abc import AbstractIncomingMessage
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("kincir.rabbitmq needs aio-pika: pip install 'kincir[rabbitmq]'") from exc

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
    "RabbitMQAckSubscriber",
    "RabbitMQBroker",
    "RabbitMQPublisher",
    "RabbitMQSubscriber",
]

AckHandle = RemoteAckHandle

#: The header carrying the number of deliveries a message had before this copy was published.
COUNT_HEADER = "kincir-delivery-count"


class RabbitMQBroker(RemoteBroker):
    """One robust AMQP connection; ``url`` as aio-pika takes it (``amqp://user:pw@host:5672/``).

    Options: ``prefix`` (exchange and queue name prefix, default ``"kincir."``),
    ``connect_timeout`` (seconds, default 5), ``reconnect_timeout`` (how long a receive keeps
    retrying a lost connection, default 30; the robust connection also reconnects by itself),
    ``operation_timeout`` (the longest one call to the server may take, default 30).
    """

    backend = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        prefix: str = "kincir.",
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url, reconnect_timeout=reconnect_timeout, operation_timeout=operation_timeout
        )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        self.prefix = prefix
        self.connect_timeout = float(connect_timeout)
        self.connection: Any = None
        self._channel: Any = None
        self._exchanges: dict[str, Any] = {}

    def exchange_name(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def group_queue(self, topic: str, group: str) -> str:
        # the topic's length makes the name unambiguous: ("a.b", "c") and ("a", "b.c") differ
        return f"{self.prefix}{len(topic)}:{topic}.{group}"

    def translate(self, exc: Exception) -> KincirError:
        if isinstance(
            exc,
            (
                OSError,
                ConnectionError,
                aiormq.exceptions.AMQPConnectionError,
                aio_pika.exceptions.ChannelInvalidStateError,
            ),
        ):
            return ConnectionFailed(self.backend, self.url, exc)
        return BackendError(self.backend, exc)

    async def _connect(self) -> None:
        try:
            self.connection = await aio_pika.connect_robust(self.url, timeout=self.connect_timeout)
        except aiormq.exceptions.AMQPConnectionError as exc:
            raise ConnectionFailed(self.backend, self.url, exc) from exc
        self._channel = await self.connection.channel(publisher_confirms=True)

    async def _close(self) -> None:
        self._exchanges.clear()
        await self.connection.close()

    async def _probe(self) -> None:
        self.check_connected()

    def check_connected(self) -> None:
        """Raise at once while the robust connection is down (its calls would wait for the
        reconnect instead)."""
        if not self.connection.connected.is_set():
            raise ConnectionError("the connection is lost; aio-pika is reconnecting")

    async def exchange(self, topic: str) -> Any:
        """The topic's exchange, declared (idempotently) on first use."""
        exchange = self._exchanges.get(topic)
        if exchange is None:
            exchange = await self._channel.declare_exchange(
                self.exchange_name(topic), aio_pika.ExchangeType.FANOUT, durable=True
            )
            self._exchanges[topic] = exchange
        return exchange

    async def channel(self, prefetch: int) -> Any:
        """A new channel (each subscriber has its own, for its own prefetch)."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def _publish(self, topic: str, messages: list[Message]) -> None:
        self.check_connected()
        exchange = await self.exchange(topic)
        await asyncio.gather(*(exchange.publish(_amqp(m), routing_key="") for m in messages))

    async def republish(self, queue: str, msg: Message, count: int) -> None:
        """Put a copy of ``msg`` back on ``queue`` alone, after ``count`` deliveries."""
        await self._channel.default_exchange.publish(_amqp(msg, count), routing_key=queue)

    # -- administration -------------------------------------------------------------------

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic's exchange (its group queues stay until ``delete_group``)."""
        await self.connect()
        self._exchanges.pop(topic, None)
        await guarded(self, self._channel.exchange_delete(self.exchange_name(topic)))

    async def delete_group(self, topic: str, group: str) -> None:
        """Delete a group's durable queue and what it holds."""
        await self.connect()
        await guarded(self, self._channel.queue_delete(self.group_queue(topic, group)))


def _amqp(msg: Message, count: int = 0) -> aio_pika.Message:
    payload, headers = encode_message(msg)
    wire: dict[str, Any] = dict(headers)
    if count:
        wire[COUNT_HEADER] = count
    return aio_pika.Message(
        payload,
        headers=wire,
        message_id=msg.uuid,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _decode(topic: str, incoming: AbstractIncomingMessage) -> Delivered:
    headers = dict(incoming.headers or {})
    before = headers.pop(COUNT_HEADER, 0)
    server = headers.pop("x-delivery-count", None)
    retries = int(server) if isinstance(server, int) else (1 if incoming.redelivered else 0)
    text = {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in headers.items()}
    if incoming.message_id and "kincir-uuid" not in text:
        text["kincir-uuid"] = incoming.message_id
    msg = decode_message(incoming.body, text, topic, None)
    count = (before if isinstance(before, int) else 0) + retries + 1
    return Delivered(msg, incoming, count)


class RabbitMQPublisher(RemotePublisher[RabbitMQBroker]):
    """Publishes to RabbitMQ exchanges; ``RabbitMQPublisher(broker)`` or ``(url)``."""

    broker_type = RabbitMQBroker


class RabbitMQSubscriber(RemoteSubscriber[RabbitMQBroker]):
    """Reads RabbitMQ queues bound to the topics' exchanges (one per subscriber, or a group's)."""

    broker_type = RabbitMQBroker

    def __init__(
        self,
        broker_or_url: RabbitMQBroker | str,
        group: str | None = None,
        *,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker_or_url, group, prefetch=prefetch)
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


async def _settle_quietly(call: Any) -> None:
    """Ack/nack a delivery; one from a channel that has since closed (a reconnect) is already
    back in its queue on the server: nothing to do."""
    try:
        await call
    except (aio_pika.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError):
        pass
