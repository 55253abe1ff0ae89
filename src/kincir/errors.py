"""kincir's error vocabulary, shared by every backend.

Each backend raises these (or subclasses of them: the in-memory broker's ``BrokerShutdown`` is
both a ``kincir.memory.InMemoryError`` and a ``kincir.BrokerShutdown``), so code that catches
them moves between backends unchanged.
"""

from __future__ import annotations

__all__ = [
    "AckError",
    "BackendError",
    "BrokerShutdown",
    "ConnectionFailed",
    "KincirError",
    "NotSubscribed",
]


class KincirError(Exception):
    """Base class of every error kincir raises on purpose."""

    __module__ = "kincir"


class BrokerShutdown(KincirError):
    """The broker was shut down (or closed): no more publishing, subscribing or receiving."""

    __module__ = "kincir"


class NotSubscribed(KincirError):
    """A receive or unsubscribe on a subscriber without that subscription."""

    __module__ = "kincir"


class AckError(KincirError):
    """An acknowledgement that cannot be applied (settled, unknown or foreign handle)."""

    __module__ = "kincir"


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
