"""``InMemoryAckSubscriber``: the in-memory subscriber that acknowledges.

It reads like ``InMemorySubscriber`` and keeps each delivery in flight until it is settled; the
bookkeeping of what is in flight (records, deadlines, redelivery, counts) is the engine's
``InFlight``, one ``_AckState`` (``in_flight.py``: its policy, dead letters and logging) per
cursor, shared by the members of a consumer group. The settings check and the dead-letter
metadata are the rules every backend shares (``kincir._ack``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import kincir_core
from kincir_core import AckOwner, InFlight, Message, SubscriberCore, ack_one, deliver

from .._ack import check_settings
from .._awaitable import DONE, Completed
from .._stats import SubscriberStats
from ..errors import KincirError
from .broker import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
from .in_flight import AckHandle, _AckState, _state_of

__all__ = ["AckHandle", "InMemoryAckSubscriber", "check_settings"]


class InMemoryAckSubscriber(InMemorySubscriber):
    """A subscriber that acknowledges: each message stays in flight (holding its slot) until
    ``ack``; ``nack`` or a missed ack deadline redelivers it, up to ``max_deliveries`` (the
    first delivery counts), then it goes to ``dead_letter_topic`` or is dropped.

    ``receive_with_ack`` (and ``_sync``/``try_`` variants) hand out ``(Message, AckHandle)``;
    the plain receive methods and iteration ack each message as they hand it out. With
    ``group``, members share the group's messages and its redeliveries.
    """

    __slots__ = (
        "_ack_owner",
        "_ack_timeout",
        "_dead_letter_topic",
        "_finalizing",
        "_max_deliveries",
        "_publisher",
    )

    def __init__(
        self,
        broker: InMemoryBroker,
        group: str | None = None,
        *,
        ack_timeout: float = 30.0,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
    ) -> None:
        settings = check_settings(ack_timeout, max_deliveries, dead_letter_topic)
        SubscriberCore.__init__(self, broker, group, True)
        self._ack_timeout, self._max_deliveries, self._dead_letter_topic = settings
        if settings[2] is not None:  # its readers wait for dead letters while the broker drains
            broker._letter_topics.add(settings[2])
        self._publisher = InMemoryPublisher(broker)
        # the token its deliveries name it by, with its settings and own counts (the states
        # update them under their locks, which the receive or settle holds anyway)
        self._ack_owner = AckOwner(*settings)
        self._finalizing = False

    @property
    def ack_timeout(self) -> float:
        """Seconds a delivery may stay unacked before it is redelivered."""
        return self._ack_timeout

    @property
    def max_deliveries(self) -> int | None:
        """Deliveries (the first included) before a message is dead-lettered; None: no bound."""
        return self._max_deliveries

    @property
    def dead_letter_topic(self) -> str | None:
        """Where messages past ``max_deliveries`` or rejected go; None: they are dropped."""
        return self._dead_letter_topic

    _ack_timeout: float
    _max_deliveries: int | None
    _dead_letter_topic: str | None
    _publisher: Any
    _ack_owner: AckOwner

    def _states(self) -> list[_AckState]:
        """The states of the cursors read, cached on the owner token (``deliver`` reads the
        cache itself) while the engine keeps the tuple of cursors: until the subscriptions
        change."""
        cursors = self._attached_cursors()
        owner = self._ack_owner
        cached = owner._cache
        if cached is not None and cached[0] is cursors:
            return cached[1]
        publisher = self._publisher
        # a deleted topic's cursor delivers nothing: left out when the subscriptions change
        states = [_state_of(c, publisher) for c in cursors if c.attached]
        owner._cache = (cursors, states)
        return states

    def _has_ready(self) -> bool:
        """Whether a waiting receive must look again: a redelivery is ready, or the broker
        drains (or a topic read was closed for writing) and this receive can end. The engine
        calls it after registering the waiter, so a settle that ends the drain just before the
        wait (its wake-up found no waiter) is not missed."""
        if any(state.has_ready() for state in self._states()):
            return True
        if self.broker.is_shutdown() or any(
            not cursor.log.accepting for cursor in self._attached_cursors()
        ):
            try:
                self._check_receivable()
            except KincirError:
                return True
        return False

    def try_receive_with_ack(self) -> tuple[Message, AckHandle] | None:
        """The next message and its AckHandle if one is ready (redeliveries first), else None."""
        got = deliver(self, self._ack_owner)
        if got is None and not any(state.has_ready() for state in self._states()):
            self._check_receivable()
        return got

    def _wait_bound(self, deadline: float | None) -> float | None:
        """How long a receive may wait: to its own deadline or the next ack deadline."""
        now = kincir_core.monotonic()
        bounds = [d - now for d in (s.next_deadline() for s in self._states()) if d is not None]
        if deadline is not None:
            remaining = deadline - now
            if remaining <= 0:
                raise TimeoutError("no message arrived within the timeout")
            bounds.append(remaining)
        return max(0.0, min(bounds)) if bounds else None

    def receive_with_ack_sync(self, timeout: float | None = None) -> tuple[Message, AckHandle]:
        """Block until a message arrives; return it with its AckHandle (TimeoutError after
        ``timeout`` seconds)."""
        seconds = kincir_core.check_timeout(timeout)
        deadline = None if seconds is None else kincir_core.monotonic() + seconds
        take = self.try_receive_with_ack
        while True:
            got = take()
            if got is not None:
                return got
            # taken before the wait ends: a group member whose wake brought it a message does
            # not pass the wake on to the next member first
            got = self._wait_ready(self._wait_bound(deadline), self._has_ready, take)
            if got is not None:
                return got

    async def receive_with_ack(self, timeout: float | None = None) -> tuple[Message, AckHandle]:
        """Wait for a message; return it with its AckHandle (TimeoutError after ``timeout``)."""
        seconds = kincir_core.check_timeout(timeout)
        deadline = None if seconds is None else kincir_core.monotonic() + seconds
        while True:
            got = self.try_receive_with_ack()
            if got is not None:
                return got
            bound = self._wait_bound(deadline)
            try:
                async with asyncio.timeout(bound):
                    # taken before the wait ends, as in receive_with_ack_sync
                    got = await self._wait_ready_async(self._has_ready, self.try_receive_with_ack)
            except TimeoutError:
                continue  # the loop looks again and raises if the receive's own deadline passed
            if got is not None:
                return got

    def _settle(self, handles: Iterable[AckHandle], *, ack: bool, requeue: bool) -> None:
        batch = list(handles)
        by_state: dict[int, tuple[InFlight, list[AckHandle]]] = {}
        for handle in batch:
            if not isinstance(handle, AckHandle):
                raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
            by_state.setdefault(id(handle._state), (handle._state, []))[1].append(handle)
        owner = self._ack_owner
        if len(by_state) > 1:
            # one bad handle settles none: check every state's handles before settling any
            for state, handles_ in by_state.values():
                state.check(handles_, owner)
        for state, handles_ in by_state.values():
            state.settle(handles_, owner, ack, requeue)

    def ack(self, handle: AckHandle) -> Completed[None]:
        """The message is processed: settle it for good. AckError for a settled or foreign
        handle."""
        ack_one(handle, self._ack_owner)
        return DONE

    def nack(self, handle: AckHandle, requeue: bool = True) -> Completed[None]:
        """The message failed: redeliver it (``requeue``; dead-lettered past
        ``max_deliveries``), or reject it now (to the dead-letter topic, or dropped)."""
        self._settle((handle,), ack=False, requeue=_flag(requeue))
        return DONE

    def extend_deadline(self, handle: AckHandle) -> Completed[None]:
        """The message is still being worked on: restart its ack deadline, so it is not
        redelivered for another ``ack_timeout`` seconds from now. AckError for a settled or
        foreign handle, or one whose message was already taken back for redelivery."""
        if type(handle) is not AckHandle:
            raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
        handle._state.extend(handle, self._ack_owner)
        return DONE

    def ack_batch(self, handles: Iterable[AckHandle]) -> Completed[None]:
        """Ack several handles; if one is settled or foreign, none of its topic's are acked."""
        self._settle(handles, ack=True, requeue=False)
        return DONE

    def nack_batch(self, handles: Iterable[AckHandle], requeue: bool = True) -> Completed[None]:
        """Nack several handles (see ``nack``)."""
        self._settle(handles, ack=False, requeue=_flag(requeue))
        return DONE

    def stats(self) -> SubscriberStats:
        """This subscriber's own counts (kept whether or not ``enable_stats`` is on); the
        broker's are ``broker.stats()``."""
        counts = self._ack_owner
        return SubscriberStats(
            received=counts.received + self._received_count(),
            acked=counts.acked,
            nacked=counts.nacked,
            redelivered=counts.redelivered,
            dead_lettered=counts.dead_lettered,
            lagged=self.messages_lagged(),
        )

    def in_flight(self) -> int:
        """Messages this subscriber received and has not settled yet."""
        token = self._ack_owner
        return sum(state.owned_by(token) for state in self._states())

    # -- the plain subscriber API: each message is acked as it is handed out -------------------

    def try_receive(self) -> Message | None:
        """The next message if one is ready, else None (acked at once: at-most-once)."""
        got = self.try_receive_with_ack()
        if got is None:
            return None
        self.ack(got[1])
        return got[0]

    def receive_sync(self, timeout: float | None = None) -> Message:
        """Block for the next message (acked at once)."""
        msg, handle = self.receive_with_ack_sync(timeout)
        self.ack(handle)
        return msg

    async def receive(self, timeout: float | None = None) -> Message:
        """Wait for the next message (acked at once)."""
        msg, handle = await self.receive_with_ack(timeout)
        self.ack(handle)
        return msg

    def _collect(self, out: list[Message], limit: int) -> list[Message]:
        """Add ready messages (acked) to ``out`` up to ``limit``. An error once ``out`` holds
        messages ends the batch instead: they are acked, so the caller must get them; the error
        comes again on the next call."""
        while len(out) < limit:
            try:
                got = self.try_receive_with_ack()
            except Exception:
                if out:
                    return out
                raise
            if got is None:
                break
            self.ack(got[1])
            out.append(got[0])
        return out

    def try_receive_batch(self, max_messages: int) -> list[Message]:
        """Up to ``max_messages`` ready messages (acked at once; 0: an empty batch)."""
        limit = kincir_core.check_batch_size(max_messages, "max_messages")
        return self._collect([], limit) if limit else []

    def receive_batch_sync(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Block for at least one message, then return up to ``max_messages`` (acked; 0: an
        empty batch at once)."""
        limit = kincir_core.check_batch_size(max_messages, "max_messages")
        if not limit:
            kincir_core.check_timeout(timeout)
            return []
        return self._collect([self.receive_sync(timeout)], limit)

    async def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Message]:
        """Wait for at least one message, then return up to ``max_messages`` (acked; 0: an
        empty batch at once)."""
        limit = kincir_core.check_batch_size(max_messages, "max_messages")
        if not limit:
            kincir_core.check_timeout(timeout)
            return []
        return self._collect([await self.receive(timeout)], limit)

    def _release_deliveries(self, topic: str | None = None) -> None:
        """Hand this subscriber's unsettled deliveries back before it leaves ``topic`` (None:
        every topic): a group redelivers them to its other members; a plain reader's go with
        its cursor (held for the next reader when it was the last one and persistence is on)."""
        for cursor in self._attached_cursors():
            state = cursor.ack
            if state is None or (topic is not None and cursor.log.name != topic):
                continue
            if not cursor.attached:  # a deleted topic's in-flight messages stay settleable
                continue
            if cursor.group is not None:
                state.release(self._ack_owner)
            else:
                state.abandon()

    def _release_on_gc_ack(self) -> None:
        """The subscriber is being collected, maybe while this thread holds a group state's
        lock: a group's deliveries are queued for return without locking; a plain reader's
        state is private to the dying subscriber (no one else can hold its lock) and is
        forgotten now."""
        # None when the constructor refused its arguments
        for cursor in self._attached_cursors() or ():
            state = cursor.ack
            if state is None:
                continue
            if cursor.group is not None:
                state.orphaned.append(self._ack_owner)
            else:
                state.abandon()

    def _unsubscribe(self, topic: str | None) -> None:
        # unsettled deliveries of the topics left go back for redelivery first
        if (topic is None or type(topic) is str) and not self._finalizing:
            self._release_deliveries(topic)
        super()._unsubscribe(topic)

    def _release_on_gc(self) -> None:
        try:
            self._finalizing = True
            self._release_on_gc_ack()
        except AttributeError:  # the constructor refused its arguments: nothing to release
            return
        super()._release_on_gc()

    def __repr__(self) -> str:
        return (
            f"<InMemoryAckSubscriber topics={self.subscribed_topics()!r} "
            f"group={self.group!r} in_flight={self.in_flight()}>"
        )


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"requeue must be bool, not {type(value).__name__}")
    return value


InMemoryAckSubscriber.__module__ = "kincir.memory"
