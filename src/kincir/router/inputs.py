"""How a router takes its input messages and settles them: ``AckStrategy``, ``Delivery`` (one
message under MANUAL), the plain member behind NEVER_ACK, and batch taking."""

from __future__ import annotations

import enum
import logging
from typing import Any

from kincir_core import Message

from ..memory.ack import AckHandle, InMemoryAckSubscriber
from ..memory.broker import InMemoryBroker, InMemorySubscriber
from ..memory.errors import AckError, TopicClosed
from .stats import _Ledger

__all__ = ["AckStrategy", "Delivery"]

_log = logging.getLogger("kincir.router")
POLL = 0.05  # how often an idle worker looks at the stop flag, in seconds

#: What a worker took from its input: the messages, and their handles (None under NEVER_ACK).
Taken = tuple[list[Message], list[Any]]


class AckStrategy(enum.Enum):
    """How a router settles each input message."""

    #: Ack once the handler returned and its outputs were published; nack (retry) on failure.
    AUTO_ACK_ON_SUCCESS = "auto_ack_on_success"
    #: The handler settles: it is called as ``handler(message, delivery)`` and calls
    #: ``delivery.ack()`` or ``delivery.nack()`` (unsettled ones are redelivered after the
    #: ack timeout).
    MANUAL = "manual"
    #: Ack every message, failed or not: failures are counted, never retried.
    ALWAYS_ACK = "always_ack"
    #: Read without acknowledgement (at most once): nothing is held in flight, a failed message
    #: is counted and not retried.
    NEVER_ACK = "never_ack"

    # the founding library's spelling
    AutoAckOnSuccess = AUTO_ACK_ON_SUCCESS
    Manual = MANUAL
    AlwaysAck = ALWAYS_ACK
    NeverAck = NEVER_ACK


class Delivery:
    """One input message under ``AckStrategy.MANUAL``: settle it with ``ack``/``nack``."""

    __slots__ = ("_handle", "_ledger", "_subscriber", "message")

    def __init__(
        self,
        ledger: _Ledger,
        subscriber: InMemoryAckSubscriber,
        message: Message,
        handle: AckHandle,
    ) -> None:
        self._ledger = ledger
        self._subscriber = subscriber
        self._handle = handle
        #: The input message.
        self.message = message

    @property
    def handle(self) -> AckHandle:
        """The message's AckHandle (delivery count, retry flag)."""
        return self._handle

    def ack(self) -> None:
        """The message is processed."""
        self._subscriber.ack(self._handle)
        self._ledger.add("acked")

    def nack(self, requeue: bool = True) -> None:
        """The message failed: redeliver it (``requeue``) or reject it."""
        self._subscriber.nack(self._handle, requeue)
        self._ledger.nacked(self._handle, requeue)


def settle(strategy: AckStrategy, ledger: _Ledger, sub: Any, handles: list[Any], ok: bool) -> int:
    """Settle the messages of one handler call by ``strategy`` (``ok``: it returned and its
    outputs were published); return how many it acked, for the caller to count with the call
    (nacks are counted here). A handle settled meanwhile (by a MANUAL handler, or taken back
    for redelivery after its ack deadline) is passed over."""
    if handles[0] is None or (ok and strategy is AckStrategy.MANUAL):
        return 0
    if ok or strategy is AckStrategy.ALWAYS_ACK:
        try:
            if len(handles) == 1:
                sub.ack(handles[0])
            else:
                sub.ack_batch(handles)
            return len(handles)
        except AckError:
            if len(handles) == 1:
                _settled_meanwhile(handles[0])
                return 0
        acked = 0
        for handle in handles:  # a batch with a settled handle acks none: one by one
            try:
                sub.ack(handle)
            except AckError:
                _settled_meanwhile(handle)
            else:
                acked += 1
        return acked
    for handle in handles:
        try:
            sub.nack(handle)
        except AckError:
            _settled_meanwhile(handle)
        else:
            ledger.nacked(handle, True)
    return 0


def _settled_meanwhile(handle: AckHandle) -> None:
    _log.debug("router: message %s was already settled", handle.message_id)


def take_sync(sub: Any, limit: int) -> Taken | None:
    """Up to ``limit`` messages: the first waited for (None after ``POLL`` seconds without
    one), the rest only those ready now."""
    got = sub.try_receive_with_ack()  # a busy stage finds one ready: no wait to set up
    if got is None:
        try:
            got = sub.receive_with_ack_sync(timeout=POLL)
        except TimeoutError:
            return None
    return _take_ready(sub, limit, [got[0]], [got[1]])


async def take_async(sub: Any, limit: int) -> Taken | None:
    """``take_sync`` for a task."""
    try:
        msg, handle = await sub.receive_with_ack(timeout=POLL)
    except TimeoutError:
        return None
    return _take_ready(sub, limit, [msg], [handle])


def _take_ready(sub: Any, limit: int, msgs: list[Message], handles: list[Any]) -> Taken:
    while len(msgs) < limit:
        try:
            got = sub.try_receive_with_ack()
        except TopicClosed:
            break  # the next take reads the end again, once these are settled
        if got is None:
            break
        msgs.append(got[0])
        handles.append(got[1])
    return msgs, handles


class PlainMember:
    """A NEVER_ACK worker's subscriber: a plain group member behind the ack-shaped calls."""

    __slots__ = ("_sub",)

    def __init__(self, broker: InMemoryBroker, group: str) -> None:
        self._sub = InMemorySubscriber(broker, group)

    def subscribe(self, topic: str) -> None:
        self._sub.subscribe(topic)

    def unsubscribe(self) -> None:
        self._sub.unsubscribe()

    def close(self) -> None:
        self._sub.close()

    def receive_with_ack_sync(self, timeout: float) -> tuple[Message, None]:
        return self._sub.receive_sync(timeout), None

    async def receive_with_ack(self, timeout: float) -> tuple[Message, None]:
        return await self._sub.receive(timeout), None

    def try_receive_with_ack(self) -> tuple[Message, None] | None:
        msg = self._sub.try_receive()
        return None if msg is None else (msg, None)
