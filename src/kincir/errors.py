"""kincir's error vocabulary, shared by every backend.

Each backend raises these (or subclasses of them: the in-memory broker's ``BrokerShutdown`` is
both a ``kincir.memory.InMemoryError`` and a ``kincir.BrokerShutdown``), so code that catches
them moves between backends unchanged.
"""

from __future__ import annotations

# Defined once with the engine, which raises them directly; these are the very same classes.
from kincir_core._errors import BaseAckError as AckError
from kincir_core._errors import BaseBrokerShutdown as BrokerShutdown
from kincir_core._errors import BaseNotSubscribed as NotSubscribed
from kincir_core._errors import KincirError

__all__ = [
    "AckError",
    "BackendError",
    "BrokerShutdown",
    "ConnectionFailed",
    "KincirError",
    "NotSubscribed",
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
