"""The connection lifecycle: ``RemoteBroker`` (connect, close, error translation),
``resolve_broker`` (a broker or a URL) and ``guarded`` (every call to the server goes through
it: timeouts and client errors become kincir's)."""

from __future__ import annotations

import abc
import asyncio
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import kincir_core
from kincir_core import Message

from ..codecs import BytesCodec, Codec
from ..errors import BackendError, BrokerShutdown, ConnectionFailed, KincirError
from .envelope import check_codec

if TYPE_CHECKING:
    # the payload type a codec decodes to; Any where nobody says (``RedisBroker`` alone)
    from typing_extensions import TypeVar as DefaultTypeVar

    from .subscriber import RemoteSubscriber

    P = DefaultTypeVar("P", default=Any)
else:
    P = TypeVar("P")  # typing's TypeVar takes a default from Python 3.13 only

__all__ = ["P", "RemoteBroker", "guarded", "resolve_broker"]

B = TypeVar("B", bound="RemoteBroker[Any]")
T = TypeVar("T")


def _seconds(name: str, value: Any) -> float:
    seconds = kincir_core.check_timeout(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(seconds)


class RemoteBroker(abc.ABC, Generic[P]):
    """Owns one connection to a distributed engine. Subclasses implement the hooks.

    ``P`` is the payload type of its codec: what its subscribers hand out unless they have a
    codec of their own.
    """

    backend: ClassVar[str] = "remote"

    def __init__(
        self,
        url: str,
        *,
        codec: Codec[P] | None = None,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a non-empty str, not {url!r}")
        self.url = url
        #: How payloads are encoded and decoded unless a publisher or subscriber says otherwise.
        self.codec: Codec[P] = (
            cast("Codec[P]", BytesCodec()) if codec is None else check_codec(codec)
        )
        #: How long a receive keeps retrying a lost connection before ConnectionFailed.
        self.reconnect_timeout = _seconds("reconnect_timeout", reconnect_timeout)
        #: The longest any one call to the server may take before ConnectionFailed.
        self.operation_timeout = _seconds("operation_timeout", operation_timeout)
        self._subscribers: weakref.WeakSet[RemoteSubscriber[Any]] = weakref.WeakSet()
        self._closed = False
        self._connected = False
        self._connecting: asyncio.Lock | None = None

    def translate(self, exc: Exception) -> KincirError:
        """The kincir error for a client library's exception (backends refine this)."""
        if isinstance(exc, (OSError, ConnectionError)):
            return ConnectionFailed(self.backend, self.url, exc)
        return BackendError(self.backend, exc)

    def is_shutdown(self) -> bool:
        """True once ``close()``/``shutdown()`` was called."""
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise BrokerShutdown(f"the {self.backend} broker is closed")

    async def connect(self) -> None:
        """Connect now (calls connect on first use anyway); ConnectionFailed if it cannot."""
        self.check_open()
        if self._connected:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connected:
                return
            try:
                await self._connect()
            except KincirError:
                raise
            except (TimeoutError, OSError) as exc:
                raise ConnectionFailed(self.backend, self.url, exc) from exc
            self._connected = True

    async def shutdown(self) -> None:
        """Close the connection; later calls raise BrokerShutdown. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._connected:
            self._connected = False
            try:
                for subscriber in list(self._subscribers):
                    try:
                        await subscriber._detach()  # what a subscriber holds of its own first
                    except Exception:
                        continue
            finally:
                await self._close()

    close = shutdown

    async def __aenter__(self: B) -> B:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({self.url!r}, {state})"

    # -- end of stream --------------------------------------------------------------------------

    async def close_topic(self, topic: str) -> None:
        """Close ``topic`` for writing: publishes to it raise ``TopicClosed`` from now on, and
        its readers end (``TopicClosed``, ``reading=True``) once they received what was
        published before. Idempotent. ``Unsupported`` on a backend that cannot mark an end."""
        kincir_core.validate_topic_name(topic)
        await self.connect()
        await guarded(self, self._close_topic(topic))

    async def join_async(self, topic: str, timeout: float | None = None) -> None:
        """Wait until the topic's readers the server knows of received and settled everything
        published to it before this call; ``TimeoutError`` after ``timeout`` seconds.
        ``Unsupported`` on a backend whose server cannot tell."""
        kincir_core.validate_topic_name(topic)
        seconds = kincir_core.check_timeout(timeout)
        await self.connect()
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                await self._join(topic)
        except TimeoutError:
            if not scope.expired():
                raise
            detail = f"topic {topic!r} was not settled within {seconds} seconds"
            raise TimeoutError(detail) from None

    # -- what a backend implements -------------------------------------------------------------

    @abc.abstractmethod
    async def _close_topic(self, topic: str) -> None:
        """Mark the end of ``topic``'s stream, atomically with respect to publishes (or raise
        ``Unsupported`` saying why the engine cannot)."""

    @abc.abstractmethod
    async def _join(self, topic: str) -> None:
        """Return once the readers of ``topic`` settled what it holds now (or raise
        ``Unsupported``); cancelled at the join's timeout."""

    async def _publish_dead_letters(self, topic: str, messages: list[Message]) -> None:
        """Append dead letters to ``topic``: as ``_publish``, but a closed topic takes them
        too (they are the broker's, not a publisher's)."""
        await self._publish(topic, messages)

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the connection (OSError/TimeoutError become ConnectionFailed)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Close the connection and whatever the broker's objects hold on the server."""

    @abc.abstractmethod
    async def _probe(self) -> None:
        """One round trip to the server (raises if it does not answer)."""

    @abc.abstractmethod
    async def _publish(self, topic: str, messages: list[Message]) -> None:
        """Append ``messages`` (wire forms: encoded payloads, see ``envelope``) to ``topic``
        (one batch; atomic where the engine allows)."""


def resolve_broker(broker_cls: type[B], broker_or_url: Any) -> tuple[B, bool]:
    """A broker and whether this object owns it (built from a URL)."""
    if isinstance(broker_or_url, broker_cls):
        return broker_or_url, False
    if isinstance(broker_or_url, str):
        return broker_cls(broker_or_url), True
    raise TypeError(
        f"expected a {broker_cls.__name__} or a URL string, not {type(broker_or_url).__name__}"
    )


async def guarded(broker: RemoteBroker, awaitable: Awaitable[T]) -> T:
    """Await a client-library call, translating its errors into kincir's."""
    limit = broker.operation_timeout
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await awaitable
    except TimeoutError as exc:
        if scope.expired():  # the server did not answer; a caller's own timeout passes through
            raise ConnectionFailed(broker.backend, broker.url, f"no answer in {limit:g} s") from exc
        raise
    except (KincirError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if broker.is_shutdown():
            raise BrokerShutdown(f"the {broker.backend} broker is closed") from exc
        raise broker.translate(exc) from exc
