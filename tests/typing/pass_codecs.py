"""Codecs: the payload type follows the codec, from the codec to the messages a subscriber
hands out, with no casts."""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import msgspec

from kincir import DecodeError, EncodeError, Message
from kincir.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    MsgspecCodec,
    PickleCodec,
)
from kincir.kafka import KafkaAckSubscriber, KafkaBroker, KafkaSubscriber
from kincir.rabbitmq import RabbitMQBroker, RabbitMQSubscriber
from kincir.redis import RedisAckSubscriber, RedisBroker, RedisPublisher, RedisSubscriber


class Order(msgspec.Struct):
    id: int
    item: str


class Upper:
    """A codec of one's own: any object with the three members is one."""

    content_type = "text/plain"

    def encode(self, obj: str, /) -> bytes:
        return obj.upper().encode()

    def decode(self, data: bytes, /) -> str:
        return data.decode()


def total(orders: list[Order]) -> int:
    return sum(order.id for order in orders)


async def consume(orders: RedisSubscriber[Order], raw: RedisSubscriber[bytes]) -> int:
    message = await orders.receive(timeout=1.0)
    assert_type(message, Message[Order])
    assert_type(message.payload, Order)
    batch = await orders.receive_batch(10, timeout=1.0)
    assert_type(batch, list[Message[Order]])
    data = (await raw.receive(timeout=1.0)).payload
    assert_type(data, bytes)
    async for each in orders:
        assert_type(each.payload, Order)
    try:
        await orders.receive(timeout=1.0)
    except DecodeError as error:
        assert_type(error.message, Message[bytes])
        assert_type(error.message.payload, bytes)
        assert_type(error.content_type, str | None)
        assert_type(error.expected, str)
        assert_type(error.reason, str)
    return message.payload.id + total([m.payload for m in batch]) + len(data)


async def work(jobs: RedisAckSubscriber[dict[str, int]]) -> int:
    message, handle = await jobs.receive_with_ack(timeout=1.0)
    assert_type(message.payload, dict[str, int])
    await jobs.ack(handle)
    return message.payload["n"]


def main() -> None:
    order_codec = MsgspecCodec(Order)
    assert_type(order_codec, MsgspecCodec[Order])
    assert_type(order_codec.decode(order_codec.encode(Order(1, "book"))), Order)
    assert isinstance(order_codec, Codec)
    codecs: list[Codec[Any]] = [
        BytesCodec(),
        JsonCodec(),
        PickleCodec(),
        MsgpackCodec(),
        MsgspecCodec(Order, format="msgpack"),
        Upper(),
    ]
    for codec in codecs:
        assert isinstance(codec.content_type, str)
    raw_codec: Codec[bytes] = BytesCodec()
    typed_codec: Codec[Order] = order_codec
    text_codec: Codec[str] = Upper()
    assert raw_codec.content_type != typed_codec.content_type != text_codec.content_type
    assert_type(BytesCodec().decode(b"x"), bytes)
    assert_type(Upper().decode(b"x"), str)
    try:
        JsonCodec().encode({1, 2})
    except EncodeError as error:
        assert_type(error.content_type, str)
        assert_type(error.payload_type, str)

    # no connection is made until a call needs one
    plain = RedisBroker("redis://127.0.0.1:6379/0")
    assert_type(plain, RedisBroker[bytes])
    assert_type(RedisSubscriber(plain), RedisSubscriber[bytes])
    assert_type(RedisSubscriber("redis://127.0.0.1:6379/0"), RedisSubscriber[bytes])
    orders = RedisSubscriber(plain, codec=order_codec)
    assert_type(orders, RedisSubscriber[Order])
    as_json = RedisBroker("redis://127.0.0.1:6379/0", codec=JsonCodec())
    assert_type(RedisSubscriber(as_json, "group"), RedisSubscriber[Any])
    assert_type(
        RedisAckSubscriber(plain, "workers", dead_letter_topic="dead", codec=Upper()),
        RedisAckSubscriber[str],
    )
    typed = RedisBroker("redis://127.0.0.1:6379/0", codec=order_codec)
    assert_type(typed, RedisBroker[Order])
    assert_type(RedisAckSubscriber(typed), RedisAckSubscriber[Order])
    assert_type(RedisPublisher(plain, codec=JsonCodec()).codec, Codec[Any])
    kafka = KafkaBroker("127.0.0.1:9092", codec=order_codec)
    assert_type(KafkaSubscriber(kafka), KafkaSubscriber[Order])
    assert_type(KafkaAckSubscriber(kafka, "g", codec=Upper()), KafkaAckSubscriber[str])
    assert_type(
        RabbitMQSubscriber(RabbitMQBroker(), codec=MsgspecCodec(list[Order])),
        RabbitMQSubscriber[list[Order]],
    )
    asyncio.run(typed.shutdown())  # closing a broker that never connected is fine


if __name__ == "__main__":
    main()
