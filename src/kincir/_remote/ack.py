"""Acknowledging readers of the servers: ``RemoteAckHandle`` and ``RemoteAckSubscriber``
(in-flight deliveries, their deadlines, redelivery and dead letters), on the shared ack rules
of ``kincir._ack``."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import uuid as uuid_module
from collections.abc import Iterable
from typing import Any

import kincir_core
from kincir_core import Message

from .._ack import AckHandleBase, check_settings, dead_letter_copy
from ..codecs import Codec
from ..errors import AckError, DecodeError
from .connection import B, P, guarded
from .subscriber import Delivered, RemoteSubscriber

__all__ = ["UNDECODABLE", "RemoteAckHandle", "RemoteAckSubscriber"]

#: The dead-letter reason of a message the subscriber's codec cannot decode, beside
#: ``"max_deliveries_exceeded"`` and ``"rejected"``: ``"undecodable: <why>"``.
UNDECODABLE = "undecodable"


class RemoteAckHandle(AckHandleBase):
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it."""

    __slots__ = (
        "_deadline",
        "_delivered",
        "_message",
        "_owner",
        "delivery_count",
        "sequence",
        "timestamp",
        "topic",
    )

    def __init__(self, owner: object, delivered: Delivered, deadline: float) -> None:
        msg = delivered.message
        self._owner = owner
        self._message = msg
        self.topic = msg.topic or ""
        self.timestamp = time.time()
        self.delivery_count = delivered.count
        self._delivered = delivered
        self._deadline = deadline
        self.sequence = msg.sequence

    def __repr__(self) -> str:
        return (
            f"AckHandle(topic={self.topic!r}, sequence={self.sequence}, "
            f"delivery_count={self.delivery_count}, message_id={self.message_id!r})"
        )


class RemoteAckSubscriber(RemoteSubscriber[B, P]):
    """A subscriber whose messages stay in flight until acked; see the module's rules.

    A message its codec cannot decode is never handed out: with a ``dead_letter_topic`` it goes
    there as it arrived (reason ``"undecodable: <why>"``, a warning logged) and the receive goes
    on with the next message; without one it is acked away and the receive raises
    ``DecodeError``, which carries the message (the only copy left).
    """

    acking = True

    def __init__(
        self,
        broker_or_url: B | str,
        group: str | None = None,
        *,
        ack_timeout: float = 30.0,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
        codec: Codec[Any] | None = None,
        prefetch: int = 1,
    ) -> None:
        settings = check_settings(ack_timeout, max_deliveries, dead_letter_topic)
        super().__init__(broker_or_url, group, codec=codec, prefetch=prefetch)
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
    ) -> tuple[Message[P], RemoteAckHandle]:
        """Wait for the next message; it stays in flight until ``ack``/``nack`` or its deadline.

        A message the codec cannot decode is dead-lettered and skipped, or (without a
        dead-letter topic) acked and raised as ``DecodeError``.
        """
        seconds = kincir_core.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        until = None if seconds is None else loop.time() + seconds
        while True:
            left = None if until is None else max(0.0, until - loop.time())
            delivered = await self._next(left)
            try:
                message = self._hand_out(delivered)
            except DecodeError as error:
                delivered.settled = True
                await asyncio.shield(self._settle_undecodable(delivered, error))
                if not self._skips_undecodable:
                    raise
                continue
            deadline = loop.time() + self.ack_timeout
            handle = RemoteAckHandle(self, delivered, deadline)
            self._inflight[id(handle)] = handle
            self._received += 1
            if delivered.count > 1:
                self._redelivered += 1
            return message, handle

    @property
    def _skips_undecodable(self) -> bool:
        return self.dead_letter_topic is not None

    async def _settle_undecodable(self, delivered: Delivered, error: DecodeError) -> None:
        if self.dead_letter_topic is None:
            await RemoteSubscriber._settle_undecodable(self, delivered, error)
            return
        await self._dead_letter([delivered], f"{UNDECODABLE}: {error.reason}")
        msg = delivered.message
        logging.getLogger(f"kincir.{self.broker.backend}").warning(
            "dead-lettered message %s of topic %r to %r: %s",
            msg.uuid,
            msg.topic,
            self.dead_letter_topic,
            error,
        )

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
            self._acked += len(delivered)
            return
        if not requeue:
            await self._dead_letter(delivered, "rejected")
            lettered = len(delivered) if self.dead_letter_topic is not None else 0
        else:
            lettered = await self._retry(delivered)
        self._nacked += len(delivered)
        self._dead_lettered += lettered

    async def _retry(self, delivered: list[Delivered]) -> int:
        """Redeliver ``delivered``, or dead-letter those that used up their deliveries;
        returns how many went to the dead-letter topic."""
        limit = self.max_deliveries
        spent = [d for d in delivered if limit is not None and d.count >= limit]
        again = [d for d in delivered if not (limit is not None and d.count >= limit)]
        if spent:
            await self._dead_letter(spent, "max_deliveries_exceeded")
        if again:
            await guarded(self.broker, self._requeue(again))
        return len(spent) if self.dead_letter_topic is not None else 0

    async def _dead_letter(self, delivered: list[Delivered], reason: str) -> None:
        """Publish copies to the dead-letter topic (if any), then settle the originals."""
        if self.dead_letter_topic is not None:
            letters = [
                dead_letter_copy(
                    d.message, reason, d.count, d.message.topic or "", d.message.sequence or 0
                )
                for d in delivered
            ]
            await guarded(
                self.broker, self.broker._publish_dead_letters(self.dead_letter_topic, letters)
            )
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
