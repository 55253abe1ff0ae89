"""The protocols every kincir backend implements; ``isinstance`` checks work at run time."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, runtime_checkable

from kincir_core import Message

__all__ = ["Publisher", "Subscriber"]


@runtime_checkable
class Publisher(Protocol):
    """Publishes batches of messages to named topics."""

    async def publish(
        self, topic: str, messages: Sequence[Any], timeout: float | None = None
    ) -> None:
        """Publish ``messages`` to ``topic``."""
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


for _cls in (Publisher, Subscriber):
    _cls.__module__ = "kincir"
