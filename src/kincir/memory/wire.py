"""Wire fidelity: ``InMemoryConfig(codec=...)`` runs every published payload through a codec.

Off by default: in memory, payloads are shared by reference and never serialized. With a codec,
a publisher encodes each payload and decodes the bytes at once, before anything reaches the
engine, so a test suite running in memory meets what a network backend would do to its
payloads: an unencodable object raises ``EncodeError`` and a payload that does not come back
(a typed codec whose validation fails) raises ``DecodeError``, both from the publish, with
nothing of the batch published. Subscribers then receive the decoded object (a JSON codec turns
tuples into lists, as a real wire does). Decoding happens once per message, on the publisher's
side, outside every engine lock; on a network each subscriber decodes its own copy, here they
share the one decoded object.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from kincir_core import Message

from ..codecs import decode_payload, encode_payload

if TYPE_CHECKING:
    from ..codecs import Codec

__all__ = ["failed", "round_trip", "through_codec"]


def round_trip(codec: Codec[Any], payload: Any, message: Message | None = None) -> Any:
    """``payload`` encoded and decoded by ``codec`` (``message``: the Message carrying it)."""
    data = encode_payload(codec, payload)
    raw = Message(data) if message is None else message.with_payload(data)
    return decode_payload(codec, raw, codec.content_type)


def through_codec(codec: Codec[Any], messages: Any) -> Any:
    """``messages`` with every payload encoded and decoded by ``codec``: a new list of the
    same shape (Messages keep their uuid and metadata). Anything but a list or tuple is
    returned as it is, for the engine to refuse as it always does."""
    if type(messages) is not list and type(messages) is not tuple:
        return messages
    out: list[Any] = []
    for item in messages:
        if type(item) is Message:
            out.append(item.with_payload(round_trip(codec, item.payload, item)))
        else:
            out.append(round_trip(codec, item, None))
    return out


async def _raise(exc: BaseException) -> None:
    raise exc


def failed(exc: BaseException) -> Coroutine[Any, Any, None]:
    """An awaitable that raises ``exc``: an async publish reports a refused batch when it is
    awaited, as the engine's own refusals are."""
    return _raise(exc)
