"""``RedisSubscriber``: ``XREAD`` alone, ``XREADGROUP`` in a consumer group; the end of a
closed topic's stream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from typing import Any, overload

from kincir_core import Message

from .._remote import Delivered, P, RemoteSubscriber, decode_message
from ..codecs import Codec
from ..errors import TopicClosed
from ._client import redis_errors
from .broker import RedisBroker, _text, stream_id

__all__ = ["RedisSubscriber"]

#: Between two looks at a closed stream whose end this reader has not reached yet (an
#: acknowledging group with entries still pending): the reads there do not block.
_END_POLL_SECONDS = 0.05


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


class RedisSubscriber(RemoteSubscriber[RedisBroker[Any], P]):
    """Reads Redis streams: alone (fan-out from its subscription on) or in a consumer group."""

    broker_type = RedisBroker

    # The payload type follows the codec: the subscriber's own, else its broker's (bytes for a
    # private broker built from a URL).
    @overload
    def __init__(
        self,
        broker_or_url: RedisBroker[P],
        group: str | None = None,
        *,
        codec: None = None,
        prefetch: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: RedisSubscriber[bytes],
        broker_or_url: str,
        group: str | None = None,
        *,
        codec: None = None,
        prefetch: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self,
        broker_or_url: RedisBroker[Any] | str,
        group: str | None = None,
        *,
        codec: Codec[P],
        prefetch: int | None = None,
    ) -> None: ...
    def __init__(
        self,
        broker_or_url: RedisBroker[Any] | str,
        group: str | None = None,
        *,
        codec: Codec[Any] | None = None,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker_or_url, group, codec=codec, prefetch=prefetch)

    def _start(self) -> None:
        self._positions: dict[str, bytes | str] = {}  # stream key -> last id read (no group)
        self._ends: dict[str, tuple[int, int]] = {}  # stream key -> its end, once closed
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
        key = self.broker.stream_key(topic)
        self._positions.pop(key, None)
        self._ends.pop(key, None)

    async def _fetch(self, wait: float) -> list[Delivered]:
        # once every stream read is known closed, reads do not block: the end is near
        ending = bool(self._positions) and all(key in self._ends for key in self._positions)
        block = None if ending else max(1, int(wait * 1000))
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
        if not out:
            ended = await self._ended()
            if ended is not None:
                raise TopicClosed(ended, reading=True)
            if ending:
                await asyncio.sleep(min(wait, _END_POLL_SECONDS))
        return out

    async def _ended(self) -> str | None:
        """The first topic read if every stream read was closed and this reader is past its
        end, else None. Past the end: alone, by its own position; in a group, by the group's
        last delivered id with, for an acknowledging group, no entry pending (one could still
        be redelivered to this member)."""
        keys = list(self._positions)
        if not keys:
            return None
        broker = self.broker
        marks = await broker.client.mget([broker.end_key(broker._topic_of(k)) for k in keys])
        for key, mark in zip(keys, marks, strict=True):
            if mark is None:
                self._ends.pop(key, None)
            else:
                self._ends[key] = stream_id(mark)
        if any(key not in self._ends for key in keys):
            return None
        for key in keys:
            if self._group is None:
                if stream_id(self._positions[key]) < self._ends[key]:
                    return None
                continue
            groups = await broker._groups(key) or []
            mine = [g for g in groups if _text(g["name"]) == self._group]
            if not mine or stream_id(mine[0]["last-delivered-id"]) < self._ends[key]:
                return None
            if self.acking and int(mine[0]["pending"]) > 0:
                return None
        return broker._topic_of(keys[0])
