"""Pure-Python twin of ``_message.pyx``: the message type and its delivered (stamped) copies.

A message is immutable once built. The broker never mutates the publisher's object: it writes a
*stamped* copy into the topic log (same uuid, payload and metadata objects, plus the topic, the
sequence number and the enqueue time), and every reader of the topic receives that one copy.
The stamp keys ``_sequence`` and ``_enqueued_at`` appear in ``metadata`` on read; they are not
stored in a dict per message.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from types import GenericAlias, MappingProxyType
from typing import Any

_EMPTY: dict[str, str] = {}
_EMPTY_VIEW = MappingProxyType(_EMPTY)
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_UUID_VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48) & ((1 << 128) - 1)
_UUID_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)


def _new_id() -> int:
    """128 random bits with the uuid4 version and variant bits set."""
    return (_random.getrandbits(128) & _UUID_VERSION_MASK) | _UUID_VERSION_BITS


def _format_uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def to_payload(value: Any) -> Any:
    """A published payload as the broker keeps it: the object itself, except that a
    ``bytearray`` or ``memoryview`` becomes ``bytes`` (a snapshot: they are the mutable buffers
    callers refill and publish again, and bytes-only releases copied them)."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _copy_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return _EMPTY
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    copied: dict[str, str] = {}
    for key, value in metadata.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(
                "metadata keys and values must be str, "
                f"got {type(key).__name__} -> {type(value).__name__} for key {key!r}"
            )
        copied[key] = value
    return copied or _EMPTY


class Message:
    """A message: a payload (any object, shared by reference), read-only str->str metadata and
    a uuid4 identifier.

    Messages handed out by a subscriber also carry ``topic`` and ``sequence``, and the metadata
    keys ``_sequence`` (when the broker maintains order) and ``_enqueued_at`` (Unix milliseconds).
    """

    __slots__ = ("_enqueued_at", "_id", "_meta", "_ordered", "_payload", "_sequence", "_topic")
    __module__ = "kincir"

    _payload: Any
    _meta: dict[str, str]
    _id: int
    _topic: str | None
    _sequence: int
    _enqueued_at: int
    _ordered: bool

    def __class_getitem__(cls, item: Any) -> GenericAlias:
        """``Message[Order]`` in annotations evaluated at run time."""
        return GenericAlias(cls, item)

    def __init__(self, payload: Any, metadata: Mapping[str, str] | None = None) -> None:
        if hasattr(self, "_payload"):
            raise TypeError("a Message is immutable: build a new one instead of re-initialising")
        self._payload = to_payload(payload)
        self._meta = _copy_metadata(metadata)
        self._id = _new_id()
        self._topic = None
        self._sequence = 0
        self._enqueued_at = 0
        self._ordered = False

    @classmethod
    def new(cls, payload: Any) -> Message:
        """Build a message with no metadata (the seed's ``Message::new``)."""
        return cls(payload)

    @property
    def payload(self) -> Any:
        """The message body."""
        return self._payload

    @property
    def uuid(self) -> str:
        """The message's uuid4, kept by every copy the broker delivers."""
        return _format_uuid(self._id)

    @property
    def metadata(self) -> Mapping[str, str]:
        """Read-only str->str metadata, with the delivery keys on a delivered message."""
        if self._topic is None:
            return MappingProxyType(self._meta) if self._meta else _EMPTY_VIEW
        merged = dict(self._meta)
        if self._ordered:
            merged["_sequence"] = str(self._sequence)
        merged["_enqueued_at"] = str(self._enqueued_at)
        return MappingProxyType(merged)

    @property
    def topic(self) -> str | None:
        """The topic a delivered message was published to; None before publishing."""
        return self._topic

    @property
    def sequence(self) -> int | None:
        """The per-topic sequence number of a delivered message; None before publishing."""
        return self._sequence if self._topic is not None else None

    @property
    def enqueued_at(self) -> int | None:
        """Unix milliseconds at which a delivered message entered its topic; None before."""
        return self._enqueued_at if self._topic is not None else None

    def with_payload(self, payload: Any) -> Message:
        """Return a new message with the same uuid and metadata and another payload."""
        copy = Message.__new__(Message)
        copy._payload = to_payload(payload)
        copy._meta = self._meta
        copy._id = self._id
        copy._topic = None
        copy._sequence = 0
        copy._enqueued_at = 0
        copy._ordered = False
        return copy

    def with_metadata(self, key: str, value: str) -> Message:
        """Return a new message with the same uuid and payload and one metadata entry set."""
        if type(key) is not str:
            raise TypeError(f"metadata key must be str, not {type(key).__name__}")
        if type(value) is not str:
            raise TypeError(f"metadata value must be str, not {type(value).__name__}")
        copy = Message.__new__(Message)
        copy._payload = self._payload
        copy._meta = {**self._meta, key: value}
        copy._id = self._id
        copy._topic = None
        copy._sequence = 0
        copy._enqueued_at = 0
        copy._ordered = False
        return copy

    def __repr__(self) -> str:
        where = "" if self._topic is None else f", topic={self._topic!r}, sequence={self._sequence}"
        return f"Message(uuid={self.uuid!r}, payload={_short(self._payload)}{where})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            restore_message,
            (
                self._payload,
                self._meta,
                self._id,
                self._topic,
                self._sequence,
                self._enqueued_at,
                self._ordered,
            ),
        )


def _short(payload: Any) -> str:
    """A payload for a repr: bytes cut at 32, other objects' reprs cut at 80 characters."""
    if isinstance(payload, bytes):
        if len(payload) <= 32:
            return repr(payload)
        return f"{payload[:32]!r}...({len(payload)} bytes)"
    shown = repr(payload)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def restore_message(
    payload: Any,
    meta: dict[str, str],
    ident: int,
    topic: str | None,
    sequence: int,
    enqueued_at: int,
    ordered: bool,
) -> Message:
    """Rebuild a message from its pickled state."""
    if topic is not None and type(topic) is not str:
        raise TypeError("topic must be str or None")
    msg = Message.__new__(Message)
    msg._payload = to_payload(payload)
    msg._meta = _copy_metadata(meta)
    msg._id = ident
    msg._topic = topic
    msg._sequence = sequence
    msg._enqueued_at = enqueued_at
    msg._ordered = ordered
    return msg


def stamp_all(items: Any, topic: str, enqueued_at: int, ordered: bool) -> list[Message]:
    """The copies of ``items`` (Messages or payloads) that a topic log stores.

    Raises TypeError naming the first bad item, before anything is published. The sequence
    numbers are written by the log, under its lock, when the copies are appended.
    """
    if type(items) is not list and type(items) is not tuple:
        raise TypeError(
            f"messages must be a list of Message objects or payloads, not {type(items).__name__}"
        )
    stamped = []
    count = len(items)
    for i in range(count):
        # an item's conversion (a bytearray subclass's __bytes__) may run code that changes
        # the list: refused whole
        if i >= len(items):
            break
        item = items[i]
        copy = Message.__new__(Message)
        if type(item) is Message:
            copy._payload = item._payload
            copy._meta = item._meta
            copy._id = item._id
        else:
            copy._payload = to_payload(item)
            copy._meta = _EMPTY
            copy._id = _new_id()
        copy._topic = topic
        copy._sequence = 0
        copy._enqueued_at = enqueued_at
        copy._ordered = ordered
        stamped.append(copy)
    if len(items) != count:
        raise RuntimeError("the batch changed size while it was being published")
    return stamped


def payload_size(msg: Message) -> int:
    """The payload bytes the memory estimate counts: a bytes payload's length. An object is
    shared with the publisher, not copied, and counts as a reference (0)."""
    payload = msg._payload
    return len(payload) if isinstance(payload, bytes) else 0
