"""The in-flight bookkeeping of acknowledging readers: ``AckHandle`` and ``_AckState``.

``InMemoryAckSubscriber`` (``ack.py``) hands deliveries out and settles them through the state
of each cursor it reads. The bookkeeping itself (records, deadlines, redelivery, counts, the
hand-out and the settling) is the engine's ``InFlight`` (``kincir_core/_in_flight.pxi``, twin
``_in_flight_py.py``); ``_AckState`` subclasses it with the policy: dead letters, logging,
waking a drain. ``AckHandle`` is the engine's, a virtual subclass of ``AckHandleBase``.

An acknowledging reader's cursor (``acking`` in the engine) keeps a *floor*, its oldest unsettled
sequence; the topic log holds every slot from the lowest floor, so a message in flight keeps its
slot until it is settled. Capacity counts what a reader holds: its unread messages plus those in
flight (acked ones behind an unsettled message do not count). A delivery is consumed when it is
acked or dead-lettered, dropped or expired when it is given up: until then it is in flight, in
no other term of ``published = consumed + in_flight + dropped + expired + queued``. The
bookkeeping of one
such cursor lives in an ``_AckState``, attached to the cursor and therefore shared by every
member of a consumer group: a message nacked or timed out by one member is redelivered to any.

Locks: a state's lock guards its records and is taken before the topic's (``cursor.take`` and
``cursor.settle`` run under it, so a delivery and its registration are one step); the engine
never calls back into this module while it holds a topic lock. Dead letters are published and
waiters woken after the state's lock is released. Records and handles name their subscriber by
an owner token, never by the subscriber itself: a dropped subscriber is collected, and nothing
freed under a state's lock can run a finalizer. A group member collected with deliveries in
flight queues its token on the state (``orphaned``, no lock taken: a collection may run while
this thread holds the lock); the next operation on the state returns those deliveries.

A message's slot may be dropped by the log while it is in flight (``clear_topic``,
``drop_oldest``, ``force_shutdown``); its handle can still be acked, but it is not redelivered:
a nack (or deadline) settles it as dropped. A redelivery older than the topic's TTL is settled
as expired instead of delivered.

Ack deadlines are enforced lazily: whenever a member of the state receives (a waiting receive
wakes at the earliest deadline to do so) expired deliveries are redelivered or dead-lettered.
Held deliveries are kept in one list per ack timeout, each in deadline order: expiry looks at
the first entries only, and an ack removes its entry in O(1) (memory is bounded by what is in
flight, whatever the timeout). A redelivery is a new handle: the old one goes stale.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from kincir_core import AckHandle, InFlight

from .._ack import AckHandleBase, dead_letter_copy
from ..errors import KincirError

if TYPE_CHECKING:
    from kincir_core import Message

__all__ = ["AckHandle"]

_log = logging.getLogger("kincir.memory.ack")  # the name users configure: one logger for acks
_creating = threading.Lock()  # makes a cursor's state exactly once


AckHandleBase.register(AckHandle)


class _AckState(InFlight):
    """The in-flight messages of one acknowledging cursor (one subscriber's, or a group's),
    with the policy the engine calls once its lock is released."""

    __slots__ = ("_broker",)

    def __init__(self, cursor: Any, publisher: Any) -> None:
        super().__init__(cursor)
        # publishes dead letters; held weakly: the broker holds its topics, which hold this
        self._broker = weakref.ref(publisher.broker)

    def _missed(self, missed: list[tuple[str, int, int, float]]) -> None:
        for uuid, seq, deliveries, timeout in missed:
            _log.debug(
                "ack deadline missed: message %s (topic %r, sequence %d) not settled within "
                "%g s of delivery %d; it goes back for redelivery",
                uuid,
                self.log.name,
                seq,
                timeout,
                deliveries,
            )

    def _dropped_deleted(self, gone: int) -> None:
        _log.warning(
            "%d messages of deleted topic %r dropped: nacked for redelivery",
            gone,
            self.log.name,
        )

    def _after(
        self,
        dead: list[tuple[Any, str]],
        redelivered: int,
        dropped: int = 0,
        expired: int = 0,
    ) -> int:
        """Publish the dead letters; count them, the redeliveries, and the records dropped or
        expired (the engine already counted them out of the in-flight gauge). Returns how
        many dead letters were published."""
        lettered = 0
        for rec, reason in dead:
            if rec._dead_letter_topic is not None and self._dead_letter(rec, reason):
                lettered += 1
                # the system gave up on it: a warning; rejected (nack(requeue=False)) and
                # dead-lettered as the application asked: debug. A drop is always a warning.
                _log.log(
                    logging.DEBUG if reason == "rejected" else logging.WARNING,
                    "message %s (topic %r, sequence %d) dead-lettered to %r after %d deliveries "
                    "(%s)",
                    rec._message.uuid,
                    self.log.name,
                    rec.sequence,
                    rec._dead_letter_topic,
                    rec.delivery_count,
                    reason,
                )
            else:
                dropped += 1
                if rec._dead_letter_topic is None:
                    _log.warning(
                        "message %s (topic %r, sequence %d) dropped after %d deliveries (%s): "
                        "no dead-letter topic",
                        rec._message.uuid,
                        self.log.name,
                        rec.sequence,
                        rec.delivery_count,
                        reason,
                    )
                else:
                    _log.warning(
                        "message %s (topic %r, sequence %d) dropped after %d deliveries (%s): "
                        "dead-letter topic %r refused it",
                        rec._message.uuid,
                        self.log.name,
                        rec.sequence,
                        rec.delivery_count,
                        reason,
                        rec._dead_letter_topic,
                    )
        if not self.log.count_acks(redelivered, lettered, dropped, 0, expired):
            # the topic was deleted: its totals live on the broker now
            self._count_retired(lettered, dropped, expired, redelivered, lettered)
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()
        return lettered

    def _dead_letter(self, rec: Any, reason: str) -> bool:
        message: Message = rec._message
        letter = dead_letter_copy(message, reason, rec.delivery_count, self.log.name, rec.sequence)
        broker = self._broker()
        if broker is None:
            return False
        try:
            # accepted while the broker drains, and created outside max_topics
            return broker._dead_letter(rec._dead_letter_topic, letter)  # type: ignore[no-any-return]
        except KincirError:  # QueueFull, BrokerShutdown once stopped, TopicNotFound
            return False  # counted as dropped: an error of one message never leaks to the caller

    def _count_retired(
        self, consumed: int, dropped: int, expired: int, redelivered: int, dead_lettered: int
    ) -> None:
        broker = self._broker()
        if broker is not None:
            broker._count_retired(consumed, dropped, expired, redelivered, dead_lettered)

    def wake_drain(self) -> None:
        """During a drain, or once the topic was closed for writing, a settle may end the
        stream: waiting receives (this group's members, the dead-letter topics' readers) look
        again."""
        broker = self._broker()
        if broker is not None and (broker.is_shutdown() or self.log.ended):
            broker._wake_drain()


def _state_of(cursor: Any, publisher: Any) -> _AckState:
    state = cursor.ack
    if state is None:
        with _creating:
            state = cursor.ack
            if state is None:
                state = cursor.ack = _AckState(cursor, publisher)
    return state  # type: ignore[no-any-return]
