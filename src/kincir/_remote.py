"""What the backends on distributed engines (Redis, RabbitMQ, Kafka) share.

A backend provides a broker (owns the connection), a publisher, a subscriber and an acknowledging
subscriber with the in-memory broker's async API. The classes here keep everything that does not
depend on the engine: argument checks, the message envelope (payload, metadata, uuid, enqueue
time), the local receive buffer and its timeouts, ack handles and the dead-letter decision. A
backend subclasses them and implements the ``_``-prefixed hooks.

Delivery rules shared by every backend (the conformance suite checks them):
- ``receive(timeout)`` raises ``TimeoutError`` when nothing arrives in time and
  ``BrokerShutdown`` once the broker is closed; a network failure raises ``ConnectionFailed``.
- A handle's ``delivery_count`` counts deliveries of the message to the group (1 first); past
  ``max_deliveries`` the message goes to ``dead_letter_topic`` with the metadata keys
  ``_dead_letter_reason``, ``_delivery_count``, ``_original_topic``, ``_original_sequence``
  (as the in-memory broker does), or is dropped.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import time
import uuid as uuid_module
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import kincir_core
from kincir_core import Message

from .errors import (
    AckError,
    BackendError,
    BrokerShutdown,
    ConnectionFailed,
    KincirError,
    NotSubscribed,
)

__all__ = [
    "RemoteAckHandle",
    "RemoteAckSubscriber",
    "RemoteBroker",
    "RemotePublisher",
    "RemoteSubscriber",
    "check_ack_settings",
    "decode_message",
    "encode_message",
]

#: Metadata keys the envelope of a message uses on the wire (besides the user's metadata).
UUID_KEY = "kincir-uuid"
ENQUEUED_KEY = "kincir-enqueued-at"

B = TypeVar("B", bound="RemoteBroker")
T = TypeVar("T")


def _seconds(name: str, value: Any) -> float:
    seconds = kincir_core.check_timeout(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(seconds)


def check_ack_settings(
    ack_timeout: Any, max_deliveries: Any, dead_letter_topic: Any
) -> tuple[float, int | None, str | None]:
    """The acknowledging subscriber's options, checked as the in-memory broker checks them."""
    from .memory.ack import check_settings

    return check_settings(ack_timeout, max_deliveries, dead_letter_topic)


def to_messages(messages: Any) -> list[Message]:
    """``messages`` (Messages or bytes-like payloads) as Messages; TypeError names a bad item."""
    if type(messages) is not list and type(messages) is not tuple:
        raise TypeError(
            f"messages must be a list of Message objects or bytes-like payloads, "
            f"not {type(messages).__name__}"
        )
    out = []
    for index, item in enumerate(messages):
        if type(item) is Message:
            out.append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            out.append(Message(item))
        else:
            raise TypeError(
                f"messages[{index}] must be a Message or a bytes-like payload, "
                f"not {type(item).__name__}"
            )
    return out


def encode_message(msg: Message) -> tuple[bytes, dict[str, str]]:
    """A message's payload and its headers: the user's metadata plus uuid and enqueue time."""
    headers = dict(msg.metadata)
    headers.pop("_sequence", None)  # a delivered message's stamps: the new topic stamps anew
    headers.pop("_enqueued_at", None)
    headers[UUID_KEY] = msg.uuid
    headers[ENQUEUED_KEY] = str(time.time_ns() // 1_000_000)
    return msg.payload, headers


def decode_message(
    payload: bytes, headers: dict[str, str], topic: str, sequence: int | None
) -> Message:
    """The Message a subscriber hands out, rebuilt from the wire (uuid and metadata kept)."""
    meta = dict(headers)
    ident = meta.pop(UUID_KEY, None)
    enqueued = meta.pop(ENQUEUED_KEY, None)
    try:
        value = uuid_module.UUID(ident).int if ident is not None else uuid_module.uuid4().int
    except ValueError:
        value = uuid_module.uuid4().int
    try:
        enqueued_ms = int(enqueued) if enqueued is not None else time.time_ns() // 1_000_000
    except ValueError:
        enqueued_ms = time.time_ns() // 1_000_000
    return kincir_core.restore_message(
        payload,
        meta,
        value,
        topic,
        sequence if sequence is not None else 0,
        enqueued_ms,
        sequence is not None,
    )


def dead_letter_copy(msg: Message, reason: str, count: int) -> Message:
    """The copy of ``msg`` published to a dead-letter topic."""
    return (
        msg.with_metadata("_dead_letter_reason", reason)
        .with_metadata("_delivery_count", str(count))
        .with_metadata("_original_topic", msg.topic or "")
        .with_metadata("_original_sequence", str(msg.sequence or 0))
    )


class RemoteBroker(abc.ABC):
    """Owns one connection to a distributed engine. Subclasses implement the hooks."""

    backend: ClassVar[str] = "remote"

    def __init__(
        self, url: str, *, reconnect_timeout: float = 30.0, operation_timeout: float = 30.0
    ) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a non-empty str, not {url!r}")
        self.url = url
        #: How long a receive keeps retrying a lost connection before ConnectionFailed.
        self.reconnect_timeout = _seconds("reconnect_timeout", reconnect_timeout)
        #: The longest any one call to the server may take before ConnectionFailed.
        self.operation_timeout = _seconds("operation_timeout", operation_timeout)
        self._subscribers: weakref.WeakSet[RemoteSubscriber[Any]] = weakref.WeakSet()
        self._closed = False
        self._connected = False
        self._connecting: asyncio.Lock | None = None

    def translate(self, exc: Exception) -> KincirError:
        """The kincir error for a client library's exception (backends refine this)."""
        if isinstance(exc, (OSError, ConnectionError)):
            return ConnectionFailed(self.backend, self.url, exc)
        return BackendError(self.backend, exc)

    def is_shutdown(self) -> bool:
        """True once ``close()``/``shutdown()`` was called."""
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise BrokerShutdown(f"the {self.backend} broker is closed")

    async def connect(self) -> None:
        """Connect now (calls connect on first use anyway); ConnectionFailed if it cannot."""
        self.check_open()
        if self._connected:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connected:
                return
            try:
                await self._connect()
            except KincirError:
                raise
            except (TimeoutError, OSError) as exc:
                raise ConnectionFailed(self.backend, self.url, exc) from exc
            self._connected = True

    async def shutdown(self) -> None:
        """Close the connection; later calls raise BrokerShutdown. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._connected:
            self._connected = False
            try:
                for subscriber in list(self._subscribers):
                    try:
                        await subscriber._detach()  # what a subscriber holds of its own first
                    except Exception:
                        continue
            finally:
                await self._close()

    close = shutdown

    async def __aenter__(self: B) -> B:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({self.url!r}, {state})"

    # -- what a backend implements -------------------------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the connection (OSError/TimeoutError become ConnectionFailed)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Close the connection and whatever the broker's objects hold on the server."""

    @abc.abstractmethod
    async def _probe(self) -> None:
        """One round trip to the server (raises if it does not answer)."""

    @abc.abstractmethod
    async def _publish(self, topic: str, messages: list[Message]) -> None:
        """Append ``messages`` to ``topic`` (one batch; atomic where the engine allows)."""


def resolve_broker(broker_cls: type[B], broker_or_url: Any) -> tuple[B, bool]:
    """A broker and whether this object owns it (built from a URL)."""
    if isinstance(broker_or_url, broker_cls):
        return broker_or_url, False
    if isinstance(broker_or_url, str):
        return broker_cls(broker_or_url), True
    raise TypeError(
        f"expected a {broker_cls.__name__} or a URL string, not {type(broker_or_url).__name__}"
    )


#: Longest single wait on the server: a receive re-checks close/unsubscribe at least this often.
POLL_SECONDS = 0.5


async def guarded(broker: RemoteBroker, awaitable: Awaitable[T]) -> T:
    """Await a client-library call, translating its errors into kincir's."""
    limit = broker.operation_timeout
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await awaitable
    except TimeoutError as exc:
        if scope.expired():  # the server did not answer; a caller's own timeout passes through
            raise ConnectionFailed(broker.backend, broker.url, f"no answer in {limit:g} s") from exc
        raise
    except (KincirError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if broker.is_shutdown():
            raise BrokerShutdown(f"the {broker.backend} broker is closed") from exc
        raise broker.translate(exc) from exc


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a fetch task's error as seen: the receives awaiting it got it (or were cancelled)."""
    if not task.cancelled():
        task.exception()


class RemotePublisher(Generic[B]):
    """Publishes batches to a backend's topics; built on a broker or on a URL (its own broker)."""

    broker_type: ClassVar[type[RemoteBroker]]

    def __init__(self, broker_or_url: B | str) -> None:
        self.broker: B
        self.broker, self._owns_broker = resolve_broker(self.broker_type, broker_or_url)  # type: ignore[arg-type]

    async def publish(
        self, topic: str, messages: Sequence[Any], timeout: float | None = None
    ) -> None:
        """Publish ``messages`` (Messages or bytes-like payloads) to ``topic``, in order."""
        kincir_core.validate_topic_name(topic)
        batch = to_messages(messages)
        seconds = kincir_core.check_timeout(timeout)
        broker = self.broker
        await broker.connect()
        if batch:
            await guarded(broker, asyncio.wait_for(broker._publish(topic, batch), seconds))

    def is_connected(self) -> bool:
        """True while the broker is open."""
        return not self.broker.is_shutdown()

    async def close(self) -> None:
        """Close the broker if this publisher built it from a URL."""
        if self._owns_broker:
            await self.broker.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.broker!r})"


class RemoteSubscriber(abc.ABC, Generic[B]):
    """Receives the topics it subscribed to; ``group`` shares each message among its members.

    Messages are fetched from the server in batches of ``prefetch`` into a local buffer: 64 by
    default for a subscriber alone, 1 for a group member (what a member fetched and did not hand
    out yet is lost to its group if it closes, on the engines that count a fetch as a delivery);
    a plain subscriber sees every message published after its ``subscribe`` returned.
    """

    broker_type: ClassVar[type[RemoteBroker]]
    acking: ClassVar[bool] = False

    def __init__(
        self, broker_or_url: B | str, group: str | None = None, *, prefetch: int | None = None
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
        self._topics: dict[str, None] = {}
        self._buffer: deque[Delivered] = deque()
        self._closed = False
        self._filling: asyncio.Future[None] | None = None
        #: whether handing a message out settles it on the server (``_ack``)
        self._settles = type(self)._ack is not RemoteSubscriber._ack
        self.broker._subscribers.add(self)

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

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Message:
        """Wait for the next message (TimeoutError after ``timeout`` seconds)."""
        return (await self._take(1, timeout))[0].message

    async def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Wait for at least one message, then return up to ``max_messages`` ready ones."""
        if type(max_messages) is not int or max_messages < 1:
            raise ValueError(f"max_messages must be an int >= 1, got {max_messages!r}")
        return [d.message for d in await self._take(max_messages, timeout)]

    async def _take(self, most: int, timeout: float | None) -> list[Delivered]:
        """Hand out up to ``most`` messages from the head of the buffer (waiting for one).

        Where handing out settles a message on the server, it is settled first and taken from
        the buffer after: a receive cancelled during the settling leaves it (marked settled) at
        the head for the next receive, instead of losing it.
        """
        while True:
            if not self._settles:
                first = await self._next(timeout)
                batch = [first]
                while self._buffer and len(batch) < most:
                    batch.append(self._buffer.popleft())
                return batch
            await self._next(timeout, take=False)
            batch = list(itertools.islice(self._buffer, most))
            fresh = [d for d in batch if not d.settled]
            for d in fresh:
                d.settled = True
            if fresh:
                await asyncio.shield(guarded(self.broker, self._ack(fresh)))
            taken: list[Delivered] = []
            while self._buffer and len(taken) < len(batch) and self._buffer[0] is batch[len(taken)]:
                taken.append(self._buffer.popleft())
            if taken:  # else a concurrent receive took them meanwhile: look again
                return taken

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except BrokerShutdown:
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

    async def __aenter__(self) -> RemoteSubscriber[B]:
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
    """A fetched message with the backend's reference to it and its delivery count."""

    __slots__ = ("count", "message", "ref", "settled")

    def __init__(self, message: Message, ref: Any = None, count: int = 1) -> None:
        self.message = message
        self.ref = ref
        self.count = count
        self.settled = False  # acked on the server as a plain receive handed it out


class RemoteAckHandle:
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it."""

    __slots__ = (
        "_deadline",
        "_delivered",
        "_owner",
        "delivery_count",
        "is_retry",
        "message_id",
        "sequence",
        "timestamp",
        "topic",
    )

    def __init__(self, owner: object, delivered: Delivered, deadline: float) -> None:
        msg = delivered.message
        self._owner = owner
        self._delivered = delivered
        self._deadline = deadline
        self.message_id = msg.uuid
        self.topic = msg.topic
        self.sequence = msg.sequence
        self.delivery_count = delivered.count
        self.is_retry = delivered.count > 1
        self.timestamp = time.time()

    def __repr__(self) -> str:
        return (
            f"AckHandle(topic={self.topic!r}, sequence={self.sequence}, "
            f"delivery_count={self.delivery_count}, message_id={self.message_id!r})"
        )


class RemoteAckSubscriber(RemoteSubscriber[B]):
    """A subscriber whose messages stay in flight until acked; see the module's rules."""

    acking = True

    def __init__(
        self,
        broker_or_url: B | str,
        group: str | None = None,
        *,
        ack_timeout: float = 30.0,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
        prefetch: int = 1,
    ) -> None:
        settings = check_ack_settings(ack_timeout, max_deliveries, dead_letter_topic)
        super().__init__(broker_or_url, group, prefetch=prefetch)
        self.ack_timeout, self.max_deliveries, self.dead_letter_topic = settings
        self._inflight: dict[int, RemoteAckHandle] = {}
        #: Without a group, an acknowledging reader reads through a group of its own (the
        #: engines keep in-flight state per group), removed when it closes.
        self._private = f"private-{uuid_module.uuid4().hex}" if group is None else None
        self._start_acking()

    @property
    def group_name(self) -> str:
        """The group this reader acknowledges in: its own, or its private one."""
        return self.group if self.group is not None else str(self._private)

    def _start_acking(self) -> None:
        """Set up the backend's bookkeeping of an acknowledging reader."""

    async def receive_with_ack(
        self, timeout: float | None = None
    ) -> tuple[Message, RemoteAckHandle]:
        """Wait for the next message; it stays in flight until ``ack``/``nack`` or its deadline."""
        delivered = await self._next(timeout)
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        handle = RemoteAckHandle(self, delivered, deadline)
        self._inflight[id(handle)] = handle
        return delivered.message, handle

    def in_flight(self) -> int:
        """Messages this subscriber received with a handle and has not settled yet."""
        return len(self._inflight)

    async def ack(self, handle: RemoteAckHandle) -> None:
        """The message was processed: it is never delivered again."""
        await self._settle([handle], ack=True, requeue=False)

    async def nack(self, handle: RemoteAckHandle, requeue: bool = True) -> None:
        """The message failed: redeliver it (``requeue``; dead-lettered past ``max_deliveries``),
        or reject it to the dead-letter topic at once."""
        await self._settle([handle], ack=False, requeue=requeue)

    async def ack_batch(self, handles: Iterable[RemoteAckHandle]) -> None:
        """Ack several handles (all checked first: one bad handle settles none)."""
        await self._settle(list(handles), ack=True, requeue=False)

    async def nack_batch(self, handles: Iterable[RemoteAckHandle], requeue: bool = True) -> None:
        """Nack several handles (all checked first: one bad handle settles none)."""
        await self._settle(list(handles), ack=False, requeue=requeue)

    async def _settle(self, handles: list[RemoteAckHandle], *, ack: bool, requeue: bool) -> None:
        if type(requeue) is not bool:
            raise TypeError(f"requeue must be bool, not {type(requeue).__name__}")
        for handle in handles:
            if not isinstance(handle, RemoteAckHandle):
                raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
            if handle._owner is not self:
                raise AckError("this AckHandle belongs to another subscriber")
            if id(handle) not in self._inflight:
                raise AckError("this AckHandle was already settled (or its deadline passed)")
        if len({id(h) for h in handles}) != len(handles):
            raise AckError("the same AckHandle appears twice in one batch")
        self.broker.check_open()
        for handle in handles:
            del self._inflight[id(handle)]
        delivered = [h._delivered for h in handles]
        if ack:
            await guarded(self.broker, self._ack(delivered))
        elif not requeue:
            await self._dead_letter(delivered, "rejected")
        else:
            await self._retry(delivered)

    async def _retry(self, delivered: list[Delivered]) -> None:
        """Redeliver ``delivered``, or dead-letter those that used up their deliveries."""
        limit = self.max_deliveries
        spent = [d for d in delivered if limit is not None and d.count >= limit]
        again = [d for d in delivered if not (limit is not None and d.count >= limit)]
        if spent:
            await self._dead_letter(spent, "max_deliveries_exceeded")
        if again:
            await guarded(self.broker, self._requeue(again))

    async def _dead_letter(self, delivered: list[Delivered], reason: str) -> None:
        """Publish copies to the dead-letter topic (if any), then settle the originals."""
        if self.dead_letter_topic is not None:
            letters = [dead_letter_copy(d.message, reason, d.count) for d in delivered]
            await guarded(self.broker, self.broker._publish(self.dead_letter_topic, letters))
        await guarded(self.broker, self._ack(delivered))

    def _forget(self, topic: str) -> list[Delivered]:
        # their handles go stale (AckError), as the in-memory broker's do
        gone = [h for h in self._inflight.values() if h.topic == topic]
        for handle in gone:
            del self._inflight[id(handle)]
        return [h._delivered for h in gone]

    async def _before_fetch(self) -> None:
        if not self._inflight:
            return
        now = asyncio.get_running_loop().time()
        late = [h for h in self._inflight.values() if h._deadline <= now]
        if late:
            for handle in late:
                del self._inflight[id(handle)]
            await self._retry([h._delivered for h in late])

    async def _admit(self, fetched: list[Delivered]) -> list[Delivered]:
        """Dead-letter messages the server redelivered past ``max_deliveries`` (their previous
        reader died with them in flight); hand out the rest."""
        limit = self.max_deliveries
        if limit is None:
            return fetched
        over = [d for d in fetched if d.count > limit]
        if over:
            await self._dead_letter(over, "max_deliveries_exceeded")
            return [d for d in fetched if d.count <= limit]
        return fetched

    async def close(self) -> None:
        """Release what is in flight (redelivered to the group) and close."""
        try:
            if self._inflight and not self.broker.is_shutdown():
                held = [h._delivered for h in self._inflight.values()]
                self._inflight.clear()
                await guarded(self.broker, self._release(held))
        finally:
            self._inflight.clear()
            await super().close()

    @abc.abstractmethod
    async def _requeue(self, delivered: list[Delivered]) -> None:
        """Make ``delivered`` available again to the group, each counting one more delivery."""
