"""``RemotePublisher``: checks a batch and hands it to the broker's ``_publish``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic

import kincir_core
from kincir_core import Message

from .._stats import PublisherStats
from ..codecs import Codec
from .connection import B, RemoteBroker, guarded, resolve_broker
from .envelope import check_codec, to_messages

__all__ = ["RemotePublisher"]


class RemotePublisher(Generic[B]):
    """Publishes batches to a backend's topics; built on a broker or on a URL (its own broker).

    ``codec`` encodes the payloads (default: the broker's codec).
    """

    broker_type: ClassVar[type[RemoteBroker]]

    def __init__(self, broker_or_url: B | str, *, codec: Codec[Any] | None = None) -> None:
        self.broker: B
        self.broker, self._owns_broker = resolve_broker(self.broker_type, broker_or_url)  # type: ignore[arg-type]
        #: How this publisher encodes payloads.
        self.codec: Codec[Any] = self.broker.codec if codec is None else check_codec(codec)
        self._published = 0  # messages of the publishes the server accepted
        self._refused = 0  # messages of the publishes that raised

    async def publish(
        self, topic: str, messages: Sequence[Any], timeout: float | None = None
    ) -> None:
        """Publish ``messages`` (Messages or payloads) to ``topic``, in order.

        Every payload is encoded first: an EncodeError publishes nothing of the batch.
        """
        kincir_core.validate_topic_name(topic)
        batch = to_messages(messages, self.codec)
        seconds = kincir_core.check_timeout(timeout)
        broker = self.broker
        try:
            await broker.connect()
            if batch:
                await guarded(broker, asyncio.wait_for(broker._publish(topic, batch), seconds))
        except Exception:  # a cancelled publish is not refused
            self._refused += len(batch)
            raise
        self._published += len(batch)

    async def send(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish one message, ``payload`` with ``metadata``, to ``topic``: ``publish`` of a
        batch of one."""
        await self.publish(
            topic, [payload if metadata is None else Message(payload, metadata)], timeout
        )

    def stats(self) -> PublisherStats:
        """This publisher's own counts: messages of the publishes that returned, and of those
        that raised."""
        return PublisherStats(published=self._published, refused=self._refused)

    async def close_topic(self, topic: str) -> None:
        """Close ``topic`` for writing (the broker's ``close_topic``): its readers end once
        they received what was published before."""
        await self.broker.close_topic(topic)

    def is_connected(self) -> bool:
        """True while the broker is open."""
        return not self.broker.is_shutdown()

    async def close(self) -> None:
        """Close the broker if this publisher built it from a URL."""
        if self._owns_broker:
            await self.broker.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.broker!r})"
