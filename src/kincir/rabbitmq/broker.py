"""``RabbitMQBroker``: the robust connection, the exchanges, publishing (with confirms)
and the administration."""

from __future__ import annotations

import asyncio
from typing import Any, overload

from kincir_core import Message

from .._backends import RABBITMQ
from .._remote import (
    CONTENT_TYPE_KEY,
    P,
    RemoteBroker,
    encode_message,
    guarded,
)
from ..codecs import Codec
from ..errors import BackendError, ConnectionFailed, KincirError, Unsupported
from ._client import aio_pika, aiormq

__all__ = ["COUNT_HEADER", "RabbitMQBroker"]

#: The header carrying the number of deliveries a message had before this copy was published.
COUNT_HEADER = "kincir-delivery-count"


#: Why ``close_topic`` is refused: AMQP has no end of stream to mark.
NO_END_OF_STREAM = (
    "an exchange keeps no last message to record as the end, and a marker message would reach "
    "one member of a group only (its members share one queue, each message to one of them); "
    "the redis and memory backends keep an end of stream"
)
#: Why ``join_async`` is refused.
NO_JOIN = (
    "a queue counts the messages it holds, not which were published before a given moment, "
    "and plain subscribers' queues are private; the redis and memory backends can join"
)


class RabbitMQBroker(RemoteBroker[P]):
    """One robust AMQP connection; ``url`` as aio-pika takes it (``amqp://user:pw@host:5672/``).

    Options: ``codec`` (how payloads are encoded and decoded, default ``BytesCodec()``: see
    ``kincir.codecs``; publishers and subscribers may override it), ``prefix`` (exchange and
    queue name prefix, default ``"kincir."``),
    ``connect_timeout`` (seconds, default 5), ``reconnect_timeout`` (how long a receive keeps
    retrying a lost connection, default 30; the robust connection also reconnects by itself),
    ``operation_timeout`` (the longest one call to the server may take, default 30).
    """

    backend = "rabbitmq"

    @overload
    def __init__(
        self: RabbitMQBroker[bytes],
        url: str = ...,
        *,
        codec: None = None,
        prefix: str = ...,
        connect_timeout: float = ...,
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
        reconnect_timeout: float = ...,
        operation_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        url: str = RABBITMQ.default_url,
        *,
        codec: Codec[P] | None = None,
        prefix: str = "kincir.",
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url,
            codec=codec,
            reconnect_timeout=reconnect_timeout,
            operation_timeout=operation_timeout,
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

    async def _close_topic(self, topic: str) -> None:
        raise Unsupported(self.backend, f"close topic {topic!r} (end of stream)", NO_END_OF_STREAM)

    async def _join(self, topic: str) -> None:
        raise Unsupported(self.backend, f"join topic {topic!r}", NO_JOIN)

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
        # AMQP's own property too, for consumers that are not kincir
        content_type=headers.get(CONTENT_TYPE_KEY),
        message_id=msg.uuid,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
