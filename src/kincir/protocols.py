"""The protocols every kincir backend implements; ``isinstance`` checks work at run time."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from kincir_core import Message

from ._stats import PublisherStats, SubscriberStats

__all__ = ["AckSubscriber", "Publisher", "Subscriber"]


@runtime_checkable
class Publisher(Protocol):
    """Publishes messages to named topics, one at a time or in batches."""

    async def publish(
        self, topic: str, messages: list[Any] | tuple[Any, ...], timeout: float | None = None
    ) -> None:
        """Publish ``messages`` to ``topic``."""
        ...

    async def send(
        self,
        topic: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish one message, ``payload`` with ``metadata``, to ``topic``."""
        ...

    def stats(self) -> PublisherStats:
        """This publisher's own counts."""
        ...


@runtime_checkable
class Subscriber(Protocol):
    """Receives the messages of the topics it subscribed to."""

    def subscribe(self, topic: str) -> Awaitable[None]:
        """Start receiving ``topic``; takes effect at once, may be awaited."""
        ...

    async def receive(self, timeout: float | None = None) -> Message:
        """Wait for the next message."""
        ...

    def unsubscribe(self, topic: str | None = None) -> Awaitable[None]:
        """Stop receiving ``topic`` (or every topic)."""
        ...

    def stats(self) -> SubscriberStats:
        """This subscriber's own counts."""
        ...


@runtime_checkable
class AckSubscriber(Subscriber, Protocol):
    """A subscriber whose messages stay in flight until acknowledged."""

    async def receive_with_ack(self, timeout: float | None = None) -> tuple[Message, Any]:
        """Wait for the next message; return it with the handle to ack or nack it."""
        ...

    def ack(self, handle: Any) -> Awaitable[None]:
        """Settle the message of ``handle`` as processed."""
        ...

    def nack(self, handle: Any, requeue: bool = True) -> Awaitable[None]:
        """Settle the message of ``handle`` as failed: redeliver it, or reject it."""
        ...

    def ack_batch(self, handles: Sequence[Any]) -> Awaitable[None]:
        """Ack several handles."""
        ...

    def nack_batch(self, handles: Sequence[Any], requeue: bool = True) -> Awaitable[None]:
        """Nack several handles."""
        ...


for _cls in (Publisher, Subscriber, AckSubscriber):
    _cls.__module__ = "kincir"
