"""``SharedMemoryBroker``: one process's handle on a broker that several processes share."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import weakref
from typing import Any, Literal

import kincir_core
from kincir_core._errors import (
    BrokerShutdown,
    InvalidTopicName,
    MaxSubscribersReached,
    MaxTopicsReached,
    TopicNotFound,
)
from kincir_core._segment import Segment, SegmentIncompatible
from kincir_core._shm_log import DROP_NEWEST, DROP_OLDEST, ENDED, WAIT, LogFull, ShmLog

from .._awaitable import Completed
from .._remote import check_codec
from ..codecs import BytesCodec, Codec
from ._directory import (
    CLOSED,
    DRAINING,
    GROUP_NAME_LIMIT,
    OPEN,
    STOPPED,
    TOPIC_NAME_LIMIT,
    Directory,
    Geometry,
)
from ._directory import STATE_AT as _STATE_AT

__all__ = ["OVERFLOW_POLICIES", "SharedMemoryBroker", "SharedTopicInfo"]

SharedOverflow = Literal["block", "error", "drop_oldest", "drop_newest"]
#: What a publish to a full topic does: wait for room (up to its timeout), raise QueueFull at
#: once, make room by moving the slowest readers past the oldest messages, or drop what does
#: not fit.
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "error", "drop_oldest", "drop_newest")
_ERROR = 3  # "error" in the segment: WAIT without waiting
_OVERFLOW_CODES = {
    "block": WAIT,
    "error": _ERROR,
    "drop_oldest": DROP_OLDEST,
    "drop_newest": DROP_NEWEST,
}
#: Longest a wait sleeps before it looks at the broker's state again (a shutdown wakes it
#: sooner: this bounds only a wake lost to a process killed while shutting down).
STATE_SLICE = 0.1


@dataclasses.dataclass(frozen=True)
class SharedTopicInfo:
    """A topic's state, as every process sees it."""

    name: str
    #: Messages published to it (its next sequence number is ``published + 1``).
    published: int
    #: Messages some reader (or, with persistence, the next reader to join) has not read yet.
    held: int
    #: Reader entries taken: plain subscribers and consumer groups.
    readers: int
    #: Messages ``drop_newest`` publishes dropped.
    dropped: int
    #: Ended by ``close_topic``.
    closed: bool
    #: Reader places freed because their process ended without leaving.
    freed_readers: int
    #: Messages the ring holds at most.
    capacity: int


class Topic:
    """A topic as this process uses it: its index in the directory and its log."""

    __slots__ = ("index", "log", "name")

    def __init__(self, name: str, index: int, log: ShmLog) -> None:
        self.name = name
        self.index = index
        self.log = log


def _encoded(name: str, limit: int, what: str) -> bytes:
    data = name.encode()
    if len(data) > limit:
        if what == "topic":
            raise InvalidTopicName(name, f"longer than {limit} bytes in UTF-8 (shared memory)")
        raise ValueError(f"a {what} name takes at most {limit} bytes in UTF-8, not {len(data)}")
    return data


def _check_count(field: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int:
        raise TypeError(f"{field} must be int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{field} must be between {low} and {high}, not {value}")
    return value


def _attach(name: str, codec: Codec[Any]) -> SharedMemoryBroker:
    return SharedMemoryBroker(name, create=False, codec=codec)


class SharedMemoryBroker:
    """A broker in a named shared-memory segment: topics, fan-out and consumer groups that
    every process attached to it shares (Linux).

    ``create=True`` makes the segment (``SegmentExists`` if a live process uses that name;
    one every user abandoned is replaced); ``create=False`` attaches to it
    (``SegmentNotFound``). The geometry is the creator's: ``topics`` and ``groups`` bound the
    tables, each topic is a ring of ``slots`` records (a power of two) of ``slot_size`` bytes
    (40 of them the record's header; a message's metadata counts too), read by at most
    ``max_readers`` subscribers and groups. ``overflow`` says what a publish to a full ring
    does; ``persistence`` keeps what is published while a topic has no reader for the first
    to join. ``codec`` is this process's (payloads are bytes by default).

    Pickles by name: a worker process that unpickles it attaches to the same segment. Each
    process ``close``s its own handle (or uses ``with``); the segment goes when its last user
    closes it, or dies. ``shutdown`` and ``force_shutdown`` stop the broker for every process.
    """

    def __init__(
        self,
        name: str,
        *,
        create: bool = True,
        topics: int = 64,
        groups: int = 256,
        slots: int = 1024,
        slot_size: int = 256,
        max_readers: int = 64,
        overflow: SharedOverflow = "block",
        persistence: bool = True,
        codec: Codec[Any] | None = None,
    ) -> None:
        self.codec: Codec[Any] = BytesCodec() if codec is None else check_codec(codec)
        self._lock = threading.Lock()
        self._topics: dict[str, Topic] = {}
        self._groups: dict[tuple[str, str], int] = {}
        # the plain readers made through this handle, each with the process that made it (a
        # forked child inherits the handle, not its parent's readers)
        self._readers: dict[tuple[Topic, int], int] = {}
        self._closing = False  # close() has begun: everything here refuses from then on
        if create:
            geometry = self._geometry(topics, groups, slots, slot_size, max_readers, overflow)
            geometry = dataclasses.replace(geometry, persistence=bool(persistence))
            self._segment = Segment.create(
                name,
                geometry.segment_size,
                lambda buffer: Directory.lay_out(buffer, geometry).release(),
            )
        else:
            self._segment = Segment.attach(name)
            found = Directory.read_geometry(self._segment.buffer)
            if found is None or found.segment_size != self._segment.size:
                self._segment.close()
                raise SegmentIncompatible(name, "not a kincir broker of this version")
            geometry = found
        self.name = name
        self.geometry = geometry
        self._directory = Directory(self._segment.buffer, geometry)
        self._closer = weakref.finalize(
            self, _close, self._directory, self._topics, self._readers, self._segment
        )

    @staticmethod
    def _geometry(
        topics: int, groups: int, slots: int, slot_size: int, max_readers: int, overflow: Any
    ) -> Geometry:
        _check_count("topics", topics, 1, 1 << 16)
        _check_count("groups", groups, 0, 1 << 16)
        _check_count("slots", slots, 2, 1 << 30)
        if slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots}")
        _check_count("slot_size", slot_size, 64, 1 << 30)
        if slot_size % 8:
            raise ValueError(f"slot_size must be a multiple of 8, not {slot_size}")
        _check_count("max_readers", max_readers, 1, 1 << 16)
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}"
            )
        return Geometry(
            topics, groups, slots, slot_size, max_readers, _OVERFLOW_CODES[overflow], True
        )

    # -- what the publishers and subscribers use ------------------------------------------------

    @property
    def overflow(self) -> str:
        """The overflow policy every process of this broker applies."""
        return next(k for k, v in _OVERFLOW_CODES.items() if v == self.geometry.overflow)

    def _topic(self, name: str, create: bool = True) -> Topic:
        """Topic ``name`` (made if ``create``); TopicNotFound, MaxTopicsReached."""
        topic = self._topics.get(name)
        if topic is not None:
            return topic
        kincir_core.validate_topic_name(name)
        data = _encoded(name, TOPIC_NAME_LIMIT, "topic")
        with self._lock:
            self._check_attached()
            topic = self._topics.get(name)
            if topic is not None:
                return topic
            try:
                index = self._directory.topic(data, create)
            except LookupError:
                raise MaxTopicsReached(self.geometry.max_topics) from None
            if index is None:
                raise TopicNotFound(name)
            topic = self._topics[name] = Topic(name, index, self._directory.open_log(index, name))
            return topic

    def _group_reader(self, topic: Topic, group: str) -> int:
        key = (topic.name, group)
        reader = self._groups.get(key)
        if reader is None:
            data = _encoded(group, GROUP_NAME_LIMIT, "group")
            try:
                reader = self._directory.group(topic.index, data, topic.log)
            except LookupError:
                raise MaxSubscribersReached(topic.name, self.geometry.max_groups) from None
            except LogFull:
                raise MaxSubscribersReached(topic.name, self.geometry.max_readers) from None
            self._groups[key] = reader
        return reader

    def _add_reader(self, topic: Topic) -> int:
        try:
            reader = topic.log.add_reader(keep=self.geometry.persistence)
        except LogFull:
            raise MaxSubscribersReached(topic.name, self.geometry.max_readers) from None
        self._readers[(topic, reader)] = os.getpid()
        return reader

    def _remove_reader(self, topic: Topic, reader: int) -> None:
        if self._readers.pop((topic, reader), None) == os.getpid() and not self._segment.closed:
            topic.log.remove_reader(reader)

    def _check_open(self) -> None:
        """BrokerShutdown once shut down (by any process), or once closed here."""
        self._check_attached()
        if self._directory.state != OPEN:
            raise self._shut()

    def _running(self) -> bool:
        """Not force-shut down (by any process), and this handle not closed."""
        try:
            return self._directory.words.load(_STATE_AT) != STOPPED and not self._closing
        except ValueError:  # released: this handle is closed
            return False

    def _shut(self) -> BrokerShutdown:
        """The error of a call the broker refuses because it is shut down."""
        return BrokerShutdown(f"shared broker {self.name!r} is shut down")

    def _check_attached(self) -> None:
        if self._closing:
            raise BrokerShutdown(f"this process closed its handle on shared broker {self.name!r}")

    @property
    def state(self) -> int:
        return STOPPED if self._closing else self._directory.state

    # -- the broker's own API -------------------------------------------------------------------

    def topics(self) -> list[str]:
        """The names of the topics made so far, by any process."""
        self._check_attached()
        return self._directory.topic_names()

    def topic_info(self, name: str) -> SharedTopicInfo:
        """Topic ``name``'s state; TopicNotFound if no process made it."""
        topic = self._topic(name, create=False)
        log = topic.log
        head = log.head
        return SharedTopicInfo(
            name=name,
            published=head - 1,
            held=head - log.settled(self.geometry.persistence),
            readers=log.reader_count(),
            dropped=log.dropped,
            closed=self._directory.topic_state(topic.index) == CLOSED,
            freed_readers=log.freed,
            capacity=log.slots,
        )

    def close_topic(self, topic: str) -> Completed[None]:
        """End ``topic`` for writing, for every process: publishes to it raise TopicClosed, and
        its readers end (TopicClosed with ``reading``) once they read what came before.
        TopicNotFound if no process made it."""
        self._check_open()
        found = self._topic(topic, create=False)
        self._directory.close_topic(found.index)
        found.log.refuse(ENDED)
        return Completed(None)

    def join(self, topic: str, timeout: float | None = None) -> None:
        """Block until every reader of ``topic`` (in any process; with persistence, the next
        to join when there is none) has read every message published before this call.
        TimeoutError after ``timeout`` seconds; BrokerShutdown if it is force-shut down."""
        seconds = kincir_core.check_timeout(timeout)
        found = self._topic(topic, create=False)
        target = found.log.head
        deadline = None if seconds is None else time.monotonic() + seconds
        pause = 0.0001
        while found.log.settled(self.geometry.persistence) < target:
            if self.state == STOPPED:
                raise self._shut()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r} was not read through within {seconds} seconds")
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    async def join_async(self, topic: str, timeout: float | None = None) -> None:
        """``join`` for asyncio (it waits in a thread)."""
        await asyncio.to_thread(self.join, topic, timeout)

    def is_shutdown(self) -> bool:
        """True once any process shut the broker down (or this one closed its handle)."""
        return self.state != OPEN

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop new publishes and subscribes, in every process; subscribers drain what is
        queued, then their receives raise BrokerShutdown. With ``timeout``, waits up to that
        many seconds for them to drain; returns whether every reader read everything.
        Idempotent."""
        seconds = kincir_core.check_timeout(timeout)
        logs = self._stop(DRAINING)
        deadline = None if seconds is None else time.monotonic() + seconds
        while not all(log.settled() >= log.head for log in logs):
            if deadline is None or time.monotonic() >= deadline or self.state == STOPPED:
                return False
            time.sleep(0.001)
        return True

    async def shutdown_async(self, timeout: float | None = None) -> bool:
        """``shutdown`` for asyncio (it waits in a thread)."""
        return await asyncio.to_thread(self.shutdown, timeout)

    def force_shutdown(self) -> None:
        """Stop the broker for every process at once: every receive and waiting publish
        raises BrokerShutdown, whatever is unread. Idempotent."""
        self._stop(STOPPED)

    def _stop(self, state: int) -> list[ShmLog]:
        """Move every process's broker to ``state``: no topic is made from then on, and every
        log refuses (and wakes its waiters); the logs."""
        self._check_attached()
        self._directory.advance_state(state)
        logs = [self._topic(name, create=False).log for name in self._directory.topic_names()]
        for log in logs:
            log.refuse(state)
        return logs

    def close(self) -> None:
        """Let go of the segment in this process: its subscribers leave their topics, its
        publishers and subscribers raise BrokerShutdown from then on. The segment goes when
        its last user closes. Idempotent; other processes go on."""
        self._closing = True
        with self._lock:
            self._closer()

    def __enter__(self) -> SharedMemoryBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SharedMemoryBroker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self.name, self.codec))

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("open", "draining", "stopped")[self.state]
        return f"SharedMemoryBroker({self.name!r}, {state})"


def _close(
    directory: Directory,
    topics: dict[str, Topic],
    readers: dict[tuple[Topic, int], int],
    segment: Segment,
) -> None:
    """Let go of a handle (``close``, or its finalizer): this process's readers leave, then
    every view is released (each waits for this process's threads inside it) and the segment
    closed."""
    pid = os.getpid()
    for (topic, reader), owner in list(readers.items()):
        if owner == pid:
            try:
                topic.log.remove_reader(reader)
            except ValueError:  # left already (a dead-reader check, a concurrent close)
                pass
    readers.clear()
    for topic in topics.values():
        topic.log.release()
    topics.clear()
    directory.release()
    segment.close()
