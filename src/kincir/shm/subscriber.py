"""``SharedMemorySubscriber``: receives a shared broker's topics in one process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kincir_core
from kincir_core import Message
from kincir_core._errors import BrokerShutdown, NotSubscribed, TopicClosed
from kincir_core._shm_log import ENDED, OPEN, LogClosed, ShmLog, any_wire_form, wait_any

from .._awaitable import Completed
from .._remote import check_codec, open_message
from .._stats import SubscriberStats
from ..codecs import BytesCodec, Codec
from ..errors import DecodeError
from .broker import STATE_SLICE, SharedMemoryBroker, Topic

__all__ = ["SharedMemorySubscriber"]

_waiters: concurrent.futures.ThreadPoolExecutor | None = None
_waiters_lock = threading.Lock()


def _wait_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads async receives wait in (a wait reads nothing, so a cancelled receive
    loses nothing); their own pool, so that many waiting subscribers do not hold up the
    event loop's default executor."""
    global _waiters
    with _waiters_lock:
        if _waiters is None:
            _waiters = concurrent.futures.ThreadPoolExecutor(64, "kincir-shm-wait")
        return _waiters


class Subscription:
    """One topic as a subscriber reads it: its log and the reader entry it reads through."""

    __slots__ = ("group", "reader", "topic")

    def __init__(self, topic: Topic, reader: int, group: bool) -> None:
        self.topic = topic
        self.reader = reader
        self.group = group


class SharedMemorySubscriber:
    """Receives the messages of one or more topics of a shared broker, in sequence order per
    topic: every plain subscriber gets every message published after it subscribed (fan-out);
    the members of a consumer group (``group=``, in any process) get each message once between
    them.

    Use it from threads (``receive_sync``, ``for msg in sub``) or asyncio (``await
    sub.receive()``, ``async for``). A plain subscriber reads up to ``prefetch`` messages at a
    time into its own buffer (they are its own: nobody else reads its entry); a group member
    takes only what it hands out, so what it has not received stays with the group.
    """

    def __init__(
        self,
        broker: SharedMemoryBroker,
        group: str | None = None,
        *,
        codec: Codec[Any] | None = None,
        prefetch: int = 64,
    ) -> None:
        if not isinstance(broker, SharedMemoryBroker):
            raise TypeError(f"broker must be a SharedMemoryBroker, not {type(broker).__name__}")
        if type(prefetch) is not int or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, not {prefetch!r}")
        self.broker = broker
        #: The consumer group this subscriber is a member of, or None.
        self.group = kincir_core.validate_group_name(group)
        #: How this subscriber decodes payloads.
        self.codec: Codec[Any] = broker.codec if codec is None else check_codec(codec)
        self._raw = type(self.codec) is BytesCodec
        self._prefetch = 1 if group is not None else prefetch
        self._subs: dict[str, Subscription] = {}
        self._order: list[Subscription] = []
        self._next = 0  # where the next poll starts: topics take turns
        self._buffer: deque[Any] = deque()  # Messages, and DecodeErrors in their place
        self._closed = False
        self._hot: ShmLog | None = None  # the log of its one topic, with the bytes codec
        self._received = 0
        self._lagged = 0  # what the topics it left had lost to drop_oldest

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, topic: str) -> Completed[None]:
        """Start receiving ``topic`` (made if no process made it yet): every message published
        after this, and with persistence what was published while it had no reader."""
        kincir_core.validate_topic_name(topic)
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        broker = self.broker
        broker._check_open()
        if topic not in self._subs:
            found = broker._topic(topic)
            if self.group is not None:
                sub = Subscription(found, broker._group_reader(found, self.group), True)
            else:
                sub = Subscription(found, broker._add_reader(found), False)
            self._subs[topic] = sub
            self._order.append(sub)
            self._aim()
        return Completed(None)

    def unsubscribe(self, topic: str | None = None) -> Completed[None]:
        """Stop receiving ``topic`` (or every topic): what this subscriber read ahead of it is
        dropped. NotSubscribed if it was not subscribed. A group's cursor stays: the group's
        other members go on."""
        if topic is None:
            names = list(self._subs)
        else:
            kincir_core.validate_topic_name(topic)
            if topic not in self._subs:
                raise NotSubscribed(f"this subscriber is not subscribed to {topic!r}")
            names = [topic]
        for name in names:
            self._leave(name)
        return Completed(None)

    def _leave(self, name: str) -> None:
        sub = self._subs.pop(name)
        self._order.remove(sub)
        self._aim()
        self._buffer = deque(item for item in self._buffer if _topic_of(item) != name)
        if not self.broker._closing:
            self._lagged += sub.topic.log.lagged(sub.reader)
            if not sub.group:
                self.broker._remove_reader(sub.topic, sub.reader)

    def _aim(self) -> None:
        """Point the hot path at the log of the one topic, if there is one topic and the codec
        is the bytes codec."""
        self._hot = self._order[0].topic.log if len(self._order) == 1 and self._raw else None

    def subscribed_topics(self) -> list[str]:
        """The topics this subscriber receives, in subscription order."""
        return list(self._subs)

    def is_subscribed(self, topic: str) -> bool:
        return topic in self._subs

    def close(self) -> Completed[None]:
        """Leave every topic for good; later receives raise NotSubscribed."""
        if not self._closed:
            self._closed = True
            if not self.broker._segment.closed:
                self.unsubscribe()
        return Completed(None)

    def __del__(self) -> None:
        try:
            if not self._closed and not self.broker._segment.closed:
                self.close()
        except Exception:  # at interpreter exit, or a broken broker: the entry frees itself
            pass

    # -- receiving, the common part -------------------------------------------------------------

    def _poll(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages, decoded, without waiting; [] when there are none. Raises
        BrokerShutdown, TopicClosed for a topic read to its end (which then leaves it), or the
        DecodeError of a message the codec could not read (consumed: the next receive goes on
        after it)."""
        buffer = self._buffer
        if not buffer:
            self._fill(limit)
        elif not self.broker._running():  # forced: what it read ahead is dropped too
            buffer.clear()
            self.broker._check_attached()
            raise self.broker._shut()
        out: list[Message] = []
        while buffer and len(out) < limit:
            item = buffer.popleft()
            if type(item) is not Message:  # a DecodeError in its message's place
                if out:
                    buffer.appendleft(item)
                    break
                self._received += 1
                raise item
            out.append(item)
        self._received += len(out)
        return out

    def _opened(self, raws: list[Message]) -> list[Any]:
        """``raws`` decoded by the codec; a DecodeError stands in for a message it cannot
        read."""
        out: list[Any] = []
        for raw in raws:
            try:
                out.append(open_message(raw, self.codec))
            except DecodeError as error:
                out.append(error)
        return out

    def _fill(self, limit: int) -> None:
        """Read from the subscribed topics, in turns, until one has something."""
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        self.broker._check_attached()
        order = self._order
        if not order:
            raise NotSubscribed("subscribe to a topic before receiving")
        most = max(limit, self._prefetch) if self._prefetch > 1 else limit
        # a log's refusal, looked at before reading: once refused its head is final (refuse
        # takes the writer mutex), so a read after it that finds nothing is the end
        refusals = [sub.topic.log.refusing for sub in order]
        count = len(order)
        start = self._next % count
        for turn in range(count):
            sub = order[(start + turn) % count]
            try:
                got = sub.topic.log.read(sub.reader, most, 0.0)
            except LogClosed:
                raise self.broker._shut() from None
            except ValueError:  # its place removed: this process closed the broker meanwhile
                self.broker._check_attached()
                raise
            if got:
                self._next = start + turn + 1
                self._buffer.extend(
                    got if self._raw and not any_wire_form(got) else self._opened(got)
                )
                return
        for sub, refusing in zip(order, refusals, strict=True):
            if refusing == ENDED:
                name = sub.topic.name
                self._leave(name)
                raise TopicClosed(name, reading=True)
            if refusing != OPEN:
                raise self.broker._shut()

    def _wait(self, seconds: float) -> None:
        """Sleep until a subscribed topic may have something, ``seconds`` at most."""
        order = self._order
        try:
            if len(order) == 1:
                order[0].topic.log.wait(order[0].reader, seconds)
            elif order:
                wait_any([(sub.topic.log, sub.reader) for sub in order], seconds)
        except ValueError:  # this process closed the broker meanwhile: the next look says so
            pass

    def _slice(self, deadline: float | None, seconds: float | None) -> float:
        """How long the next wait may last; TimeoutError past ``deadline``."""
        if deadline is None:
            return STATE_SLICE
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no message arrived within {seconds} seconds")
        return min(left, STATE_SLICE)

    # -- from threads ---------------------------------------------------------------------------

    def try_receive(self) -> Message | None:
        """The next message if there is one now, else None."""
        got = self._poll(1)
        return got[0] if got else None

    def receive_sync(self, timeout: float | None = None) -> Message:
        """Wait for the next message (TimeoutError after ``timeout`` seconds)."""
        hot = self._hot
        if hot is not None:  # the hot path: one topic, bytes
            buffer = self._buffer
            if not buffer:  # read ahead, without waiting
                sub = self._order[0]
                try:
                    got = hot.read(sub.reader, self._prefetch, 0.0)
                except (LogClosed, ValueError):  # stopped, or this handle closed: said below
                    got = None
                if got:
                    buffer.extend(got if not any_wire_form(got) else self._opened(got))
            if buffer and type(buffer[0]) is Message and not hot.stopped:
                self._received += 1
                message: Message = buffer.popleft()
                return message
        return self.receive_batch_sync(1, timeout)[0]

    def receive_batch_sync(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Wait for at least one message; return up to ``max_messages``."""
        _check_batch(max_messages)
        seconds = kincir_core.check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            got = self._poll(max_messages)
            if got:
                return got
            self._wait(self._slice(deadline, seconds))

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        """The next message; the iteration ends at shutdown or when a topic ends."""
        try:
            return self.receive_sync()
        except (BrokerShutdown, TopicClosed, NotSubscribed):
            raise StopIteration from None

    # -- from asyncio ---------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Message:
        """Wait for the next message without blocking the event loop."""
        return (await self.receive_batch(1, timeout))[0]

    async def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Wait for at least one message; return up to ``max_messages``."""
        _check_batch(max_messages)
        seconds = kincir_core.check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        loop = asyncio.get_running_loop()
        while True:
            got = self._poll(max_messages)
            if got:
                return got
            await loop.run_in_executor(_wait_pool(), self._wait, self._slice(deadline, seconds))

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except (BrokerShutdown, TopicClosed, NotSubscribed):
            raise StopAsyncIteration from None

    # -- the rest -------------------------------------------------------------------------------

    def messages_lagged(self) -> int:
        """Messages ``drop_oldest`` moved this subscriber past since it was made, on the
        topics it reads and those it left (a group's count is its members' together)."""
        if self.broker._closing:
            return self._lagged
        return self._lagged + sum(sub.topic.log.lagged(sub.reader) for sub in self._order)

    def stats(self) -> SubscriberStats:
        """This subscriber's own counts."""
        return SubscriberStats(received=self._received, lagged=self.messages_lagged())

    def is_connected(self) -> bool:
        return not self._closed and not self.broker.is_shutdown()

    def __enter__(self) -> SharedMemorySubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SharedMemorySubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        group = "" if self.group is None else f", group={self.group!r}"
        return f"SharedMemorySubscriber({self.broker!r}{group}, topics={list(self._subs)!r})"


def _topic_of(item: Any) -> str | None:
    """The topic of a buffered message, or of the message a buffered DecodeError stands for."""
    message = item.message if isinstance(item, DecodeError) else item
    topic: str | None = message.topic
    return topic


def _check_batch(max_messages: Any) -> None:
    if type(max_messages) is not int:
        raise TypeError(f"max_messages must be int, not {type(max_messages).__name__}")
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, not {max_messages}")
