"""The in-flight bookkeeping of acknowledging readers: ``AckHandle``, records and ``_AckState``.

``InMemoryAckSubscriber`` (``ack.py``) hands deliveries out and settles them through the state
of each cursor it reads.

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
Deliveries are kept in one insertion-ordered dict per ack timeout, so each dict is in deadline
order: expiry looks at the first entries only, and an ack removes its entry in O(1) (memory is
bounded by what is in flight, whatever the timeout).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import kincir_core
from kincir_core import Message

from .._ack import AckHandleBase, dead_letter_copy
from ..errors import KincirError
from .errors import AckError

if TYPE_CHECKING:
    from .ack import InMemoryAckSubscriber

__all__ = ["AckHandle"]

_MODULE = "kincir.memory"
_log = logging.getLogger("kincir.memory.ack")  # the name users configure: one logger for acks
_creating = threading.Lock()  # makes a cursor's state exactly once


class AckHandle(AckHandleBase):
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it."""

    __slots__ = ("_seq", "_state", "_token")

    def __init__(
        self,
        state: _AckState,
        owner: Any,
        message: Message,
        token: int,
        topic: str,
        delivery_count: int,
    ) -> None:
        self._state = state
        self._owner = owner
        self._message = message
        self._seq: int = message.sequence  # type: ignore[assignment]
        self._token = token
        #: The topic the message came from.
        self.topic = topic
        #: Unix time (seconds) of this delivery.
        self.timestamp = time.time()
        #: How many times the message has been delivered, this delivery included.
        self.delivery_count = delivery_count

    @property
    def sequence(self) -> int:
        """The message's sequence number in its topic."""
        return self._seq

    def __repr__(self) -> str:
        return (
            f"<AckHandle topic={self.topic!r} sequence={self._seq} "
            f"delivery_count={self.delivery_count}>"
        )


class _Record:
    """One unsettled message of a state: delivered (owned) or waiting for redelivery."""

    __slots__ = (
        "dead_letter_topic",
        "deadline",
        "deliveries",
        "max_deliveries",
        "message",
        "owner",
        "seq",
        "timeout",
        "token",
    )

    def __init__(self, seq: int, message: Message) -> None:
        self.seq = seq
        self.message = message
        self.deliveries = 0
        self.owner: Any = None
        self.token = 0
        self.deadline = 0.0
        self.timeout = 0.0
        self.max_deliveries: int | None = None
        self.dead_letter_topic: str | None = None


class _AckState:
    """The in-flight messages of one acknowledging cursor (one subscriber's, or a group's)."""

    def __init__(self, cursor: Any, publisher: Any) -> None:
        self.cursor = cursor
        self.log = cursor.log
        # publishes dead letters; held weakly: the broker holds its topics, which hold this
        self._broker = weakref.ref(publisher.broker)
        self.lock = threading.Lock()
        self.records: OrderedDict[int, _Record] = OrderedDict()  # by sequence = delivery order
        self.ready: deque[_Record] = deque()  # waiting for redelivery
        # ack timeout -> the owned deliveries with that timeout, by token: in deadline order
        self.owned: dict[float, OrderedDict[int, _Record]] = {}
        self.tokens = itertools.count(1)
        self.orphaned: deque[object] = deque()  # owner tokens of collected group members
        # the log holds this cursor's slots from here (as of the last settle): an older record's
        # slot was dropped (clear_topic, drop_oldest), and it must not hold the floor back
        self.held_from = 0
        ttl = cursor.log.ttl
        self.ttl_ms = None if ttl is None or ttl < 0 else ttl * 1000.0

    # -- under the lock -------------------------------------------------------------------------

    def _disown(self, rec: _Record) -> None:
        """``rec``'s delivery ends (acked, nacked, expired or returned): its handle goes stale."""
        if rec.owner is not None:
            del self.owned[rec.timeout][rec.token]
            rec.owner = None
            rec.token = 0

    def _settle(self, rec: _Record, acked: int = 0) -> None:
        """Forget ``rec`` (``acked``: 1 when it counts as consumed, else the caller counts it
        as dropped, expired or dead-lettered); the log releases its slot once no reader holds
        it."""
        self._disown(rec)
        del self.records[rec.seq]
        floor = 0
        for seq in self.records:  # in sequence order; those the log dropped come first
            if seq >= self.held_from:
                floor = seq
                break
        held_from = self.cursor.settle(floor, 1, acked)
        if held_from < 0:  # the topic was deleted: its totals live on the broker now
            if acked:
                self._count_retired(acked, 0, 0, 0, 0)
        else:
            self.held_from = held_from

    def _retry_or_dead(self, rec: _Record, reason: str, dead: list[tuple[_Record, str]]) -> None:
        self._disown(rec)
        if rec.max_deliveries is not None and rec.deliveries >= rec.max_deliveries:
            self._settle(rec)
            dead.append((rec, reason))
        else:
            self.ready.append(rec)

    def _expire(
        self, now: float, dead: list[tuple[_Record, str]]
    ) -> list[tuple[str, int, int, float]] | None:
        """Redeliver (or dead-letter) the deliveries past their ack deadline; returns the
        (uuid, sequence, deliveries, ack timeout) of those going back for redelivery, to log
        once the lock is released (None: none)."""
        missed = None
        for bucket in self.owned.values():
            while bucket:
                rec = next(iter(bucket.values()))
                if rec.deadline > now:
                    break
                if rec.max_deliveries is None or rec.deliveries < rec.max_deliveries:
                    if missed is None:
                        missed = []
                    missed.append((rec.message.uuid, rec.seq, rec.deliveries, rec.timeout))
                self._retry_or_dead(rec, "max_deliveries_exceeded", dead)
        return missed

    def _adopt_orphans(self) -> None:
        """Return the deliveries of collected group members for redelivery."""
        while self.orphaned:
            token = self.orphaned.popleft()
            mine = [rec for rec in self.records.values() if rec.owner is token]
            for rec in reversed(mine):
                self._disown(rec)
                self.ready.appendleft(rec)

    def _forget_all(self) -> int:
        """The cursor is gone: drop every record (lock held); returns how many there were."""
        count = len(self.records)
        self.records = OrderedDict()
        self.ready = deque()
        self.owned = {}
        return count

    def _check(self, handle: Any, owner: Any) -> _Record:
        if not isinstance(handle, AckHandle):
            raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
        if handle._state is not self or handle._owner is not owner:
            raise AckError(
                f"this AckHandle (topic {handle.topic!r}, sequence {handle._seq}) was handed "
                "out by another subscriber; ack it with the subscriber that received it"
            )
        rec = self.records.get(handle._seq)
        if rec is None or rec.token != handle._token or rec.owner is None:
            raise AckError(
                f"the message of this AckHandle (topic {handle.topic!r}, sequence "
                f"{handle._seq}) is already settled, or was redelivered after its ack deadline"
            )
        return rec

    # -- the operations -------------------------------------------------------------------------

    def next(self, owner: InMemoryAckSubscriber) -> tuple[Message, AckHandle] | None:
        """Deliver a redelivery or the cursor's next message to ``owner``, or None."""
        dead: list[tuple[_Record, str]] = []
        redelivered = dropped = expired = 0
        missed = None
        now = kincir_core.monotonic()
        timeout = owner._ack_timeout
        token_owner = owner._ack_owner
        with self.lock:
            if not self.cursor.attached:
                # the topic was deleted: nothing to deliver. Messages waiting for redelivery
                # are dropped; delivered ones stay settleable (a deleted group's were abandoned)
                while self.ready:
                    self._settle(self.ready.popleft())
                    dropped += 1
                rec = None
            else:
                if self.orphaned:
                    self._adopt_orphans()
                if self.owned:
                    missed = self._expire(now, dead)
                rec = None
                if self.ready:
                    floor = self.cursor.floor_now()
                    wall = kincir_core.wall_ms() if self.ttl_ms is not None else 0
                    while self.ready:
                        rec = self.ready.popleft()
                        if rec.seq < floor:  # the log dropped its slot: not redelivered
                            self._settle(rec)
                            dropped += 1
                        elif (
                            self.ttl_ms is not None
                            and wall - (rec.message.enqueued_at or 0) > self.ttl_ms
                        ):
                            self._settle(rec)
                            expired += 1
                        else:
                            redelivered = 1
                            break
                        rec = None
            if rec is None and self.cursor.attached:
                got = self.cursor.take(1)
                if got:
                    msg = got[0]
                    rec = _Record(msg.sequence, msg)
                    self.records[rec.seq] = rec
            if rec is not None:
                rec.deliveries += 1
                token_owner.received += 1
                if rec.deliveries > 1:
                    token_owner.redelivered += 1
                rec.owner = token_owner
                rec.token = token = next(self.tokens)
                rec.max_deliveries = owner._max_deliveries
                rec.dead_letter_topic = owner._dead_letter_topic
                rec.timeout = timeout
                rec.deadline = now + timeout
                bucket = self.owned.get(timeout)
                if bucket is None:
                    bucket = self.owned[timeout] = OrderedDict()
                bucket[token] = rec
                handle = AckHandle(
                    self, token_owner, rec.message, token, self.log.name, rec.deliveries
                )
        if missed is not None:
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
        if dead or redelivered or dropped or expired:
            self._after(dead, redelivered, dropped, expired)
        return None if rec is None else (rec.message, handle)

    def ack_one(self, handle: AckHandle, owner: Any) -> None:
        """``ack`` of one handle (the common case, without the batch's bookkeeping)."""
        with self.lock:
            self._settle(self._check(handle, owner), 1)
            owner.acked += 1
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()

    def settle(self, handles: list[AckHandle], owner: Any, *, ack: bool, requeue: bool) -> int:
        """Ack or nack ``handles`` (all checked first: one bad handle settles none); returns
        how many went to the dead-letter topic."""
        dead: list[tuple[_Record, str]] = []
        gone = lettered = 0
        with self.lock:
            recs = [self._check(h, owner) for h in handles]
            if len({id(r) for r in recs}) != len(recs):
                raise AckError("the same AckHandle appears twice in one batch")
            attached = self.cursor.attached
            if ack:
                owner.acked += len(recs)
            else:
                owner.nacked += len(recs)
            for rec in recs:
                if ack:
                    self._settle(rec, 1)
                elif requeue and attached:
                    self._retry_or_dead(rec, "max_deliveries_exceeded", dead)
                elif requeue and (
                    rec.max_deliveries is None
                    or rec.deliveries < rec.max_deliveries
                    or rec.dead_letter_topic is None
                ):
                    # the topic was deleted: nothing to redeliver from, so it is dropped
                    self._settle(rec)
                    gone += 1
                else:
                    self._settle(rec)
                    dead.append((rec, "rejected"))
        if gone:
            _log.warning(
                "%d messages of deleted topic %r dropped: nacked for redelivery",
                gone,
                self.log.name,
            )
        if dead or gone:
            lettered = self._after(dead, 0, gone)
            if lettered:
                with self.lock:
                    owner.dead_lettered += lettered
        if not ack and requeue:
            self.log.wake_waiters()  # a waiting member takes the redelivery
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()
        return lettered

    def release(self, owner: Any) -> None:
        """``owner`` (a token) is closing: its deliveries go back for redelivery, oldest
        first."""
        with self.lock:
            mine = [rec for rec in self.records.values() if rec.owner is owner]
            for rec in reversed(mine):
                self._disown(rec)
                self.ready.appendleft(rec)
        if mine:
            self.log.wake_waiters()

    def hold_unsettled(self) -> None:
        """The cursor is about to detach: tell the log which of its delivered messages are
        still unsettled. If it is the topic's last reader, the log keeps those for the next
        reader and drops the settled ones delivered after the oldest unsettled one."""
        with self.lock:
            self.cursor.keep(sorted(self.records))

    def abandon(self) -> None:
        """The cursor is gone (its subscriber left, or its group was deleted): forget all."""
        with self.lock:
            if self.cursor.attached:  # it detaches next (after its state is forgotten)
                self.cursor.keep(sorted(self.records))
            count = self._forget_all()
        self.log.count_acks(0, 0, 0, -count)
        if not self.cursor.attached:
            self.cursor.ack = None  # nothing can use this state again: no cycle left behind

    def has_ready(self) -> bool:
        return bool(self.ready)

    def next_deadline(self) -> float | None:
        with self.lock:  # the buckets change under other members' deliveries and acks
            firsts = [next(iter(b.values())).deadline for b in self.owned.values() if b]
        return min(firsts) if firsts else None

    # -- after the lock -------------------------------------------------------------------------

    def _after(
        self,
        dead: list[tuple[_Record, str]],
        redelivered: int,
        dropped: int = 0,
        expired: int = 0,
    ) -> int:
        """Publish the dead letters; count them, the redeliveries, and the records dropped or
        expired (``_settle`` already counted them out of the in-flight gauge). Returns how
        many dead letters were published."""
        lettered = 0
        for rec, reason in dead:
            if rec.dead_letter_topic is not None and self._dead_letter(rec, reason):
                lettered += 1
                # the system gave up on it: a warning; rejected (nack(requeue=False)) and
                # dead-lettered as the application asked: debug. A drop is always a warning.
                _log.log(
                    logging.DEBUG if reason == "rejected" else logging.WARNING,
                    "message %s (topic %r, sequence %d) dead-lettered to %r after %d deliveries "
                    "(%s)",
                    rec.message.uuid,
                    self.log.name,
                    rec.seq,
                    rec.dead_letter_topic,
                    rec.deliveries,
                    reason,
                )
            else:
                dropped += 1
                if rec.dead_letter_topic is None:
                    _log.warning(
                        "message %s (topic %r, sequence %d) dropped after %d deliveries (%s): "
                        "no dead-letter topic",
                        rec.message.uuid,
                        self.log.name,
                        rec.seq,
                        rec.deliveries,
                        reason,
                    )
                else:
                    _log.warning(
                        "message %s (topic %r, sequence %d) dropped after %d deliveries (%s): "
                        "dead-letter topic %r refused it",
                        rec.message.uuid,
                        self.log.name,
                        rec.seq,
                        rec.deliveries,
                        reason,
                        rec.dead_letter_topic,
                    )
        if not self.log.count_acks(redelivered, lettered, dropped, 0, expired):
            # the topic was deleted: its totals live on the broker now
            self._count_retired(lettered, dropped, expired, redelivered, lettered)
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()
        return lettered

    def _dead_letter(self, rec: _Record, reason: str) -> bool:
        letter = dead_letter_copy(rec.message, reason, rec.deliveries, self.log.name, rec.seq)
        broker = self._broker()
        if broker is None:
            return False
        try:
            # accepted while the broker drains, and created outside max_topics
            return broker._dead_letter(rec.dead_letter_topic, letter)  # type: ignore[no-any-return]
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


AckHandle.__module__ = _MODULE
