"""``SharedMemoryPublisher``: publishes to a shared broker's topics from one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import kincir_core
from kincir_core import Message, check_timeout
from kincir_core._errors import BrokerShutdown, MaxTopicsReached, QueueFull, TopicClosed
from kincir_core._shm_log import DROP_NEWEST, DROP_OLDEST, ENDED, WAIT, LogClosed, LogFull

from .._awaitable import Completed
from .._remote import check_codec, to_messages
from .._stats import PublisherStats
from ..codecs import BytesCodec, Codec
from .broker import SharedMemoryBroker, Topic

__all__ = ["SharedMemoryPublisher"]

# how long an async publish to a full ring sleeps between tries, at most (it polls: a thread
# that waited for room could publish after the task was cancelled)
_ASYNC_PAUSE = 0.005


class SharedMemoryPublisher:
    """Publishes to a shared broker's topics: one message at a time (``send``, ``send_sync``,
    ``send_nowait``) or batches (``publish``, ``publish_sync``, ``publish_nowait``).

    A batch is atomic: its messages get consecutive sequence numbers, and it is written whole
    or not at all (except under ``drop_newest``, which writes what fits). Payloads are bytes,
    or what ``codec`` (default: the broker's) encodes; a Message keeps its uuid and metadata.
    """

    def __init__(self, broker: SharedMemoryBroker, *, codec: Codec[Any] | None = None) -> None:
        if not isinstance(broker, SharedMemoryBroker):
            raise TypeError(f"broker must be a SharedMemoryBroker, not {type(broker).__name__}")
        self.broker = broker
        #: How this publisher encodes payloads.
        self.codec: Codec[Any] = broker.codec if codec is None else check_codec(codec)
        # bytes and Messages of bytes go as they are; other codecs go through the wire form
        self._raw = type(self.codec) is BytesCodec
        geometry = broker.geometry
        self._code = (
            WAIT if geometry.overflow not in (DROP_NEWEST, DROP_OLDEST) else geometry.overflow
        )
        self._waits = broker.overflow == "block"
        self._topics = broker._topics  # the topics this process opened (shared with the broker)
        self._published = 0
        self._refused = 0

    def _batch(self, messages: Any) -> list[Any]:
        """What the log takes: bytes and Messages of bytes as they are (the bytes codec), or
        every message in its wire form (any other codec, or a payload to convert)."""
        if type(messages) is not list and type(messages) is not tuple:
            raise TypeError(
                "messages must be a list of Message objects or payloads, "
                f"not {type(messages).__name__}"
            )
        if self._raw:
            for item in messages:
                if type(item) is not bytes and (
                    type(item) is not Message or type(item.payload) is not bytes
                ):
                    return to_messages(messages, self.codec)
            return list(messages)
        return to_messages(messages, self.codec)

    def _append(self, topic: str, messages: Any, wait: float | None) -> None:
        self._put(topic, self._batch(messages), wait)

    def _put(self, topic: str, batch: list[Any], wait: float | None) -> None:
        """Publish ``batch``, waiting up to ``wait`` seconds for room (None: no limit) under
        ``block``; counted in this publisher's stats."""
        found = self.broker._topics.get(topic) or self._topic(topic, batch)
        try:
            found.log.publish(batch, wait if self._waits else 0.0, self._code)
        except LogFull:
            self._put_after_sweep(topic, found, batch)
            return
        except LogClosed as error:
            self._refused += len(batch)
            raise _refusal(self.broker, topic, error, found.log.slots) from None
        self._published += len(batch)

    def _put_after_sweep(self, topic: str, found: Topic, batch: list[Any]) -> None:
        """A publish found no room: once more if a process killed while making a group had
        left a cursor holding the ring (the sweep frees it), else QueueFull."""
        try:
            if not self.broker._directory.sweep():
                raise LogFull()
            found.log.publish(batch, 0.0, self._code)
        except (LogFull, LogClosed) as error:
            self._refused += len(batch)
            raise _refusal(self.broker, topic, error, found.log.slots) from None
        self._published += len(batch)

    def _topic(self, topic: str, batch: list[Any]) -> Topic:
        """The topic to publish ``batch`` to, made if need be (refused and counted once the
        broker is shut down or its topic table is full)."""
        try:
            return self.broker._topic(topic)
        except (BrokerShutdown, MaxTopicsReached):
            self._refused += len(batch)
            raise

    # -- batches --------------------------------------------------------------------------------

    def publish_nowait(self, topic: str, messages: Any) -> None:
        """Publish a batch without waiting: QueueFull if the ring has no room for it now."""
        self._append(topic, messages, 0.0)

    def publish_sync(self, topic: str, messages: Any, timeout: float | None = None) -> None:
        """Publish a batch, waiting up to ``timeout`` seconds (None: no limit) for room under
        ``block`` (QueueFull after)."""
        self._append(topic, messages, kincir_core.check_timeout(timeout))

    async def publish(self, topic: str, messages: Any, timeout: float | None = None) -> None:
        """Publish a batch; under ``block``, waits for room without blocking the event loop."""
        seconds = kincir_core.check_timeout(timeout)
        batch = self._batch(messages)
        deadline = None if seconds is None else time.monotonic() + seconds
        pause = 0.0001
        while True:
            found = self.broker._topics.get(topic) or self._topic(topic, batch)
            try:
                found.log.publish(batch, 0.0, self._code)
                break
            except LogFull as error:
                if not self._waits or (deadline is not None and time.monotonic() >= deadline):
                    self._refused += len(batch)
                    raise _refusal(self.broker, topic, error, found.log.slots) from None
            except LogClosed as error:
                self._refused += len(batch)
                raise _refusal(self.broker, topic, error, found.log.slots) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, _ASYNC_PAUSE)
        self._published += len(batch)

    # -- one message ----------------------------------------------------------------------------

    def send_nowait(
        self, topic: str, payload: Any, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Publish one message, ``payload`` with ``metadata``, without waiting."""
        self._append(topic, [_one(payload, metadata)], 0.0)

    def send_sync(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish one message, waiting for room like ``publish_sync``."""
        found = self._topics.get(topic)
        if found is not None and metadata is None and type(payload) is bytes and self._raw:
            # the hot path, one call into the log
            try:
                found.log.publish_one(
                    payload,
                    (None if timeout is None else check_timeout(timeout)) if self._waits else 0.0,
                    self._code,
                )
            except LogFull:
                self._put_after_sweep(topic, found, [payload])
                return
            except LogClosed as error:
                self._refused += 1
                raise _refusal(self.broker, topic, error, found.log.slots) from None
            self._published += 1
            return
        self._append(topic, [_one(payload, metadata)], kincir_core.check_timeout(timeout))

    async def send(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish one message, waiting for room like ``publish``."""
        await self.publish(topic, [_one(payload, metadata)], timeout)

    # -- the rest -------------------------------------------------------------------------------

    def stats(self) -> PublisherStats:
        """This publisher's own counts."""
        return PublisherStats(published=self._published, refused=self._refused)

    def close_topic(self, topic: str) -> Completed[None]:
        """End ``topic`` for writing (the broker's ``close_topic``)."""
        return self.broker.close_topic(topic)

    def is_connected(self) -> bool:
        """True while the broker is open."""
        return not self.broker.is_shutdown()

    def close(self) -> Completed[None]:
        """Nothing to let go of: the broker's handle is the process's."""
        return Completed(None)

    def __repr__(self) -> str:
        return f"SharedMemoryPublisher({self.broker!r})"


def _refusal(broker: SharedMemoryBroker, topic: str, error: Exception, slots: int) -> Exception:
    """What a publish the log refused raises."""
    if isinstance(error, LogFull):
        return QueueFull(topic, slots)
    if error.args[0] == ENDED:
        return TopicClosed(topic)
    return broker._shut()


def _one(payload: Any, metadata: Mapping[str, str] | None) -> Any:
    if metadata is None:
        return payload
    return Message(payload, metadata)
