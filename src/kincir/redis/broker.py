"""``RedisBroker``: the connection, the publish script and the topic administration."""

from __future__ import annotations

import json
from typing import Any

from kincir_core import Message

from .._backends import REDIS
from .._remote import POLL_SECONDS, RemoteBroker, encode_message, guarded
from ..codecs import Codec
from ..errors import BackendError, ConnectionFailed, KincirError
from ._client import aioredis, redis_errors

__all__ = ["RedisBroker"]

# KEYS: stream, counter. ARGV: max_len (0: none), then payload, headers per message.
# Returns the first sequence number of the batch.
_PUBLISH = """
local n = (#ARGV - 1) / 2
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n + 1
local maxlen = tonumber(ARGV[1])
for i = 1, n do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      's', first + i - 1, 'p', ARGV[2 * i], 'h', ARGV[2 * i + 1])
  else
    redis.call('XADD', KEYS[1], '*', 's', first + i - 1, 'p', ARGV[2 * i], 'h', ARGV[2 * i + 1])
  end
end
return first
"""


class RedisBroker(RemoteBroker):
    """A connection to one Redis server; ``url`` as redis-py takes it (``redis://host:port/db``).

    Options: ``codec`` (how payloads are encoded and decoded, default ``BytesCodec()``: see
    ``kincir.codecs``; publishers and subscribers may override it), ``prefix`` (key prefix,
    default ``"kincir:"``), ``max_len`` (approximate stream
    capacity, default None: unbounded), ``connect_timeout`` (seconds, default 5),
    ``reconnect_timeout`` (how long a receive keeps retrying a lost connection, default 30),
    ``operation_timeout`` (the longest one call to the server may take, default 30).
    """

    backend = "redis"

    def __init__(
        self,
        url: str = REDIS.default_url,
        *,
        codec: Codec[Any] | None = None,
        prefix: str = "kincir:",
        max_len: int | None = None,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url,
            codec=codec,
            reconnect_timeout=reconnect_timeout,
            operation_timeout=operation_timeout,
        )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if max_len is not None and (type(max_len) is not int or max_len < 1):
            raise ValueError(f"max_len must be an int >= 1 or None, got {max_len!r}")
        self.prefix = prefix
        self.max_len = max_len
        self.connect_timeout = float(connect_timeout)
        self.client: Any = None
        self._script: Any = None

    def stream_key(self, topic: str) -> str:
        return f"{self.prefix}t:{topic}"

    def _topic_of(self, key: str) -> str:
        return key[len(self.prefix) + 2 :]

    def translate(self, exc: Exception) -> KincirError:
        if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
            return ConnectionFailed(self.backend, self.url, exc)
        return BackendError(self.backend, exc)

    async def _connect(self) -> None:
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=POLL_SECONDS + self.connect_timeout,
            decode_responses=False,
        )
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            raise self.translate(exc) from exc
        self.client = client
        self._script = client.register_script(_PUBLISH)

    async def _close(self) -> None:
        await self.client.aclose()

    async def _probe(self) -> None:
        await self.client.ping()

    async def _publish(self, topic: str, messages: list[Message]) -> None:
        args: list[Any] = [self.max_len or 0]
        for msg in messages:
            payload, headers = encode_message(msg)
            args.append(payload)
            args.append(json.dumps(headers, separators=(",", ":")))
        await self._script(keys=[self.stream_key(topic), f"{self.prefix}s:{topic}"], args=args)

    # -- administration -------------------------------------------------------------------

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream, its groups and its sequence counter."""
        await self.connect()
        await guarded(self, self.client.delete(self.stream_key(topic), f"{self.prefix}s:{topic}"))

    async def delete_group(self, topic: str, group: str) -> None:
        """Delete a consumer group (and its pending entries) from a topic."""
        await self.connect()
        await guarded(self, self.client.xgroup_destroy(self.stream_key(topic), group))

    async def list_groups(self, topic: str) -> list[str]:
        """The consumer groups of a topic."""
        await self.connect()
        try:
            groups = await guarded(self, self.client.xinfo_groups(self.stream_key(topic)))
        except BackendError:
            return []
        return sorted(_text(g["name"]) for g in groups)

    async def queue_size(self, topic: str) -> int:
        """Entries the topic's stream holds."""
        await self.connect()
        return int(await guarded(self, self.client.xlen(self.stream_key(topic))))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
