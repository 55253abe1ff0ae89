"""``RedisAckSubscriber``: ``XACK``, and ``XCLAIM``/``XAUTOCLAIM`` for redeliveries."""

from __future__ import annotations

import asyncio
from typing import Any, overload

from .._remote import POLL_SECONDS, Delivered, P, RemoteAckSubscriber
from ..codecs import Codec
from .broker import RedisBroker, _text
from .subscriber import RedisSubscriber, _decode_entry

__all__ = ["RedisAckSubscriber"]

#: ``XCLAIM ... IDLE`` given to a nacked entry: far past any ack timeout, so the next
#: ``XAUTOCLAIM`` of any member takes it.
_RECLAIM_NOW_MS = 10**12


class RedisAckSubscriber(RemoteAckSubscriber[RedisBroker[Any], P], RedisSubscriber[P]):
    """Acknowledging reader of Redis streams (consumer group, ``XACK``, ``XAUTOCLAIM``)."""

    # The payload type follows the codec: the subscriber's own, else its broker's (bytes for a
    # private broker built from a URL).
    @overload
    def __init__(
        self,
        broker_or_url: RedisBroker[P],
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: None = None,
        prefetch: int = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: RedisAckSubscriber[bytes],
        broker_or_url: str,
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: None = None,
        prefetch: int = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        broker_or_url: RedisBroker[Any] | str,
        group: str | None = None,
        *,
        ack_timeout: float = ...,
        max_deliveries: int | None = ...,
        dead_letter_topic: str | None = None,
        codec: Codec[P],
        prefetch: int = ...,
    ) -> None: ...
    def __init__(
        self,
        broker_or_url: RedisBroker[Any] | str,
        group: str | None = None,
        *,
        ack_timeout: float = 30.0,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
        codec: Codec[Any] | None = None,
        prefetch: int = 1,
    ) -> None:
        super().__init__(
            broker_or_url,
            group,
            ack_timeout=ack_timeout,
            max_deliveries=max_deliveries,
            dead_letter_topic=dead_letter_topic,
            codec=codec,
            prefetch=prefetch,
        )

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
