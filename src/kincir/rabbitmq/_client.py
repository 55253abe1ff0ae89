"""The client library, imported once (with the install hint when it is missing)."""

from __future__ import annotations

from .._backends import RABBITMQ

try:
    import aio_pika
    import aiormq
    from aio_pika.abc import AbstractIncomingMessage
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(RABBITMQ.install_hint) from exc

__all__ = ["AbstractIncomingMessage", "aio_pika", "aiormq"]
