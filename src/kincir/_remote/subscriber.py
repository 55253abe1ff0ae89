"""``RemoteSubscriber``: subscriptions, the local fetch buffer shared by concurrent receives,
and the reconnect loop after a lost connection; ``Delivered``, a fetched message."""

from __future__ import annotations

import abc
import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, cast

import kincir_core
from kincir_core import Message

if TYPE_CHECKING:
    from typing import Self

from .._stats import SubscriberStats
from ..codecs import Codec
from ..errors import BrokerShutdown, ConnectionFailed, DecodeError, NotSubscribed, TopicClosed
from .connection import B, P, RemoteBroker, guarded, resolve_broker
from .envelope import check_codec, open_message

__all__ = ["POLL_SECONDS", "Delivered", "RemoteSubscriber"]

#: Longest single wait on the server: a receive re-checks close/unsubscribe at least this often.
POLL_SECONDS = 0.5


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a fetch task's error as seen: the receives awaiting it got it (or were cancelled)."""
    if not task.cancelled():
        task.exception()


class RemoteSubscriber(abc.ABC, Generic[B, P]):
    """Receives the topics it subscribed to; ``group`` shares each message among its members.

    Messages are fetched from the server in batches of ``prefetch`` into a local buffer: 64 by
    default for a subscriber alone, 1 for a group member (what a member fetched and did not hand
    out yet is lost to its group if it closes, on the engines that count a fetch as a delivery);
    a plain subscriber sees every message published after its ``subscribe`` returned.

    ``codec`` decodes the payloads (default: the broker's codec). A message it cannot decode
    raises ``DecodeError`` from the receive that reaches it, and is consumed: the next receive
    goes on with the next message. ``receive_batch`` stops before such a message (returning the
    ones before it), so the next call raises for it.
    """

    broker_type: ClassVar[type[RemoteBroker]]
    acking: ClassVar[bool] = False

    def __init__(
        self,
        broker_or_url: B | str,
        group: str | None = None,
        *,
        codec: Codec[Any] | None = None,
        prefetch: int | None = None,
    ) -> None:
        if group is not None:
            if not isinstance(group, str):
                raise TypeError(f"group must be str or None, not {type(group).__name__}")
            kincir_core.validate_topic_name(group)
        if prefetch is None:
            prefetch = 64 if group is None else 1
        if type(prefetch) is not int or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        self.broker: B
        self.broker, self._owns_broker = resolve_broker(self.broker_type, broker_or_url)  # type: ignore[arg-type]
        self.group = group
        self.prefetch = prefetch
        #: How this subscriber decodes payloads.
        self.codec: Codec[P] = cast(
            "Codec[P]", self.broker.codec if codec is None else check_codec(codec)
        )
        self._topics: dict[str, None] = {}
        self._buffer: deque[Delivered] = deque()
        self._closed = False
        self._filling: asyncio.Future[None] | None = None
        #: whether handing a message out settles it on the server (``_ack``)
        self._settles = type(self)._ack is not RemoteSubscriber._ack
        # its own counts (stats()); the ack subscriber counts its settles
        self._received = self._redelivered = self._acked = self._nacked = 0
        self._dead_lettered = 0
        self.broker._subscribers.add(self)
        self._start()

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic``: every message published after this returns."""
        kincir_core.validate_topic_name(topic)
        self._check_open()
        await self.broker.connect()
        if topic not in self._topics:
            await guarded(self.broker, self._subscribe(topic))
            self._topics[topic] = None

    async def unsubscribe(self, topic: str | None = None) -> None:
        """Stop receiving ``topic`` (or every topic); NotSubscribed if it was not subscribed."""
        if topic is None:
            topics = list(self._topics)
        else:
            kincir_core.validate_topic_name(topic)
            if topic not in self._topics:
                raise NotSubscribed(f"not subscribed to {topic!r}")
            topics = [topic]
        for name in topics:
            del self._topics[name]
            kept = [d for d in self._buffer if d.message.topic != name]
            dropped = [d for d in self._buffer if d.message.topic == name and not d.settled]
            self._buffer = deque(kept)
            dropped += self._forget(name)
            if not self.broker.is_shutdown():
                if dropped:
                    await guarded(self.broker, self._release(dropped))
                await guarded(self.broker, self._unsubscribe(name))

    def _forget(self, topic: str) -> list[Delivered]:
        """What this subscriber holds of ``topic`` besides its buffer (the ack subscriber's
        in-flight deliveries), given up as it unsubscribes."""
        return []

    def subscribed_topics(self) -> list[str]:
        """The topics this subscriber receives, in subscription order."""
        return list(self._topics)

    def is_subscribed(self, topic: str) -> bool:
        return topic in self._topics

    def is_connected(self) -> bool:
        return not (self._closed or self.broker.is_shutdown())

    def stats(self) -> SubscriberStats:
        """This subscriber's own counts (a plain subscriber's acknowledgement counts are 0)."""
        return SubscriberStats(
            received=self._received,
            acked=self._acked,
            nacked=self._nacked,
            redelivered=self._redelivered,
            dead_lettered=self._dead_lettered,
        )

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Message[P]:
        """Wait for the next message (TimeoutError after ``timeout`` seconds); DecodeError if
        the codec cannot decode it (the next receive goes on after it)."""
        return (await self._take(1, timeout))[0]

    async def receive_batch(
        self, max_messages: int, timeout: float | None = None
    ) -> list[Message[P]]:
        """Wait for at least one message, then return up to ``max_messages`` ready ones; the
        batch ends before a message the codec cannot decode (DecodeError if it is the first)."""
        if type(max_messages) is not int or max_messages < 1:
            raise ValueError(f"max_messages must be an int >= 1, got {max_messages!r}")
        return await self._take(max_messages, timeout)

    def _hand_out(self, delivered: Delivered) -> Message[P]:
        """``delivered`` decoded for the user (once: the outcome is kept); DecodeError if not."""
        opened = delivered.opened
        if opened is None:
            try:
                opened = open_message(delivered.message, self.codec)
            except DecodeError as exc:
                opened = exc
            delivered.opened = opened
        if isinstance(opened, DecodeError):
            raise opened
        return opened

    def _decodable(self, most: int) -> tuple[list[Delivered], DecodeError | None]:
        """The decodable messages at the head of the buffer, up to ``most``; if the head itself
        is not decodable, none and its DecodeError."""
        batch: list[Delivered] = []
        for d in itertools.islice(self._buffer, most):
            try:
                self._hand_out(d)
            except DecodeError as exc:
                return batch, (None if batch else exc)
            batch.append(d)
        return batch, None

    @property
    def _skips_undecodable(self) -> bool:
        """Whether an undecodable message is put aside without raising (dead-lettered)."""
        return False

    async def _settle_undecodable(self, delivered: Delivered, error: DecodeError) -> None:
        """Settle an undecodable message on the server (where handing out settles): it is never
        delivered again, to anyone of the group."""
        if self._settles:
            await guarded(self.broker, self._ack([delivered]))

    async def _take(self, most: int, timeout: float | None) -> list[Message[P]]:
        """Hand out up to ``most`` decoded messages from the head of the buffer (waiting for one).

        Where handing out settles a message on the server, it is settled first and taken from
        the buffer after: a receive cancelled during the settling leaves it (marked settled) at
        the head for the next receive, instead of losing it.
        """
        seconds = kincir_core.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await self._next(left, take=False)
            batch, error = self._decodable(most)
            if error is not None:
                head = self._buffer[0]
                if not head.settled:
                    head.settled = True
                    await asyncio.shield(self._settle_undecodable(head, error))
                if self._buffer and self._buffer[0] is head:
                    self._buffer.popleft()
                    if not self._skips_undecodable:
                        raise error
                continue  # dead-lettered, or a concurrent receive took it meanwhile
            if self._settles:
                fresh = [d for d in batch if not d.settled]
                for d in fresh:
                    d.settled = True
                if fresh:
                    await asyncio.shield(guarded(self.broker, self._ack(fresh)))
            taken: list[Message[P]] = []
            while self._buffer and len(taken) < len(batch) and self._buffer[0] is batch[len(taken)]:
                taken.append(self._hand_out(self._buffer.popleft()))
            if taken:  # else a concurrent receive took them meanwhile: look again
                self._received += len(taken)
                self._redelivered += sum(1 for d in batch[: len(taken)] if d.count > 1)
                if self.acking:  # an acknowledging subscriber's plain receive acks them
                    self._acked += len(taken)
                return taken

    def __aiter__(self) -> AsyncIterator[Message[P]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message[P]]:
        while True:
            try:
                yield await self.receive()
            except (BrokerShutdown, TopicClosed):
                return

    async def close(self) -> None:
        """Unsubscribe from everything (releasing what was fetched) and close an owned broker."""
        if self._closed:
            return
        try:
            if not self.broker.is_shutdown():
                await self.unsubscribe()
        finally:
            self._closed = True
            if self._owns_broker:
                await self.broker.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerShutdown("this subscriber is closed")
        self.broker.check_open()

    async def _next(self, timeout: float | None, take: bool = True) -> Delivered:
        """The message at the head of the buffer once there is one (removed if ``take``)."""
        seconds = kincir_core.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        asked = False  # a receive asks the server at least once, even with timeout=0
        while True:
            self._check_open()
            if not self._topics:
                raise NotSubscribed("subscribe to a topic before receiving")
            await self._before_fetch()
            if self._buffer:
                return self._buffer.popleft() if take else self._buffer[0]
            wait = POLL_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    if asked:
                        raise TimeoutError(f"no message arrived within {seconds} seconds")
                    wait = 0.001
            asked = True
            try:
                await self._fill(wait)
            except ConnectionFailed:
                await self._reconnect(deadline)

    async def _fill(self, wait: float) -> None:
        """Fetch into the buffer, in one task per subscriber that a cancelled receive does not
        cancel: what the server handed over is never dropped, and concurrent receives on one
        subscriber share the fetch rather than reading the same positions twice."""
        task = self._filling
        if task is None:
            task = self._filling = asyncio.ensure_future(self._fill_once(wait))
            task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def _fill_once(self, wait: float) -> None:
        try:
            fetched = await guarded(self.broker, self._fetch(wait))
            self._buffer.extend(await self._admit(fetched))
        finally:
            self._filling = None

    async def _reconnect(self, deadline: float | None) -> None:
        """After a lost connection: retry (backing off) until the server answers and the
        subscriptions are restored; ConnectionFailed after ``reconnect_timeout``, or
        TimeoutError at the receive's own deadline."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.broker.reconnect_timeout
        pause = 0.05
        while True:
            self._check_open()
            try:
                await guarded(self.broker, self.broker._probe())
                for topic in self._topics:
                    await guarded(self.broker, self._subscribe(topic))
                return
            except ConnectionFailed:
                if loop.time() + pause > give_up:
                    raise
            if deadline is not None and loop.time() + pause > deadline:
                raise TimeoutError("no message arrived within the timeout (reconnecting)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _before_fetch(self) -> None:
        """Called before each look at the buffer (the ack subscriber expires deadlines here)."""

    async def _admit(self, fetched: list[Delivered]) -> list[Delivered]:
        return fetched

    def __repr__(self) -> str:
        group = "" if self.group is None else f", group={self.group!r}"
        return f"{type(self).__name__}({self.broker!r}{group}, topics={list(self._topics)})"

    # -- what a backend implements -------------------------------------------------------------

    def _start(self) -> None:
        """Set up the backend's own state of a new subscriber (the last step of ``__init__``)."""

    @abc.abstractmethod
    async def _subscribe(self, topic: str) -> None:
        """Start reading ``topic`` (from now on, or the group's position)."""

    @abc.abstractmethod
    async def _unsubscribe(self, topic: str) -> None:
        """Stop reading ``topic``."""

    @abc.abstractmethod
    async def _fetch(self, wait: float) -> list[Delivered]:
        """Up to ``prefetch`` messages of the subscribed topics, waiting up to ``wait`` seconds
        for the first; [] if none came."""

    async def _detach(self) -> None:
        """The broker is shutting down: release what this subscriber holds on its own (its
        connections or consumers; what it shares with the broker closes with the broker)."""

    async def _ack(self, delivered: list[Delivered]) -> None:
        """Settle ``delivered`` as processed: called when a plain receive hands them out (and by
        an acknowledging subscriber's ``ack``). Nothing to do where a fetch settles them."""

    async def _release(self, delivered: list[Delivered]) -> None:
        """Give back fetched, never handed out messages (acknowledging backends redeliver)."""


class Delivered:
    """A fetched message (its wire form: encoded payload, content type in its metadata) with
    the backend's reference to it and its delivery count."""

    __slots__ = ("count", "message", "opened", "ref", "settled")

    def __init__(self, message: Message, ref: Any = None, count: int = 1) -> None:
        self.message = message
        self.ref = ref
        self.count = count
        self.settled = False  # acked on the server as a plain receive handed it out
        #: the message decoded for the user, or why it cannot be (None: not tried yet)
        self.opened: Message | DecodeError | None = None
