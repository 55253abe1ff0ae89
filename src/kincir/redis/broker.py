"""``RedisBroker``: the connection, the publish script and the topic administration."""

from __future__ import annotations

import asyncio
import json
from typing import Any, overload

from kincir_core import Message

from .._backends import REDIS
from .._remote import POLL_SECONDS, P, RemoteBroker, encode_message, guarded
from ..codecs import Codec
from ..errors import BackendError, ConnectionFailed, KincirError, TopicClosed
from ._client import aioredis, redis_errors

__all__ = ["RedisBroker"]

# KEYS: stream, counter, end mark. ARGV: max_len (0: none), dead letters (1) or not (0), then
# payload, headers per message. Returns the first sequence number of the batch, or 0 if the
# topic is closed (nothing written). A closed topic takes dead letters: the end moves past them.
_PUBLISH = """
local closed = redis.call('EXISTS', KEYS[3]) == 1
if closed and ARGV[2] == '0' then
  return 0
end
local n = (#ARGV - 2) / 2
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n + 1
local maxlen = tonumber(ARGV[1])
local id
for i = 1, n do
  local payload, headers = ARGV[2 * i + 1], ARGV[2 * i + 2]
  if maxlen > 0 then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      's', first + i - 1, 'p', payload, 'h', headers)
  else
    id = redis.call('XADD', KEYS[1], '*', 's', first + i - 1, 'p', payload, 'h', headers)
  end
end
if closed then
  redis.call('SET', KEYS[3], id)
end
return first
"""

# KEYS: stream, end mark. Records the stream's last entry id ("0-0" if it has none) as its end,
# unless it has one already; returns the end. Atomic with _PUBLISH: each batch lands before it
# or is refused.
_CLOSE = """
local done = redis.call('GET', KEYS[2])
if done then
  return done
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then
  id = last[1][1]
end
redis.call('SET', KEYS[2], id)
return id
"""

#: How often ``join_async`` looks at the groups of a stream.
JOIN_POLL_SECONDS = 0.05


class RedisBroker(RemoteBroker[P]):
    """A connection to one Redis server; ``url`` as redis-py takes it (``redis://host:port/db``).

    Options: ``codec`` (how payloads are encoded and decoded, default ``BytesCodec()``: see
    ``kincir.codecs``; publishers and subscribers may override it), ``prefix`` (key prefix,
    default ``"kincir:"``), ``max_len`` (approximate stream
    capacity, default None: unbounded), ``connect_timeout`` (seconds, default 5),
    ``reconnect_timeout`` (how long a receive keeps retrying a lost connection, default 30),
    ``operation_timeout`` (the longest one call to the server may take, default 30).
    """

    backend = "redis"

    @overload
    def __init__(
        self: RedisBroker[bytes],
        url: str = ...,
        *,
        codec: None = None,
        prefix: str = ...,
        max_len: int | None = None,
        connect_timeout: float = ...,
        reconnect_timeout: float = ...,
        operation_timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        url: str = ...,
        *,
        codec: Codec[P],
        prefix: str = ...,
        max_len: int | None = None,
        connect_timeout: float = ...,
        reconnect_timeout: float = ...,
        operation_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        url: str = REDIS.default_url,
        *,
        codec: Codec[P] | None = None,
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
        self._close_script: Any = None

    def stream_key(self, topic: str) -> str:
        return f"{self.prefix}t:{topic}"

    def end_key(self, topic: str) -> str:
        """The key holding the stream's end (its last entry id) once the topic is closed."""
        return f"{self.prefix}e:{topic}"

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
        self._close_script = client.register_script(_CLOSE)

    async def _close(self) -> None:
        await self.client.aclose()

    async def _probe(self) -> None:
        await self.client.ping()

    async def _publish(self, topic: str, messages: list[Message]) -> None:
        await self._append(topic, messages, dead_letters=False)

    async def _publish_dead_letters(self, topic: str, messages: list[Message]) -> None:
        await self._append(topic, messages, dead_letters=True)

    async def _append(self, topic: str, messages: list[Message], *, dead_letters: bool) -> None:
        args: list[Any] = [self.max_len or 0, 1 if dead_letters else 0]
        for msg in messages:
            payload, headers = encode_message(msg)
            args.append(payload)
            args.append(json.dumps(headers, separators=(",", ":")))
        keys = [self.stream_key(topic), f"{self.prefix}s:{topic}", self.end_key(topic)]
        if not await self._script(keys=keys, args=args):
            raise TopicClosed(topic)

    async def _close_topic(self, topic: str) -> None:
        await self._close_script(keys=[self.stream_key(topic), self.end_key(topic)])

    async def _join(self, topic: str) -> None:
        # plain readers (XREAD) leave no trace on the server: only the groups can be waited for
        key = self.stream_key(topic)
        last = await guarded(self, self.client.xrevrange(key, count=1))
        if not last:
            return
        mark = stream_id(last[0][0])
        while True:
            groups = await guarded(self, self._groups(key))
            if groups is None:
                return  # the topic was deleted: nothing is left to settle
            if all(
                stream_id(g["last-delivered-id"]) >= mark and int(g["pending"]) == 0 for g in groups
            ):
                return
            await asyncio.sleep(JOIN_POLL_SECONDS)

    async def _groups(self, key: str) -> list[dict[str, Any]] | None:
        """``XINFO GROUPS`` of a stream; None if there is no such stream."""
        try:
            return list(await self.client.xinfo_groups(key))
        except redis_errors.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise

    # -- administration -------------------------------------------------------------------

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream, its groups, its sequence counter and its end (a closed
        topic starts afresh)."""
        await self.connect()
        keys = (self.stream_key(topic), f"{self.prefix}s:{topic}", self.end_key(topic))
        await guarded(self, self.client.delete(*keys))

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


def stream_id(value: Any) -> tuple[int, int]:
    """A stream entry id (``b"1700000000000-3"``) as a pair that compares in stream order."""
    millis, _, seq = _text(value).partition("-")
    return int(millis), int(seq or 0)
