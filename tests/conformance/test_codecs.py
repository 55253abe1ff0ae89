"""Objects on the wire: every backend with every codec (see conftest.py for how backends are
chosen). ``CASES`` is the codec list: one entry per codec, with payloads it moves and a codec
whose messages it must refuse."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

import kincir
from kincir.codecs import BytesCodec, JsonCodec, MsgpackCodec, MsgspecCodec, PickleCodec

from .conftest import Backend, Scene, collect, drain


class Order(msgspec.Struct):
    id: int
    item: str
    tags: list[str] = []


@dataclasses.dataclass(frozen=True)
class Case:
    """A codec, payloads it round-trips, and a codec of another content type."""

    codec: Callable[[], Any]
    payloads: list[Any]
    other: Callable[[], Any] | None  # None: this codec takes every content type

    def __str__(self) -> str:
        return type(self.codec()).__name__


CASES = [
    pytest.param(
        Case(BytesCodec, [b"", b"\x00\xffraw", bytearray(b"mutable")], None),
        id="bytes",
    ),
    pytest.param(
        Case(JsonCodec, [{"id": 1, "name": "h\u00e9llo"}, [1, 2.5, None], "text", 7], MsgpackCodec),
        id="json",
    ),
    pytest.param(
        Case(PickleCodec, [{1, 2}, ("a", b"b"), Order(3, "pen")], JsonCodec),
        id="pickle",
    ),
    pytest.param(
        Case(MsgpackCodec, [{"bin": b"\x00", "str": "s"}, [1, -2]], JsonCodec),
        id="msgpack",
    ),
    pytest.param(
        Case(
            lambda: MsgspecCodec(Order), [Order(1, "book", ["new"]), Order(2, "lamp")], PickleCodec
        ),
        id="msgspec-json",
    ),
    pytest.param(
        Case(lambda: MsgspecCodec(Order, format="msgpack"), [Order(4, "cup")], JsonCodec),
        id="msgspec-msgpack",
    ),
]


def arrived(payload: Any) -> Any:
    """What a payload is after a round trip: JSON and msgpack have no tuples or bytearrays."""
    if isinstance(payload, bytearray):
        return bytes(payload)
    return payload


class Garbage:
    """A codec that claims a content type and writes bytes no codec can read."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type

    def encode(self, obj: Any, /) -> bytes:
        return b"\xc1\x80{not any format"

    def decode(self, data: bytes, /) -> Any:
        raise ValueError("Garbage only writes")


def user_metadata(msg: Any) -> dict[str, str]:
    return {k: v for k, v in msg.metadata.items() if not k.startswith("_")}


@pytest.mark.parametrize("case", CASES)
def test_payloads_round_trip_with_the_brokers_codec(backend: Backend, case: Case) -> None:
    backend.requires("codecs")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish(case.payloads)
        got = await collect(sub, len(case.payloads))
        assert [m.payload for m in got] == [arrived(p) for p in case.payloads]
        assert [type(m.payload) for m in got] == [type(arrived(p)) for p in case.payloads]
        assert all(user_metadata(m) == {} for m in got), "the envelope's keys are not shown"
        assert all(m.topic == s.topic for m in got)

    backend.play(body, codec=case.codec())


@pytest.mark.parametrize("case", CASES)
def test_messages_of_objects_keep_uuid_and_metadata(backend: Backend, case: Case) -> None:
    backend.requires("codecs")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        sent = [kincir.Message(p).with_metadata("k", "v") for p in case.payloads]
        await s.publish(sent)
        got = await collect(sub, len(sent))
        assert [m.uuid for m in got] == [m.uuid for m in sent]
        assert [m.payload for m in got] == [arrived(p) for p in case.payloads]
        assert all(user_metadata(m) == {"k": "v"} for m in got)

    backend.play(body, codec=case.codec())


@pytest.mark.parametrize("case", CASES)
def test_ack_subscribers_decode_and_redeliver_as_sent(backend: Backend, case: Case) -> None:
    backend.requires("codecs")

    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=30.0)  # the broker's codec
        await s.publish(case.payloads[:1])
        msg, handle = await sub.receive_with_ack(timeout=10)
        assert msg.payload == arrived(case.payloads[0])
        await sub.nack(handle)  # the redelivery is re-sent as it arrived, and decoded again
        again, handle2 = await sub.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.payload == arrived(case.payloads[0]) and again.uuid == msg.uuid
        assert handle2.delivery_count == 2
        await sub.ack(handle2)

    backend.play(body, codec=case.codec())


def test_publishers_and_subscribers_override_the_brokers_codec(backend: Backend) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")

    async def body(s: Scene) -> None:
        as_json = await s.subscriber(codec=JsonCodec())
        as_bytes = await s.subscriber()  # the broker's codec: raw bytes, whatever they are
        packer = backend.publisher(s.broker, codec=MsgpackCodec())
        await backend.publisher(s.broker, codec=JsonCodec()).publish(s.topic, [{"a": 1}])
        await s.publish([b"raw"])
        assert (await as_json.receive(timeout=10)).payload == {"a": 1}
        with pytest.raises(kincir.DecodeError):  # raw bytes are not JSON's content type
            await as_json.receive(timeout=10)
        assert [m.payload for m in await collect(as_bytes, 2)] == [b'{"a":1}', b"raw"]
        await packer.publish(s.topic, [{"b": 2}])
        assert (await as_bytes.receive(timeout=10)).payload == MsgpackCodec().encode({"b": 2})

    backend.play(body)


@pytest.mark.parametrize("case", CASES)
def test_another_content_type_is_a_decode_error_and_the_subscription_goes_on(
    backend: Backend, case: Case
) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")
    backend.requires("decode_on_receive")
    if case.other is None:
        pytest.skip("the bytes codec takes every content type")
    other = case.other

    async def body(s: Scene) -> None:
        codec = case.codec()
        sub = await s.subscriber(codec=codec)
        stranger = backend.publisher(s.broker, codec=other())
        await stranger.publish(s.topic, [{"a": [1]}])
        await s.publish(case.payloads[:1])
        with pytest.raises(kincir.DecodeError) as info:
            await sub.receive(timeout=10)
        error = info.value
        assert error.content_type == other().content_type
        assert error.expected == codec.content_type
        assert error.__cause__ is None, "refused on its content type, never decoded"
        assert other().content_type in error.reason
        assert error.message.topic == s.topic
        assert error.message.payload == other().encode({"a": [1]})
        assert "kincir-content-type" not in error.message.metadata
        got = await sub.receive(timeout=10)  # the subscription goes on
        assert got.payload == arrived(case.payloads[0])

    backend.play(body, codec=case.codec())


@pytest.mark.parametrize("case", CASES)
def test_corrupt_bytes_are_a_decode_error_and_the_subscription_goes_on(
    backend: Backend, case: Case
) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")
    backend.requires("decode_on_receive")
    if case.other is None:
        pytest.skip("the bytes codec reads any bytes")

    async def body(s: Scene) -> None:
        codec = case.codec()
        sub = await s.subscriber(codec=codec)
        liar = backend.publisher(s.broker, codec=Garbage(codec.content_type))
        await liar.publish(s.topic, [kincir.Message(b"whatever").with_metadata("k", "v")])
        await s.publish(case.payloads[:1])
        with pytest.raises(kincir.DecodeError) as info:
            await sub.receive(timeout=10)
        error = info.value
        assert error.reason.startswith("corrupt data")
        assert error.content_type == error.expected == codec.content_type
        assert error.message.payload == Garbage("").encode(None)
        assert error.message.topic == s.topic and error.message.metadata["k"] == "v"
        assert "kincir-content-type" not in error.message.metadata
        assert error.__cause__ is not None
        assert (await sub.receive(timeout=10)).payload == arrived(case.payloads[0])

    backend.play(body, codec=case.codec())


def test_a_message_without_a_content_type_is_tried_with_the_codec(backend: Backend) -> None:
    backend.requires("codecs")
    backend.requires("decode_on_receive")

    async def body(s: Scene) -> None:
        sub = await s.subscriber(codec=JsonCodec())
        # what a producer that is not kincir writes: no content type header
        await backend.publish_raw(s.broker, s.topic, [kincir.Message(b'{"foreign":true}')])
        await backend.publish_raw(s.broker, s.topic, [kincir.Message(b"not json")])
        assert (await sub.receive(timeout=10)).payload == {"foreign": True}
        with pytest.raises(kincir.DecodeError) as info:
            await sub.receive(timeout=10)
        assert info.value.content_type is None

    backend.play(body)


def test_a_batch_ends_before_an_undecodable_message(backend: Backend) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")
    backend.requires("decode_on_receive")

    async def body(s: Scene) -> None:
        sub = await s.subscriber(codec=JsonCodec())
        packer = backend.publisher(s.broker, codec=MsgpackCodec())
        await s.publish([1, 2])
        await packer.publish(s.topic, [3])
        await s.publish([4])
        events: list[Any] = []
        while len(events) < 4:
            try:
                batch = await sub.receive_batch(10, timeout=10)
            except kincir.DecodeError as error:
                events.append(("error", error.message.payload))
                continue
            assert batch, "a batch has at least one message"
            events += [m.payload for m in batch]
        assert events == [1, 2, ("error", MsgpackCodec().encode(3)), 4]

    backend.play(body, codec=JsonCodec())


def test_ack_subscribers_dead_letter_undecodable_messages(backend: Backend) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")
    backend.requires("decode_on_receive")

    async def body(s: Scene) -> None:
        dead = backend.topic()
        letters = await s.subscriber(topics=(dead,), codec=MsgpackCodec())
        sub = await s.ack_subscriber(
            group="g", ack_timeout=1.0, codec=JsonCodec(), dead_letter_topic=dead
        )
        packer = backend.publisher(s.broker, codec=MsgpackCodec())
        await packer.publish(s.topic, [kincir.Message(b"").with_metadata("k", "v")])
        await packer.publish(s.topic, [{"wrong": "format"}])
        await s.publish([{"right": "format"}])
        msg, handle = await sub.receive_with_ack(timeout=10)  # the undecodable one is skipped
        assert msg.payload == {"right": "format"}
        await sub.ack(handle)
        first = await letters.receive(timeout=10)
        letter = await letters.receive(timeout=10)
        # sent on as it arrived: its own content type, so a reader of that format decodes it
        assert first.metadata["k"] == "v"
        assert letter.payload == {"wrong": "format"}
        reason = letter.metadata["_dead_letter_reason"]
        assert reason.startswith("undecodable: ") and "application/msgpack" in reason
        assert letter.metadata["_original_topic"] == s.topic
        assert letter.metadata["_delivery_count"] == "1"
        await asyncio.sleep(1.5)  # past the ack timeout: nothing comes back
        with pytest.raises(TimeoutError):
            await sub.receive_with_ack(timeout=1.0)
        # a plain receive on the ack subscriber dead-letters too
        await packer.publish(s.topic, [["also", "wrong"]])
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=2.0)
        assert (await letters.receive(timeout=10)).payload == ["also", "wrong"]

    backend.play(body, codec=JsonCodec())


def test_without_a_dead_letter_topic_an_undecodable_message_is_raised_once(
    backend: Backend,
) -> None:
    backend.requires("codecs")
    backend.requires("codec_override")
    backend.requires("decode_on_receive")

    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=1.0, codec=JsonCodec())
        packer = backend.publisher(s.broker, codec=MsgpackCodec())
        await packer.publish(s.topic, [{"wrong": "format"}])
        await s.publish([{"right": "format"}])
        with pytest.raises(kincir.DecodeError) as info:
            await sub.receive_with_ack(timeout=10)
        assert info.value.message.payload == MsgpackCodec().encode({"wrong": "format"})
        assert sub.in_flight() == 0
        msg, handle = await sub.receive_with_ack(timeout=10)
        assert msg.payload == {"right": "format"}
        await sub.ack(handle)
        await asyncio.sleep(1.5)  # past the ack timeout: the undecodable one was settled
        with pytest.raises(TimeoutError):
            await sub.receive_with_ack(timeout=1.0)

    backend.play(body, codec=JsonCodec())


def test_an_unencodable_payload_publishes_nothing_of_its_batch(backend: Backend) -> None:
    backend.requires("codecs")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        with pytest.raises(kincir.EncodeError) as info:
            await s.publish([{"ok": 1}, {"not", "json"}, {"ok": 2}])
        assert info.value.payload_type == "set" and info.value.content_type == "application/json"
        assert isinstance(info.value, TypeError)
        await s.publish([{"ok": 3}])  # the broker is fine
        assert [m.payload for m in await drain(sub, quiet=1.0)] == [{"ok": 3}]

    backend.play(body, codec=JsonCodec())


def test_an_object_without_a_codec_is_a_type_error_naming_the_option(backend: Backend) -> None:
    backend.requires("codecs")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        with pytest.raises(TypeError, match="codec="):
            await s.publish([b"fine", {"a": 1}])
        await s.publish([b"still fine"])
        assert [m.payload for m in await drain(sub, quiet=1.0)] == [b"still fine"]

    backend.play(body, codec=BytesCodec())
