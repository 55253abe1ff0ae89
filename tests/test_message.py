"""Message: payload, metadata, uuid, with_metadata, pickling, and the public type name."""

from __future__ import annotations

import array
import pickle
import sys
import time
import uuid

import pytest

# -- payload ------------------------------------------------------------------------------------


def test_bytes_payload_is_kept_as_the_same_object(k):
    payload = b"Order #1234"
    msg = k.Message(payload)
    assert msg.payload is payload


@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_mutable_buffer_payload_is_snapshotted_into_bytes(k, kind):
    source = bytearray(b"hello")
    given = {"bytearray": source, "memoryview": memoryview(source)}[kind]
    msg = k.Message(given)
    assert type(msg.payload) is bytes
    assert msg.payload == b"hello"
    # Copied once: refilling the caller's buffer afterwards does not change the message.
    source[0] = ord("J")
    assert msg.payload == b"hello"


@pytest.mark.parametrize(
    "payload",
    ["text", 42, 4.2, None, [1, 2], {"id": 7, "sku": "A-1"}, (1, "a"), object(), array.array("B")],
    ids=lambda p: type(p).__name__,
)
def test_any_other_object_is_the_payload_itself(k, payload):
    msg = k.Message(payload)
    assert msg.payload is payload
    assert k.Message.new(payload).payload is payload


def test_bytes_subclass_payload_is_kept_as_it_is(k):
    class Blob(bytes):
        pass

    blob = Blob(b"abc")
    assert k.Message(blob).payload is blob


def test_empty_payload_is_allowed(k):
    assert k.Message(b"").payload == b""


def test_message_is_generic_in_its_payload_type_at_run_time(k):
    alias = k.Message[dict]
    assert alias.__origin__ is k.Message and alias.__args__ == (dict,)


def test_object_payload_repr_is_cut(k):
    msg = k.Message(list(range(100)))
    shown = repr(msg)
    assert "payload=[0, 1, 2" in shown and "..." in shown and len(shown) < 200


def test_object_payload_survives_pickling(k):
    msg = k.Message({"id": 7, "items": [1, 2]}, {"a": "1"})
    with k.activated():
        back = pickle.loads(pickle.dumps(msg))
    assert back.payload == {"id": 7, "items": [1, 2]} and back.uuid == msg.uuid


# -- metadata -----------------------------------------------------------------------------------


def test_metadata_defaults_to_empty(k):
    msg = k.Message(b"x")
    assert dict(msg.metadata) == {}
    assert len(msg.metadata) == 0


def test_metadata_is_copied_from_the_caller(k):
    source = {"customer": "Alice"}
    msg = k.Message(b"x", source)
    source["customer"] = "Mallory"
    source["extra"] = "1"
    assert dict(msg.metadata) == {"customer": "Alice"}


def test_metadata_keyword_argument(k):
    msg = k.Message(b"x", metadata={"a": "1"})
    assert msg.metadata["a"] == "1"


def test_metadata_is_read_only(k):
    msg = k.Message(b"x", {"a": "1"})
    with pytest.raises(TypeError):
        msg.metadata["a"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        msg.metadata["b"] = "2"  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        del msg.metadata["a"]  # type: ignore[attr-defined]
    assert dict(msg.metadata) == {"a": "1"}


def test_empty_metadata_is_read_only(k):
    msg = k.Message(b"x")
    with pytest.raises(TypeError):
        msg.metadata["a"] = "2"  # type: ignore[index]
    assert dict(k.Message(b"y").metadata) == {}


def test_metadata_attribute_cannot_be_replaced(k):
    msg = k.Message(b"x", {"a": "1"})
    with pytest.raises(AttributeError):
        msg.metadata = {"b": "2"}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.payload = b"other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.uuid = "x"  # type: ignore[misc]
    assert msg.payload == b"x"


@pytest.mark.parametrize(
    "metadata",
    [{1: "a"}, {"a": 1}, {"a": None}, {b"a": "b"}, {"a": b"b"}],
    ids=["int-key", "int-value", "none-value", "bytes-key", "bytes-value"],
)
def test_metadata_with_non_str_keys_or_values_raises_type_error(k, metadata):
    with pytest.raises(TypeError):
        k.Message(b"x", metadata)


@pytest.mark.parametrize("metadata", [[("a", "b")], "a=b", 5], ids=["list", "str", "int"])
def test_metadata_that_is_not_a_mapping_raises_type_error(k, metadata):
    with pytest.raises(TypeError):
        k.Message(b"x", metadata)


# -- uuid ---------------------------------------------------------------------------------------


def test_uuid_is_a_uuid4_string(k):
    msg = k.Message(b"x")
    assert isinstance(msg.uuid, str)
    parsed = uuid.UUID(msg.uuid)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == msg.uuid  # canonical lower-case hyphenated form


def test_uuid_is_stable_for_one_message(k):
    msg = k.Message(b"x")
    assert msg.uuid == msg.uuid


def test_uuids_are_unique_across_10k_messages(k):
    ids = {k.Message(b"x").uuid for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 for i in list(ids)[:200])


# -- with_metadata / new ------------------------------------------------------------------------


def test_with_metadata_returns_a_new_message_with_the_same_uuid(k):
    original = k.Message(b"Order #1234")
    tagged = original.with_metadata("customer", "Alice")
    assert tagged is not original
    assert type(tagged) is type(original)
    assert tagged.uuid == original.uuid
    assert tagged.payload == original.payload
    assert dict(tagged.metadata) == {"customer": "Alice"}
    assert dict(original.metadata) == {}


def test_with_metadata_chain_keeps_every_key(k):
    msg = (
        k.Message.new(b"Order #1234")
        .with_metadata("customer", "Alice")
        .with_metadata("priority", "high")
    )
    assert dict(msg.metadata) == {"customer": "Alice", "priority": "high"}


def test_with_metadata_overrides_an_existing_key_in_the_copy_only(k):
    first = k.Message(b"x", {"priority": "low"})
    second = first.with_metadata("priority", "high")
    assert first.metadata["priority"] == "low"
    assert second.metadata["priority"] == "high"


@pytest.mark.parametrize("key,value", [(1, "a"), ("a", 1), (None, "a"), ("a", None)])
def test_with_metadata_rejects_non_str(k, key, value):
    msg = k.Message(b"x")
    with pytest.raises(TypeError):
        msg.with_metadata(key, value)
    assert dict(msg.metadata) == {}


def test_message_new(k):
    msg = k.Message.new(b"payload")
    assert type(msg) is k.Message
    assert msg.payload == b"payload"
    assert dict(msg.metadata) == {}
    assert uuid.UUID(msg.uuid).version == 4


def test_message_new_copies_bytes_like(k):
    msg = k.Message.new(bytearray(b"abc"))
    assert type(msg.payload) is bytes and msg.payload == b"abc"


def test_sequence_and_topic_are_none_before_publishing(k):
    msg = k.Message(b"x", {"a": "b"})
    assert msg.sequence is None
    assert msg.topic is None
    assert "_sequence" not in msg.metadata
    assert "_enqueued_at" not in msg.metadata


# -- pickling -----------------------------------------------------------------------------------


def test_pickle_round_trip_keeps_uuid_payload_and_metadata(k):
    msg = k.Message(b"\x00\x01binary", {"customer": "Alice", "priority": "high"})
    with k.activated():
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            copy = pickle.loads(pickle.dumps(msg, protocol=protocol))
            assert type(copy) is type(msg)
            assert copy.uuid == msg.uuid
            assert copy.payload == msg.payload
            assert dict(copy.metadata) == dict(msg.metadata)
            assert copy.topic is None and copy.sequence is None


def test_pickle_round_trip_of_a_delivered_message(k):
    _broker, pub, sub = k.setup(subscribe="orders")
    pub.publish_nowait("orders", [k.Message(b"a", {"x": "1"})])
    got = sub.try_receive()
    with k.activated():
        copy = pickle.loads(pickle.dumps(got))
    assert copy.uuid == got.uuid
    assert copy.payload == b"a"
    assert copy.topic == "orders"
    assert copy.sequence == 1
    assert dict(copy.metadata) == dict(got.metadata)


def test_copied_metadata_after_unpickling_is_still_read_only(k):
    msg = k.Message(b"x", {"a": "1"})
    with k.activated():
        copy = pickle.loads(pickle.dumps(msg))
    with pytest.raises(TypeError):
        copy.metadata["a"] = "2"


# -- public names -------------------------------------------------------------------------------


def test_message_type_is_named_kincir_message(k):
    msg = k.Message(b"x")
    assert type(msg).__module__ == "kincir"
    assert type(msg).__qualname__ == "Message"
    assert type(msg).__name__ == "Message"
    assert repr(type(msg)) == "<class 'kincir.Message'>"
    assert "kincir_core" not in repr(msg)
    assert "kincir_core" not in repr(type(msg))
    assert "Message" in repr(msg)


def test_message_is_the_public_name(k):
    assert k.kincir.Message is k.Message
    assert isinstance(k.Message(b"x"), k.Message)


def test_message_repr_is_bounded_for_large_payloads(k):
    msg = k.Message(b"z" * 1_000_000)
    assert len(repr(msg)) < 1000


def test_enqueued_at_metadata_is_unix_ms_only_after_delivery(k):
    _broker, pub, sub = k.setup(subscribe="t")
    before = time.time() * 1000
    pub.publish_nowait("t", [b"x"])
    after = time.time() * 1000
    got = sub.try_receive()
    stamp = int(got.metadata["_enqueued_at"])
    # on Linux the compiled engine reads the coarse clock (CLOCK_REALTIME_COARSE, 5): up to one
    # kernel tick behind the precise time, never ahead of it
    tick_ms = time.clock_getres(5) * 1000 if sys.platform == "linux" else 0.0
    assert before - tick_ms - 5 <= stamp <= after + 5


# -- freed messages built again -----------------------------------------------------------------
# The compiled engine keeps freed Messages to build new ones from, and writes a new message's
# fields without first storing None in them: a reused message must carry only its own fields, and
# freeing one may run a payload's __del__, which builds and frees messages itself.


class _BuildsMessagesWhenFreed:
    """A payload whose last reference going builds, delivers and frees messages."""

    def __init__(self, pub, sub, message_type, seen: list) -> None:
        self.pub, self.sub, self.message_type, self.seen = pub, sub, message_type, seen

    def __del__(self) -> None:
        self.pub.send_nowait("inner", b"from __del__")
        got = self.sub.try_receive()
        made = self.message_type(b"made").with_payload(b"copied").with_metadata("k", "v")
        self.seen.append((got, made))  # read once every outer message is freed


def test_a_payload_freed_with_its_message_may_build_messages(k):
    _broker, pub, sub = k.setup(subscribe="t")
    _inner, inner_pub, inner_sub = k.setup(subscribe="inner")
    seen: list = []
    for _ in range(300):  # more than the freed messages kept for reuse
        pub.send_nowait("t", _BuildsMessagesWhenFreed(inner_pub, inner_sub, k.Message, seen))
    for _ in range(300):
        got = sub.try_receive()
        assert type(got.payload) is _BuildsMessagesWhenFreed
        del got
    sub.unsubscribe("t")  # the log lets go of the last payloads it held
    k.wait_for(lambda: len(seen) == 300)
    for got, made in seen:
        assert (got.payload, got.topic, dict(got.metadata).keys()) == (
            b"from __del__",
            "inner",
            {"_sequence", "_enqueued_at"},
        )
        assert (made.payload, made.topic, dict(made.metadata)) == (b"copied", None, {"k": "v"})


def test_messages_built_after_many_were_freed_carry_only_their_own_fields(k):
    _broker, pub, sub = k.setup(subscribe="t")
    for round_ in range(3):
        pub.publish_nowait("t", [k.Message(b"m%d" % i, {"i": str(i)}) for i in range(500)])
        pub.send_nowait("t", b"plain")
        got = sub.try_receive_batch(501)
        assert [m.payload for m in got[:500]] == [b"m%d" % i for i in range(500)]
        assert [m.metadata["i"] for m in got[:500]] == [str(i) for i in range(500)]
        assert got[500].payload == b"plain" and got[500].topic == "t"
        assert dict(got[500].metadata).keys() == {"_sequence", "_enqueued_at"}
        assert [m.sequence for m in got] == list(range(501 * round_ + 1, 501 * round_ + 502))
        del got  # freed: the next round builds from them
        fresh = k.Message(b"fresh")
        assert fresh.topic is None and fresh.sequence is None and dict(fresh.metadata) == {}
        copy = fresh.with_payload(b"copy")
        assert copy.uuid == fresh.uuid and copy.topic is None and copy.enqueued_at is None
