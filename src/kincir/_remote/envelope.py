"""The wire envelope: a message as payload and string headers, and back.

The headers carry the user's metadata plus the message's uuid and enqueue time, so a message
received from any server keeps its identity.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from typing import Any

import kincir_core
from kincir_core import Message

__all__ = ["ENQUEUED_KEY", "UUID_KEY", "decode_message", "encode_message", "to_messages"]

#: Metadata keys the envelope of a message uses on the wire (besides the user's metadata).
UUID_KEY = "kincir-uuid"
ENQUEUED_KEY = "kincir-enqueued-at"


def to_messages(messages: Any) -> list[Message]:
    """``messages`` (Messages or bytes-like payloads) as Messages; TypeError names a bad item."""
    if type(messages) is not list and type(messages) is not tuple:
        raise TypeError(
            f"messages must be a list of Message objects or bytes-like payloads, "
            f"not {type(messages).__name__}"
        )
    out = []
    for index, item in enumerate(messages):
        if type(item) is Message:
            out.append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            out.append(Message(item))
        else:
            raise TypeError(
                f"messages[{index}] must be a Message or a bytes-like payload, "
                f"not {type(item).__name__}"
            )
    return out


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
