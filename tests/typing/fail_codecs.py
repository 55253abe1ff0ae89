"""Misuse of codecs and typed subscribers: each marked line must be a mypy error."""

from __future__ import annotations

import msgspec

from kincir import Message
from kincir.codecs import BytesCodec, Codec, MsgspecCodec
from kincir.redis import RedisBroker, RedisSubscriber


class Order(msgspec.Struct):
    id: int
    item: str


class NoContentType:
    def encode(self, obj: str, /) -> bytes:
        return obj.encode()

    def decode(self, data: bytes, /) -> str:
        return data.decode()


order_codec = MsgspecCodec(Order)
order_codec.encode({"id": 1})  # E: Argument 1 to "encode" of "MsgspecCodec" has incompatible
BytesCodec().encode("text")  # E: Argument 1 to "encode" of "BytesCodec" has incompatible type
MsgspecCodec(Order, format="yaml")  # E: Argument "format" to "MsgspecCodec" has incompatible
broker = RedisBroker(codec=NoContentType())  # E: No overload variant of "RedisBroker" matches
json_orders: Codec[Order] = MsgspecCodec(Order)
payload: bytes = json_orders.decode(b"{}")  # E: Incompatible types in assignment


async def amounts(orders: RedisSubscriber[Order]) -> str:
    message = await orders.receive()
    return message.payload.id  # E: Incompatible return value type (got "int", expected "str")


async def raw(sub: RedisSubscriber[bytes]) -> int:
    message: Message[Order] = await sub.receive()  # E: Incompatible types in assignment
    return message.payload.id


def subscribers() -> None:
    plain = RedisBroker()
    typed: RedisSubscriber[Order] = RedisSubscriber(plain)  # E: expected "RedisBroker[Order]"
    RedisSubscriber(plain, codec=BytesCodec)  # E: No overload variant of "RedisSubscriber"
    print(typed)
