"""The wire envelope: a message as payload and string headers, and back.

The headers carry the user's metadata plus the message's uuid, enqueue time and content type,
so a message received from any server keeps its identity and says how to read its payload.

Between the publisher and the backend's ``_publish``, and between the backend's fetch and the
subscriber's hand-out, a message is in its *wire form*: a ``Message`` whose payload is the
encoded bytes and whose metadata holds the content type under ``CONTENT_TYPE_KEY``. Backends
move wire forms only (and dead letters and redeliveries re-send them byte for byte); the codecs
run at the two ends: ``to_messages`` encodes a batch, ``open_message`` decodes one message.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from typing import Any

import kincir_core
from kincir_core import Message

from ..codecs import BytesCodec, Codec, decode_payload, encode_payload

__all__ = [
    "CONTENT_TYPE_KEY",
    "ENQUEUED_KEY",
    "UUID_KEY",
    "check_codec",
    "decode_message",
    "encode_message",
    "open_message",
    "to_messages",
]

#: Metadata keys the envelope of a message uses on the wire (besides the user's metadata).
UUID_KEY = "kincir-uuid"
ENQUEUED_KEY = "kincir-enqueued-at"
CONTENT_TYPE_KEY = "kincir-content-type"
_STAMPS = ("_sequence", "_enqueued_at")


def check_codec(codec: Any) -> Codec[Any]:
    """``codec`` if it has what a codec needs (``content_type``, ``encode``, ``decode``)."""
    if not isinstance(codec, Codec) or not isinstance(codec.content_type, str):
        raise TypeError(
            "codec must have a str content_type and encode/decode methods "
            f"(see kincir.codecs), not {type(codec).__name__}"
        )
    return codec


def to_messages(messages: Any, codec: Codec[Any]) -> list[Message]:
    """The wire forms of ``messages`` (Messages or payloads), every payload encoded by ``codec``
    before any is sent: TypeError names a bad batch, EncodeError the first payload the codec
    cannot encode."""
    if type(messages) is not list and type(messages) is not tuple:
        raise TypeError(
            f"messages must be a list of Message objects or payloads, not {type(messages).__name__}"
        )
    content_type = codec.content_type
    raw = type(codec) is BytesCodec
    out = []
    for item in messages:
        if type(item) is Message:
            payload = item.payload
            if raw and type(payload) is bytes:  # nothing to encode: keep the message's payload
                out.append(item.with_metadata(CONTENT_TYPE_KEY, content_type))
                continue
            meta = dict(item.metadata)
            ident = uuid_module.UUID(item.uuid).int
        else:
            payload, meta, ident = item, {}, uuid_module.uuid4().int
        meta[CONTENT_TYPE_KEY] = content_type
        data = encode_payload(codec, payload)
        out.append(kincir_core.restore_message(data, meta, ident, None, 0, 0, False))
    return out


def open_message(raw: Message, codec: Codec[Any]) -> Message:
    """The message a subscriber hands out: ``raw`` (a wire form, as fetched) with its payload
    decoded by ``codec`` and the content type gone from its metadata. DecodeError (carrying
    ``raw`` without the content type key) if ``codec`` cannot read it."""
    meta = dict(raw.metadata)
    content_type = meta.pop(CONTENT_TYPE_KEY, None)
    ordered = "_sequence" in meta
    for key in _STAMPS:
        meta.pop(key, None)
    ident = uuid_module.UUID(raw.uuid).int
    topic, sequence, enqueued = raw.topic, raw.sequence or 0, raw.enqueued_at or 0
    # as it arrived, minus the envelope's key: what the user sees, or what a DecodeError carries
    bare = kincir_core.restore_message(raw.payload, meta, ident, topic, sequence, enqueued, ordered)
    if type(codec) is BytesCodec:
        return bare
    payload = decode_payload(codec, bare, content_type)
    return kincir_core.restore_message(payload, meta, ident, topic, sequence, enqueued, ordered)


def encode_message(msg: Message) -> tuple[bytes, dict[str, str]]:
    """A message's payload and its headers: the user's metadata plus uuid and enqueue time."""
    headers = dict(msg.metadata)
    headers.pop("_sequence", None)  # a delivered message's stamps: the new topic stamps anew
    headers.pop("_enqueued_at", None)
    headers[UUID_KEY] = msg.uuid
    headers[ENQUEUED_KEY] = str(time.time_ns() // 1_000_000)
    return msg.payload, headers


def decode_message(
    payload: bytes, headers: dict[str, str], topic: str, sequence: int | None
) -> Message:
    """The Message a subscriber hands out, rebuilt from the wire (uuid and metadata kept)."""
    meta = dict(headers)
    ident = meta.pop(UUID_KEY, None)
    enqueued = meta.pop(ENQUEUED_KEY, None)
    try:
        value = uuid_module.UUID(ident).int if ident is not None else uuid_module.uuid4().int
    except ValueError:
        value = uuid_module.uuid4().int
    try:
        enqueued_ms = int(enqueued) if enqueued is not None else time.time_ns() // 1_000_000
    except ValueError:
        enqueued_ms = time.time_ns() // 1_000_000
    return kincir_core.restore_message(
        payload,
        meta,
        value,
        topic,
        sequence if sequence is not None else 0,
        enqueued_ms,
        sequence is not None,
    )
