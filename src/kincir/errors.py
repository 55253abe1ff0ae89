"""kincir's error vocabulary, shared by every backend.

Each backend raises these (or subclasses of them: the in-memory broker's ``BrokerShutdown`` is
both a ``kincir.memory.InMemoryError`` and a ``kincir.BrokerShutdown``), so code that catches
them moves between backends unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Defined once with the engine, which raises them directly; these are the very same classes.
from kincir_core._errors import BaseAckError as AckError
from kincir_core._errors import BaseBrokerShutdown as BrokerShutdown
from kincir_core._errors import BaseNotSubscribed as NotSubscribed
from kincir_core._errors import BaseTopicClosed as TopicClosed
from kincir_core._errors import KincirError

if TYPE_CHECKING:
    from kincir_core import Message

__all__ = [
    "AckError",
    "BackendError",
    "BrokerShutdown",
    "ConnectionFailed",
    "DecodeError",
    "EncodeError",
    "KincirError",
    "NotSubscribed",
    "TopicClosed",
    "Unsupported",
]


class ConnectionFailed(KincirError, ConnectionError):
    """A backend's server cannot be reached, or the connection to it was lost.

    ``backend`` names the backend (``"redis"``, ``"rabbitmq"``, ``"kafka"``), ``address`` the
    server; the underlying error is the ``__cause__``.
    """

    __module__ = "kincir"

    def __init__(self, backend: str, address: str, detail: object = None) -> None:
        self.backend = backend
        self.address = address
        self.detail = detail
        text = f"{backend} at {address} is unreachable"
        super().__init__(f"{text}: {detail}" if detail else text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.backend, self.address, self.detail))


class BackendError(KincirError):
    """The backend's server refused an operation; ``backend`` names it, the message says why."""

    __module__ = "kincir"

    def __init__(self, backend: str, detail: object) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"{backend}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.backend, self.detail))


class Unsupported(BackendError):
    """The backend cannot honour this operation at all (not a failure of the server):
    ``operation`` names it, ``reason`` says why the engine cannot and what to use instead.

    Nothing was changed on the server. Code that needs the operation picks a backend that has
    it (the README's backend table says which)."""

    __module__ = "kincir"

    def __init__(self, backend: str, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(backend, f"cannot {operation}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.backend, self.operation, self.reason))


class EncodeError(KincirError, TypeError):
    """A codec cannot encode a payload; ``content_type`` names the codec's format,
    ``payload_type`` the payload's type, and the codec's own error is the ``__cause__``.

    A publish that raises it has published nothing of its batch.
    """

    __module__ = "kincir"

    def __init__(self, content_type: str, payload_type: str, detail: object = None) -> None:
        self.content_type = content_type
        self.payload_type = payload_type
        self.detail = detail
        text = f"cannot encode a {payload_type} payload as {content_type}"
        super().__init__(f"{text}: {detail}" if detail else text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.content_type, self.payload_type, self.detail))


class DecodeError(KincirError):
    """A received message that the subscriber's codec cannot decode.

    ``message`` is the message as it arrived (its payload the raw bytes, with its uuid, topic,
    sequence and metadata), ``content_type`` what it said it was (None if it did not say),
    ``expected`` the subscriber codec's content type and ``reason`` what went wrong (the codec's
    error, if any, is the ``__cause__``). The subscription goes on with the next message.
    """

    __module__ = "kincir"

    def __init__(
        self, message: Message[bytes], content_type: str | None, expected: str, reason: str
    ) -> None:
        self.message = message
        self.content_type = content_type
        self.expected = expected
        self.reason = reason
        where = f" from {message.topic!r}" if message.topic is not None else ""
        super().__init__(f"cannot decode message {message.uuid}{where} as {expected}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.content_type, self.expected, self.reason))
