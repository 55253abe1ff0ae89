"""kincir over Redis Streams (``pip install 'kincir[redis]'``, redis-py with asyncio).

A topic is a stream (key ``<prefix>t:<topic>``); a batch is appended by one server-side script
that also advances the topic's sequence counter (``<prefix>s:<topic>``), so a batch is atomic
and sequence numbers are gapless per topic, as in memory. ``max_len`` trims streams
approximately (``XADD MAXLEN ~``): a reader that falls behind loses the oldest messages.

- ``RedisSubscriber(broker)``: reads with ``XREAD`` from the stream's end at ``subscribe``
  time (fan-out: every subscriber sees every message published after it subscribed).
- ``RedisSubscriber(broker, group="g")``: the members share a consumer group
  (``XREADGROUP ... NOACK``); the group is created at the stream's end when first joined and
  stays on the server (``RedisBroker.delete_group``).
- ``RedisAckSubscriber``: ``XREADGROUP`` without NOACK; ``ack`` is ``XACK``. A nack or a missed
  ack deadline marks the entry for reclaiming, and any member takes it over with ``XAUTOCLAIM``
  (so does any member, after ``ack_timeout``, for the entries of a member that died); the
  delivery count is the stream's ``times_delivered``. Without a group, each ack subscriber has a
  private group, destroyed when it closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("kincir.redis needs redis-py: pip install 'kincir[redis]'") from exc

from kincir_core import Message

from .._remote import (
    POLL_SECONDS,
    Delivered,
    RemoteAckHandle,
    RemoteAckSubscriber,
    RemoteBroker,
    RemotePublisher,
    RemoteSubscriber,
    decode_message,
    encode_message,
    guarded,
)
from ..errors import BackendError, ConnectionFailed, KincirError

__all__ = [
    "RedisAckSubscriber",
    "RedisBroker",
    "RedisPublisher",
    "RedisSubscriber",
]

AckHandle = RemoteAckHandle

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

#: ``XCLAIM ... IDLE`` given to a nacked entry: far past any ack timeout, so the next
#: ``XAUTOCLAIM`` of any member takes it.
_RECLAIM_NOW_MS = 10**12


class RedisBroker(RemoteBroker):
    """A connection to one Redis server; ``url`` as redis-py takes it (``redis://host:port/db``).

    Options: ``prefix`` (key prefix, default ``"kincir:"``), ``max_len`` (approximate stream
    capacity, default None: unbounded), ``connect_timeout`` (seconds, default 5),
    ``reconnect_timeout`` (how long a receive keeps retrying a lost connection, default 30),
    ``operation_timeout`` (the longest one call to the server may take, default 30).
    """

    backend = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "kincir:",
        max_len: int | None = None,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            url, reconnect_timeout=reconnect_timeout, operation_timeout=operation_timeout
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


def _decode_entry(topic: str, fields: dict[bytes, bytes]) -> Message:
    raw = fields.get(b"h")
    try:
        headers = json.loads(raw) if raw else {}
        if not isinstance(headers, dict):
            headers = {}
    except ValueError:
        headers = {}
    seq = fields.get(b"s")
    return decode_message(
        fields.get(b"p", b""),
        {str(k): str(v) for k, v in headers.items()},
        topic,
        int(seq) if seq is not None else None,
    )


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisPublisher(RemotePublisher[RedisBroker]):
    """Publishes to Redis streams; ``RedisPublisher(broker)`` or ``RedisPublisher(url)``."""

    broker_type = RedisBroker


class RedisSubscriber(RemoteSubscriber[RedisBroker]):
    """Reads Redis streams: alone (fan-out from its subscription on) or in a consumer group."""

    broker_type = RedisBroker

    def __init__(
        self,
        broker_or_url: RedisBroker | str,
        group: str | None = None,
        *,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker_or_url, group, prefetch=prefetch)
        self._positions: dict[str, bytes | str] = {}  # stream key -> last id read (no group)
        self._consumer = _consumer_name()

    @property
    def _group(self) -> str | None:
        return self.group

    async def _subscribe(self, topic: str) -> None:
        broker = self.broker
        key = broker.stream_key(topic)
        if self._group is None:
            if key not in self._positions:  # a resubscription after a reconnect keeps its place
                last = await broker.client.xrevrange(key, count=1)
                self._positions[key] = last[0][0] if last else b"0-0"
        else:
            try:
                await broker.client.xgroup_create(key, self._group, id="$", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._positions[key] = ">"

    async def _unsubscribe(self, topic: str) -> None:
        self._positions.pop(self.broker.stream_key(topic), None)

    async def _fetch(self, wait: float) -> list[Delivered]:
        block = max(1, int(wait * 1000))
        client = self.broker.client
        try:
            if self._group is None:
                reply = await client.xread(dict(self._positions), count=self.prefetch, block=block)
            else:
                reply = await client.xreadgroup(
                    self._group,
                    self._consumer,
                    dict(self._positions),
                    count=self.prefetch,
                    block=block,
                    noack=not self.acking,
                )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the group is gone (a server restarted without persistence, the stream deleted):
            # make it again, at the stream's end, and read on
            for topic in list(self._topics):
                await self._subscribe(topic)
            return []
        out = []
        for key, entries in reply or ():
            name = _text(key)
            if name not in self._positions:
                continue  # unsubscribed while this read was on its way
            topic = self.broker._topic_of(name)
            for entry_id, fields in entries:
                if self._group is None:
                    self._positions[name] = entry_id
                out.append(Delivered(_decode_entry(topic, fields), (key, entry_id), 1))
        return out


class RedisAckSubscriber(RemoteAckSubscriber[RedisBroker], RedisSubscriber):
    """Acknowledging reader of Redis streams (consumer group, ``XACK``, ``XAUTOCLAIM``)."""

    def _start_acking(self) -> None:
        self._claim_due = 0.0
        self._claim_from: dict[str, str] = {}  # stream key -> XAUTOCLAIM cursor

    @property
    def _group(self) -> str | None:
        return self.group_name

    async def _unsubscribe(self, topic: str) -> None:
        key = self.broker.stream_key(topic)
        self._positions.pop(key, None)
        if self._private is not None:
            await self.broker.client.xgroup_destroy(key, self._private)

    async def _detach(self) -> None:
        # the broker shuts down first: a private group must not outlive it on the server
        if self._private is not None:
            for key in list(self._positions):
                await self.broker.client.xgroup_destroy(key, self._private)

    async def _fetch(self, wait: float) -> list[Delivered]:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._claim_due:
            claimed, more = await self._claim()
            # a scan that has not wrapped around goes on at once; else wait a while
            pause = 0.0 if more else min(POLL_SECONDS, self.ack_timeout / 2)
            self._claim_due = loop.time() + pause
            if claimed:
                return claimed
        return await RedisSubscriber._fetch(self, wait)

    async def _claim(self) -> tuple[list[Delivered], bool]:
        """Take over entries idle past the ack timeout (nacked, late or of a dead member); and
        whether a scan of the pending entries is still under way (``XAUTOCLAIM`` looks at a
        bounded number per call: its cursor is kept per stream)."""
        client = self.broker.client
        group = self._group
        min_idle = max(1, int(self.ack_timeout * 1000))
        out: list[Delivered] = []
        more = False
        for key in list(self._positions):
            room = self.prefetch - len(out)
            if room <= 0:
                more = True
                break
            start = self._claim_from.get(key, "0-0")
            reply = await client.xautoclaim(
                key, group, self._consumer, min_idle, start_id=start, count=room
            )
            cursor = _text(reply[0])
            self._claim_from[key] = cursor
            more = more or cursor != "0-0"
            entries = [e for e in reply[1] if e and e[1] is not None]
            if not entries:
                continue
            async with client.pipeline(transaction=False) as pipe:
                for entry_id, _fields in entries:
                    pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
                pending = await pipe.execute()
            topic = self.broker._topic_of(key)
            for (entry_id, fields), info in zip(entries, pending, strict=True):
                count = int(info[0]["times_delivered"]) if info else 1
                out.append(Delivered(_decode_entry(topic, fields), (key, entry_id), count))
        return out, more

    async def _ack(self, delivered: list[Delivered]) -> None:
        by_key: dict[Any, list[Any]] = {}
        for d in delivered:
            key, entry_id = d.ref
            by_key.setdefault(key, []).append(entry_id)
        for key, ids in by_key.items():
            await self.broker.client.xack(key, self._group, *ids)

    async def _requeue(self, delivered: list[Delivered]) -> None:
        client = self.broker.client
        for d in delivered:
            key, entry_id = d.ref
            await client.xclaim(
                key, self._group, self._consumer, 0, [entry_id], idle=_RECLAIM_NOW_MS, justid=True
            )
        self._claim_due = 0.0
        self._claim_from.clear()

    _release = _requeue
