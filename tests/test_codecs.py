"""kincir.codecs: each codec's round trips, the bad-input matrix (unencodable objects, wrong
content type, corrupt bytes), the errors, and the wire envelope of the remote backends."""

from __future__ import annotations

import dataclasses
import datetime
import math
import pickle
import sys
from typing import Any

import msgspec
import pytest

import kincir
from kincir import DecodeError, EncodeError, KincirError, Message
from kincir._remote import CONTENT_TYPE_KEY, encode_message, open_message, to_messages
from kincir._remote.envelope import decode_message
from kincir.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    MsgspecCodec,
    PickleCodec,
    decode_payload,
    encode_payload,
    same_content_type,
)


class Order(msgspec.Struct):
    id: int
    item: str
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


def codecs() -> list[Codec[Any]]:
    return [
        BytesCodec(),
        JsonCodec(),
        PickleCodec(),
        MsgpackCodec(),
        MsgspecCodec(Order),
        MsgspecCodec(Order, format="msgpack"),
    ]


def test_every_codec_satisfies_the_protocol_and_names_its_content_type() -> None:
    expected = [
        "application/octet-stream",
        "application/json",
        "application/x-python-pickle",
        "application/msgpack",
        "application/json",
        "application/msgpack",
    ]
    assert [c.content_type for c in codecs()] == expected
    assert all(isinstance(c, Codec) for c in codecs())
    assert not isinstance(object(), Codec)


# -- round trips --------------------------------------------------------------------------------

ROUND_TRIPS = [
    (BytesCodec(), b"", b""),
    (BytesCodec(), b"\x00\xffbinary", b"\x00\xffbinary"),
    (BytesCodec(), bytearray(b"ba"), b"ba"),
    (BytesCodec(), memoryview(b"mv"), b"mv"),
    (JsonCodec(), {"id": 7, "name": "h\u00e9llo \u2603", "ok": True, "none": None}, None),
    (JsonCodec(), [1, 2.5, "x", [], {}], None),
    (JsonCodec(), (1, 2), [1, 2]),
    (JsonCodec(), "text", None),
    (PickleCodec(), {1, 2, 3}, None),
    (PickleCodec(), Point(1, 2), None),
    (PickleCodec(), datetime.datetime(2026, 1, 2, 3, 4, 5), None),
    (MsgpackCodec(), {"bytes": b"\x00\x01", "str": "s", "n": [1, -2, 3.5, None]}, None),
    (MsgpackCodec(), (1, 2), [1, 2]),
    (MsgspecCodec(Order), Order(1, "book", ["new"]), None),
    (MsgspecCodec(Order, format="msgpack"), Order(2, "pen"), None),
    (MsgspecCodec(Point), Point(3, 4), None),
    (MsgspecCodec(list[Order]), [Order(1, "a"), Order(2, "b")], None),
]


@pytest.mark.parametrize(("codec", "value", "expected"), ROUND_TRIPS)
def test_round_trip(codec: Codec[Any], value: Any, expected: Any) -> None:
    data = codec.encode(value)
    assert type(data) is bytes
    again = codec.decode(data)
    assert again == (value if expected is None else expected)
    if expected is None and type(value) is not memoryview:
        assert type(again) is type(value)


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"a": [1, 2], "b": "\u00e9"}) == '{"a":[1,2],"b":"\u00e9"}'.encode()


def test_msgspec_reads_what_json_and_msgpack_codecs_write_and_back() -> None:
    order = Order(5, "lamp", ["x"])
    as_dict = {"id": 5, "item": "lamp", "tags": ["x"]}
    assert MsgspecCodec(Order).decode(JsonCodec().encode(as_dict)) == order
    assert JsonCodec().decode(MsgspecCodec(Order).encode(order)) == as_dict
    packed = MsgspecCodec(Order, format="msgpack")
    assert packed.decode(MsgpackCodec().encode(as_dict)) == order
    assert MsgpackCodec().decode(packed.encode(order)) == as_dict


# -- the bad-input matrix -----------------------------------------------------------------------


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


UNENCODABLE = [
    (BytesCodec(), {"a": 1}, "dict"),
    (BytesCodec(), "text", "str"),
    (BytesCodec(), 42, "int"),
    (JsonCodec(), {1, 2}, "set"),
    (JsonCodec(), object(), "object"),
    (JsonCodec(), {"x": math.nan}, "dict"),
    (JsonCodec(), b"bytes are not JSON", "bytes"),
    (PickleCodec(), Unpicklable(), "Unpicklable"),
    (PickleCodec(), lambda: None, "function"),
    (MsgpackCodec(), object(), "object"),
    (MsgpackCodec(), {1, 2}, "set"),
    (MsgspecCodec(Order), {"id": 1, "item": "x"}, "dict"),
    (MsgspecCodec(Order), Point(1, 2), "Point"),
    (MsgspecCodec(Order), Order(1, object()), "Order"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("codec", "value", "type_name"), UNENCODABLE)
def test_an_unencodable_payload_is_an_encode_error(
    codec: Codec[Any], value: Any, type_name: str
) -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode(value)
    error = info.value
    assert isinstance(error, TypeError) and isinstance(error, KincirError)
    assert error.content_type == codec.content_type
    assert error.payload_type == type_name
    assert codec.content_type in str(error) and type_name in str(error)
    # the same through what the transports call
    with pytest.raises(EncodeError):
        encode_payload(codec, value)


def test_the_default_codec_says_to_pass_a_codec() -> None:
    with pytest.raises(TypeError, match=r"codec=JsonCodec\(\)") as info:
        BytesCodec().encode({"a": 1})  # type: ignore[arg-type]
    assert "not dict" in str(info.value)


@pytest.mark.parametrize(
    ("codec", "value"),
    [(JsonCodec(), {1, 2}), (PickleCodec(), Unpicklable()), (MsgpackCodec(), object())],
)
def test_an_encode_error_chains_the_codecs_own_error(codec: Codec[Any], value: Any) -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode(value)
    assert info.value.__cause__ is not None


CORRUPT = [
    (JsonCodec(), b"{"),
    (JsonCodec(), b"\xff\xfe not utf-8"),
    (JsonCodec(), b""),
    (PickleCodec(), b"not a pickle"),
    (PickleCodec(), pickle.dumps({"a": 1})[:-3]),
    (MsgpackCodec(), b"\xc1"),
    (MsgpackCodec(), b"\x92\x01"),  # a two-item array with one item
    (MsgpackCodec(), b"\x01\x02"),  # extra data
    (MsgspecCodec(Order), b"["),
    (MsgspecCodec(Order), b'{"id": "not an int", "item": "x"}'),
    (MsgspecCodec(Order), b'{"item": "no id"}'),
    (MsgspecCodec(Order, format="msgpack"), b"\xc1"),
]


@pytest.mark.parametrize(("codec", "data"), CORRUPT)
def test_corrupt_bytes_are_a_value_error_and_a_decode_error_in_transit(
    codec: Codec[Any], data: bytes
) -> None:
    with pytest.raises(ValueError):
        codec.decode(data)
    raw = decode_message(data, {"k": "v"}, "orders", 3)
    with pytest.raises(DecodeError) as info:
        decode_payload(codec, raw, codec.content_type)
    error = info.value
    assert error.message is raw and error.message.payload == data
    assert error.content_type == codec.content_type and error.expected == codec.content_type
    assert error.reason.startswith("corrupt data: ")
    assert error.__cause__ is not None
    assert raw.uuid in str(error) and "'orders'" in str(error)


class Spy:
    """A codec that records what it was asked to decode."""

    content_type = "application/json"

    def __init__(self) -> None:
        self.decoded: list[bytes] = []

    def encode(self, obj: Any, /) -> bytes:
        return b"{}"

    def decode(self, data: bytes, /) -> Any:
        self.decoded.append(data)
        return {}


@pytest.mark.parametrize(
    "content_type", ["application/msgpack", "application/x-python-pickle", "text/plain"]
)
def test_a_wrong_content_type_is_a_decode_error_without_decoding(content_type: str) -> None:
    spy = Spy()
    raw = decode_message(b"{}", {}, "t", None)
    with pytest.raises(DecodeError) as info:
        decode_payload(spy, raw, content_type)
    assert spy.decoded == [], "the codec must not see bytes of another format"
    error = info.value
    assert (error.content_type, error.expected) == (content_type, "application/json")
    assert content_type in error.reason and error.__cause__ is None


def test_content_types_compare_by_media_type() -> None:
    assert same_content_type("application/json", "Application/JSON; charset=utf-8")
    assert not same_content_type("application/json", "application/msgpack")
    spy = Spy()
    raw = decode_message(b"{}", {}, "t", None)
    assert decode_payload(spy, raw, "application/json; charset=utf-8") == {}
    assert decode_payload(spy, raw, None) == {}, "no content type: the codec tries"
    assert spy.decoded == [b"{}", b"{}"]


def test_the_bytes_codec_takes_any_content_type() -> None:
    raw = decode_message(b"\x81\xa1a\x01", {}, "t", None)
    assert decode_payload(BytesCodec(), raw, "application/msgpack") == b"\x81\xa1a\x01"


def test_encode_payload_checks_what_a_codec_returns() -> None:
    class Text:
        content_type = "text/plain"

        def encode(self, obj: Any, /) -> Any:
            return str(obj)

        def decode(self, data: bytes, /) -> Any:
            return data.decode()

    class Broken(Text):
        def encode(self, obj: Any, /) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(EncodeError, match="returned str, not bytes"):
        encode_payload(Text(), 1)
    with pytest.raises(EncodeError, match="boom") as info:
        encode_payload(Broken(), 1)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.content_type == "text/plain" and info.value.payload_type == "int"


# -- options and extras -------------------------------------------------------------------------


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        MsgspecCodec(Order, format="yaml")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MsgspecCodec(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="protocol"):
        PickleCodec(protocol=99)


@pytest.mark.parametrize(
    ("module", "build"),
    [("msgpack", MsgpackCodec), ("msgspec", lambda: MsgspecCodec(Order))],
)
def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, module: str, build: Any) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"kincir\[{module}\]"):
        build()


def test_reprs() -> None:
    assert repr(JsonCodec()) == "JsonCodec()"
    assert repr(MsgspecCodec(Order, format="msgpack")) == ("MsgspecCodec(Order, format='msgpack')")


# -- the errors ---------------------------------------------------------------------------------


def test_errors_are_public_and_pickle_with_their_fields() -> None:
    assert kincir.EncodeError is EncodeError and kincir.DecodeError is DecodeError
    assert EncodeError.__module__ == DecodeError.__module__ == "kincir"
    assert "EncodeError" in kincir.__all__ and "DecodeError" in kincir.__all__
    encode = EncodeError("application/json", "set", "Object of type set is not JSON")
    again = pickle.loads(pickle.dumps(encode))
    assert type(again) is EncodeError and str(again) == str(encode)
    assert (again.content_type, again.payload_type) == ("application/json", "set")
    raw = decode_message(b"\x00", {"k": "v"}, "orders", 9)
    decode = DecodeError(raw, "application/msgpack", "application/json", "wrong type")
    again2 = pickle.loads(pickle.dumps(decode))
    assert type(again2) is DecodeError and str(again2) == str(decode)
    assert again2.message.uuid == raw.uuid and again2.message.payload == b"\x00"
    assert again2.message.topic == "orders" and again2.message.metadata["k"] == "v"
    assert (again2.content_type, again2.expected, again2.reason) == (
        "application/msgpack",
        "application/json",
        "wrong type",
    )
    assert not isinstance(decode, TypeError)


# -- the wire envelope of the remote backends ---------------------------------------------------


def test_the_envelope_carries_the_content_type_and_hides_it_again() -> None:
    sent = Message(b"raw", {"k": "v"})
    (wire,) = to_messages([sent], BytesCodec())
    payload, headers = encode_message(wire)
    assert payload == b"raw" and headers[CONTENT_TYPE_KEY] == "application/octet-stream"
    got = open_message(decode_message(payload, headers, "t", 1), BytesCodec())
    assert got.uuid == sent.uuid and dict(got.metadata) == {
        "k": "v",
        "_sequence": "1",
        "_enqueued_at": got.metadata["_enqueued_at"],
    }


def test_raw_objects_are_encoded_before_anything_is_sent() -> None:
    wire = to_messages([{"a": 1}, [2]], JsonCodec())
    assert [m.payload for m in wire] == [b'{"a":1}', b"[2]"]
    assert all(m.metadata[CONTENT_TYPE_KEY] == "application/json" for m in wire)
    assert wire[0].uuid != wire[1].uuid
    with pytest.raises(EncodeError):
        to_messages([{"a": 1}, {2}], JsonCodec())
    with pytest.raises(EncodeError, match="codec="):
        to_messages([b"ok", "text"], BytesCodec())
    with pytest.raises(TypeError, match="list of Message objects or payloads"):
        to_messages(b"not a list", BytesCodec())


def test_a_message_of_an_object_keeps_its_uuid_and_metadata_on_the_wire() -> None:
    sent = Message({"a": 1}, {"k": "v"})  # type: ignore[arg-type,unused-ignore]
    (wire,) = to_messages([sent], JsonCodec())
    assert wire.uuid == sent.uuid and wire.payload == b'{"a":1}'
    payload, headers = encode_message(wire)
    got = open_message(decode_message(payload, headers, "t", 4), JsonCodec())
    assert got.payload == {"a": 1} and got.uuid == sent.uuid
    assert CONTENT_TYPE_KEY not in got.metadata and got.metadata["k"] == "v"
    assert got.topic == "t" and got.sequence == 4


def test_opening_with_another_codec_is_a_decode_error_carrying_the_raw_message() -> None:
    (wire,) = to_messages([{"a": 1}], MsgpackCodec())
    payload, headers = encode_message(wire)
    raw = decode_message(payload, headers, "t", 2)
    with pytest.raises(DecodeError) as info:
        open_message(raw, JsonCodec())
    error = info.value
    assert error.message.payload == payload and error.message.uuid == wire.uuid
    assert CONTENT_TYPE_KEY not in error.message.metadata
    assert error.message.topic == "t" and error.message.sequence == 2
    assert (error.content_type, error.expected) == ("application/msgpack", "application/json")


def test_a_codec_is_checked_where_it_is_given() -> None:
    from kincir._remote import check_codec

    assert isinstance(check_codec(JsonCodec()), JsonCodec)
    with pytest.raises(TypeError, match=r"codec=JsonCodec\(\)"):
        check_codec(JsonCodec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="content_type and encode/decode"):
        check_codec(object())  # type: ignore[arg-type]
