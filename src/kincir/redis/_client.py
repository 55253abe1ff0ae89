"""The client library, imported once (with the install hint when it is missing)."""

from __future__ import annotations

from .._backends import REDIS

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(REDIS.install_hint) from exc

__all__ = ["aioredis", "redis_errors"]
