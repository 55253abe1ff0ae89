"""``RedisSubscriber``: ``XREAD`` alone, ``XREADGROUP`` in a consumer group."""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any, overload

from kincir_core import Message

from .._remote import Delivered, P, RemoteSubscriber, decode_message
from ..codecs import Codec
from ._client import redis_errors
from .broker import RedisBroker, _text

__all__ = ["RedisSubscriber"]


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
