"""Codecs: how a payload object becomes bytes where a message leaves the process, and back.

Inside one process kincir moves payloads by reference and needs no codec. A transport that
leaves the process (Redis, RabbitMQ, Kafka) encodes each payload with its codec when it publishes
and decodes it with the subscriber's codec when it delivers; the codec's ``content_type`` travels
with the message, so a subscriber with another codec gets a ``kincir.DecodeError`` instead of
garbage.

- ``Codec``: the protocol (``content_type``, ``encode(obj) -> bytes``, ``decode(data) -> obj``),
  generic in the payload type. Any object with these three members is a codec.
- ``BytesCodec`` (the default, ``application/octet-stream``): bytes-like payloads as they are.
- ``JsonCodec`` (``application/json``): the standard library's ``json``, compact UTF-8.
- ``PickleCodec`` (``application/x-python-pickle``): any picklable object. Opt-in only, and only
  between parties that trust each other: unpickling runs code chosen by whoever wrote the bytes.
- ``MsgpackCodec`` (``application/msgpack``): needs the ``msgpack`` extra.
- ``MsgspecCodec(type, format="json")``: typed and validated, on msgspec (the ``msgspec`` extra);
  its content type is its format's, so it reads what ``JsonCodec``/``MsgpackCodec`` write.

Encoding failures raise ``kincir.EncodeError`` (a ``TypeError``); a codec's ``decode`` raises
``ValueError`` for bytes it cannot read, which a transport reports as ``kincir.DecodeError``
(``decode_payload``).
"""

from __future__ import annotations

import builtins
import json
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from .errors import DecodeError, EncodeError

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from kincir_core import Message

__all__ = [
    "BytesCodec",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "MsgspecCodec",
    "PickleCodec",
    "decode_payload",
    "encode_payload",
    "same_content_type",
]

T = TypeVar("T")

#: How long the reason quoted from a codec's exception may be (it goes into headers).
_REASON_LIMIT = 200


@runtime_checkable
class Codec(Protocol[T]):
    """Turns payloads of type ``T`` into bytes and back, and names the format it writes."""

    @property
    def content_type(self) -> str:
        """The media type of the bytes ``encode`` writes (``"application/json"``)."""
        ...

    def encode(self, obj: T, /) -> bytes:
        """``obj`` as bytes; ``kincir.EncodeError`` (a TypeError) if it cannot be encoded."""
        ...

    def decode(self, data: bytes, /) -> T:
        """The object ``data`` encodes; ``ValueError`` if ``data`` is not in this format."""
        ...


class BytesCodec:
    """Bytes-like payloads as they are (``application/octet-stream``): the default codec.

    ``encode`` takes ``bytes``, ``bytearray`` or ``memoryview`` (copied once into ``bytes``);
    anything else is an ``EncodeError`` that says to pass a codec. A subscriber with this codec
    takes every message whatever its content type: it hands over the bytes as they arrived.
    """

    __slots__ = ()
    content_type = "application/octet-stream"

    def encode(self, obj: Buffer, /) -> bytes:
        if type(obj) is bytes:
            return obj
        if isinstance(obj, (bytearray, memoryview)):
            return bytes(obj)
        name = type(obj).__name__
        raise EncodeError(
            self.content_type,
            name,
            f"without a codec a payload must be bytes-like, not {name}: pass codec=JsonCodec() "
            f"(or another codec of kincir.codecs) to send objects",
        )

    def decode(self, data: bytes, /) -> bytes:
        return data

    def __repr__(self) -> str:
        return "BytesCodec()"


def _encode_with(content_type: str, dump: Callable[[Any], bytes], obj: Any) -> bytes:
    """``dump(obj)``, its failures as an EncodeError naming the format and the payload's type."""
    try:
        return dump(obj)
    except Exception as exc:
        raise EncodeError(content_type, type(obj).__name__, exc) from exc


class JsonCodec:
    """JSON with the standard library (``application/json``): compact, UTF-8, strict.

    Dicts, lists, str, int, float, bool and None; tuples arrive as lists. NaN and infinities
    are refused (``EncodeError``): they are not JSON, and other readers would reject them.
    """

    __slots__ = ()
    content_type = "application/json"

    def encode(self, obj: Any, /) -> bytes:
        return _encode_with(self.content_type, _dump_json, obj)

    def decode(self, data: bytes, /) -> Any:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return json.loads(bytes(data).decode("utf-8"))

    def __repr__(self) -> str:
        return "JsonCodec()"


def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class PickleCodec:
    """Any picklable object (``application/x-python-pickle``), with pickle's highest protocol.

    Only ever decode data from a trusted source: unpickling runs whatever code the bytes name,
    so a subscriber with this codec gives anyone who can publish to its topics the power to run
    code in its process. Never the default; use it between processes of one trusted system.
    """

    __slots__ = ("protocol",)
    content_type = "application/x-python-pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if type(protocol) is not int or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"protocol must be an int from 0 to {pickle.HIGHEST_PROTOCOL}, got {protocol!r}"
            )
        self.protocol = protocol

    def encode(self, obj: Any, /) -> bytes:
        return _encode_with(self.content_type, lambda o: pickle.dumps(o, self.protocol), obj)

    def decode(self, data: bytes, /) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:  # UnpicklingError, EOFError, AttributeError, ... of bad bytes
            raise ValueError(f"not a readable pickle: {exc!r}") from exc

    def __repr__(self) -> str:
        return f"PickleCodec(protocol={self.protocol})"


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(
            f"this codec needs {module}: pip install 'kincir[{extra}]' (or pip install {module})"
        ) from exc


class MsgpackCodec:
    """MessagePack (``application/msgpack``) with the ``msgpack`` package (``kincir[msgpack]``).

    str and bytes stay distinct (``use_bin_type``); tuples arrive as lists; map keys must be
    str or bytes when decoding (msgpack's ``strict_map_key``).
    """

    __slots__ = ("_msgpack",)
    content_type = "application/msgpack"

    def __init__(self) -> None:
        self._msgpack = _require("msgpack", "msgpack")

    def encode(self, obj: Any, /) -> bytes:
        packb = self._msgpack.packb
        return _encode_with(self.content_type, lambda o: packb(o, use_bin_type=True), obj)

    def decode(self, data: bytes, /) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False)
        except ValueError:
            raise
        except Exception as exc:  # msgpack raises TypeError, StackError, ... on hostile input
            raise ValueError(f"not readable msgpack: {exc!r}") from exc

    def __repr__(self) -> str:
        return "MsgpackCodec()"


class MsgspecCodec(Generic[T]):
    """Typed payloads with msgspec (``kincir[msgspec]``): decodes into ``type`` and validates.

    ``type`` is a ``msgspec.Struct`` or dataclass (or any type msgspec decodes, such as
    ``list[Order]``); ``format`` is ``"json"`` (``application/json``) or ``"msgpack"``
    (``application/msgpack``), so messages of ``JsonCodec``/``MsgpackCodec`` publishers that fit
    the type decode too. ``encode`` refuses an object that is not an instance of ``type`` when
    ``type`` is a class, before anything is sent.
    """

    __slots__ = ("_check", "_decoder", "_encoder", "content_type", "format", "type")

    def __init__(self, type: type[T], *, format: Literal["json", "msgpack"] = "json") -> None:
        msgspec = _require("msgspec", "msgspec")
        if format == "json":
            backend, self.content_type = msgspec.json, JsonCodec.content_type
        elif format == "msgpack":
            backend, self.content_type = msgspec.msgpack, MsgpackCodec.content_type
        else:
            raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")
        self.type = type
        self.format = format
        self._encoder = backend.Encoder()
        self._decoder = backend.Decoder(type)  # TypeError here for a type msgspec cannot decode
        self._check = type if isinstance(type, builtins.type) else None

    def encode(self, obj: T, /) -> bytes:
        if self._check is not None and not isinstance(obj, self._check):
            raise EncodeError(
                self.content_type,
                builtins.type(obj).__name__,
                f"this codec sends {self._check.__name__} payloads",
            )
        return _encode_with(self.content_type, self._encoder.encode, obj)

    def decode(self, data: bytes, /) -> T:
        try:
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except Exception as exc:  # msgspec.DecodeError and ValidationError are not ValueErrors
            raise ValueError(str(exc)) from exc

    def __repr__(self) -> str:
        name = getattr(self.type, "__qualname__", None) or repr(self.type)
        return f"MsgspecCodec({name}, format={self.format!r})"


# -- what transports call ----------------------------------------------------------------------


def encode_payload(codec: Codec[Any], payload: Any) -> bytes:
    """``codec.encode(payload)``, checked: any failure (or a result that is not bytes) is an
    ``EncodeError`` naming the codec's content type and the payload's type."""
    try:
        data = codec.encode(payload)
    except EncodeError:
        raise
    except Exception as exc:
        raise EncodeError(codec.content_type, type(payload).__name__, exc) from exc
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise EncodeError(
                codec.content_type,
                type(payload).__name__,
                f"{type(codec).__name__}.encode returned {type(data).__name__}, not bytes",
            )
        data = bytes(data)
    return data


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def same_content_type(a: str, b: str) -> bool:
    """Whether two content types name the same format (parameters and case aside)."""
    return a == b or _media_type(a) == _media_type(b)


def decode_payload(codec: Codec[Any], message: Message, content_type: str | None) -> Any:
    """The payload of ``message`` (as it arrived: bytes), decoded by ``codec``.

    ``content_type`` is what the message says it is (None: a producer that did not say; the
    codec tries). A different content type is a ``DecodeError`` without decoding, except for
    ``BytesCodec``, which takes any bytes; so is any failure of the codec, with the codec's
    exception as the cause.
    """
    expected = codec.content_type
    if (
        content_type is not None
        and type(codec) is not BytesCodec
        and not same_content_type(content_type, expected)
    ):
        raise DecodeError(
            message,
            content_type,
            expected,
            f"the content type is {content_type}, this subscriber decodes {expected}",
        )
    try:
        return codec.decode(message.payload)
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        if len(detail) > _REASON_LIMIT:
            detail = detail[: _REASON_LIMIT - 3] + "..."
        raise DecodeError(message, content_type, expected, f"corrupt data: {detail}") from exc
