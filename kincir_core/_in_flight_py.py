"""The twin's in-flight messages of acknowledging readers (part of the pure-Python kernel; see
``_broker_py.py``; the compiled engine's ``_in_flight.pxi``): ``AckOwner``, ``AckHandle``
(``kincir.memory.AckHandle``) and ``InFlight``, with ``deliver`` and ``ack_one``.

The rules are those of ``kincir.memory.in_flight``'s docstring; its ``_AckState`` subclasses
``InFlight`` with the policy (dead letters, logging, waking a drain), which this calls once its
lock is released. A message's current delivery is its record; a redelivery is a new
``AckHandle`` in its place, so a handle goes stale by identity. Records are kept by sequence (in
delivery order, so in sequence order), held ones in one insertion-ordered dict per ack timeout
(so in deadline order), ready ones in a deque.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ._errors import AckError
from ._waiting_py import _now_ms, monotonic

if TYPE_CHECKING:
    from ._cursor_py import Cursor


class AckOwner:
    """An acknowledging subscriber as its deliveries name it (never the subscriber itself: a
    dropped one is collected): its settings and its own counts, kept under the states' locks."""

    __slots__ = (
        "_cache",
        "ack_timeout",
        "acked",
        "dead_letter_topic",
        "dead_lettered",
        "max_deliveries",
        "nacked",
        "received",
        "redelivered",
        "rotation",
    )

    def __init__(
        self, ack_timeout: float, max_deliveries: int | None, dead_letter_topic: str | None
    ) -> None:
        self.ack_timeout = float(ack_timeout)
        self.max_deliveries = max_deliveries
        self.dead_letter_topic = dead_letter_topic
        self.received = self.redelivered = self.acked = self.nacked = self.dead_lettered = 0
        self.rotation = -1
        self._cache: tuple[Any, list[Any]] | None = None  # (its subscriber's cursors, states)


class AckHandle:
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it.

    One delivery of the message: a redelivery comes with a new handle, and this one goes stale.
    (A virtual subclass of ``kincir._ack.AckHandleBase``, like every backend's handle.)
    """

    __module__ = "kincir.memory"

    __slots__ = (
        "_dead_letter_topic",
        "_message",
        "_owner",
        "_state",
        "deadline",
        "delivery_count",
        "live",
        "max_deliveries",
        "seq",
        "timeout",
        "timestamp",
        "topic",
    )

    _owner: Any
    _message: Any
    _state: InFlight
    topic: str
    timestamp: float
    delivery_count: int
    _dead_letter_topic: str | None
    max_deliveries: int | None
    seq: int
    timeout: float
    deadline: float
    live: bool  # the message's current delivery, held by _owner

    @property
    def sequence(self) -> int:
        """The message's sequence number in its topic."""
        return self.seq

    @property
    def message_id(self) -> str:
        """The message's uuid."""
        return self._message.uuid  # type: ignore[no-any-return]

    @property
    def is_retry(self) -> bool:
        """True when this is a redelivery."""
        return self.delivery_count > 1

    def __repr__(self) -> str:
        return (
            f"<AckHandle topic={self.topic!r} sequence={self.seq} "
            f"delivery_count={self.delivery_count}>"
        )


class InFlight:
    """The in-flight messages of one acknowledging cursor (one subscriber's, or a group's)."""

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.log = cursor.log
        self.lock = threading.Lock()
        self.records: OrderedDict[int, Any] = OrderedDict()  # by sequence: current deliveries
        self.ready: deque[Any] = deque()  # waiting for redelivery
        # ack timeout -> the held deliveries with that timeout, by id: in deadline order
        self.owned: dict[float, OrderedDict[int, Any]] = {}
        self.orphaned: deque[object] = deque()  # owner tokens of collected group members
        # the log holds this cursor's slots from here (as of the last settle): an older record's
        # slot was dropped (clear_topic, drop_oldest), and it must not hold the floor back
        self.held_from = 0
        ttl = cursor.log.ttl
        self.ttl_ms = None if ttl is None or ttl < 0 else ttl * 1000.0

    # -- under the lock -------------------------------------------------------------------------

    def _handle(self, message: Any, seq: int, count: int, owner: AckOwner, now: float) -> Any:
        d = AckHandle.__new__(AckHandle)
        d._owner = owner
        d._message = message
        d._state = self
        d.topic = self.log.name
        d.timestamp = time.time()
        d.seq = seq
        d.delivery_count = count
        d.max_deliveries = owner.max_deliveries
        d._dead_letter_topic = owner.dead_letter_topic
        d.timeout = timeout = owner.ack_timeout
        d.deadline = now + timeout
        d.live = True
        bucket = self.owned.get(timeout)
        if bucket is None:
            bucket = self.owned[timeout] = OrderedDict()
        bucket[id(d)] = d
        self.records[seq] = d
        return d

    def _disown(self, d: Any) -> None:
        """``d``'s delivery ends (acked, nacked, expired or returned): its handle goes stale."""
        if d.live:
            del self.owned[d.timeout][id(d)]
            d.live = False

    def _settle(self, d: Any, consumed: int) -> int:
        """Forget ``d`` (``consumed``: 1 when acked, else the caller counts it as dropped,
        expired or dead-lettered); the log releases its slot once no reader holds it. Returns
        what the broker must count as consumed: the topic was deleted."""
        self._disown(d)
        del self.records[d.seq]
        floor = 0
        for seq in self.records:  # in sequence order; those the log dropped come first
            if seq >= self.held_from:
                floor = seq
                break
        held_from = self.cursor.settle(floor, 1, consumed)
        if held_from < 0:  # the topic was deleted: its totals live on the broker now
            return consumed
        self.held_from = held_from
        return 0

    def _retry_or_dead(self, d: Any, reason: str, dead: list[tuple[Any, str]]) -> None:
        self._disown(d)
        if d.max_deliveries is not None and d.delivery_count >= d.max_deliveries:
            self._settle(d, 0)
            dead.append((d, reason))
        else:
            self.ready.append(d)

    def _due(self, now: float) -> bool:
        """Whether a delivery held is past its ack deadline."""
        return any(
            bucket and next(iter(bucket.values())).deadline <= now for bucket in self.owned.values()
        )

    def _expire(self, now: float, dead: list[tuple[Any, str]]) -> list[tuple[Any, ...]] | None:
        """Redeliver (or dead-letter) the deliveries past their ack deadline; returns the rows
        of those going back for redelivery, to log once the lock is released (None: none)."""
        missed = None
        for bucket in self.owned.values():
            while bucket:
                d = next(iter(bucket.values()))
                if d.deadline > now:
                    break
                if d.max_deliveries is None or d.delivery_count < d.max_deliveries:
                    if missed is None:
                        missed = []
                    missed.append((d._message.uuid, d.seq, d.delivery_count, d.timeout))
                self._retry_or_dead(d, "max_deliveries_exceeded", dead)
        return missed

    def _give_back(self, owner: object) -> int:
        """``owner``'s deliveries go back for redelivery, before the others, oldest first."""
        mine = [d for d in self.records.values() if d.live and d._owner is owner]
        for d in reversed(mine):
            self._disown(d)
            self.ready.appendleft(d)
        return len(mine)

    def _check(self, handle: Any, owner: object) -> Any:
        if not isinstance(handle, AckHandle):
            raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
        if handle._state is not self or handle._owner is not owner:
            raise AckError(
                f"this AckHandle (topic {handle.topic!r}, sequence {handle.seq}) was handed "
                "out by another subscriber; ack it with the subscriber that received it"
            )
        if not handle.live:
            raise AckError(
                f"the message of this AckHandle (topic {handle.topic!r}, sequence "
                f"{handle.seq}) is already settled, or was redelivered after its ack deadline"
            )
        return handle

    # -- the operations -------------------------------------------------------------------------

    def next(self, owner: AckOwner) -> tuple[Any, Any] | None:
        """Deliver a redelivery or the cursor's next message to ``owner``: (Message, handle),
        or None."""
        dead: list[tuple[Any, str]] = []
        redelivered = dropped = expired = 0
        missed = None
        d = old = None
        now = monotonic()
        with self.lock:
            if not self.cursor.attached:
                # the topic was deleted: nothing to deliver. Messages waiting for redelivery
                # are dropped; delivered ones stay settleable (a deleted group's were abandoned)
                while self.ready:
                    self._settle(self.ready.popleft(), 0)
                    dropped += 1
            else:
                while self.orphaned:
                    self._give_back(self.orphaned.popleft())
                if self._due(now):
                    missed = self._expire(now, dead)
                if self.ready:
                    floor = self.cursor.floor_now()
                    wall = _now_ms() if self.ttl_ms is not None else 0
                    while self.ready:
                        old = self.ready.popleft()
                        if old.seq < floor:  # the log dropped its slot: not redelivered
                            self._settle(old, 0)
                            dropped += 1
                        elif (
                            self.ttl_ms is not None
                            and wall - (old._message.enqueued_at or 0) > self.ttl_ms
                        ):
                            self._settle(old, 0)
                            expired += 1
                        else:
                            redelivered = 1
                            break
                        old = None
            if old is not None:
                # the redelivery takes the old delivery's place among the records
                d = self._handle(old._message, old.seq, old.delivery_count + 1, owner, now)
                owner.redelivered += 1
            elif self.cursor.attached:
                got = self.cursor.take(1)
                if got:
                    msg = got[0]
                    d = self._handle(msg, msg.sequence, 1, owner, now)  # type: ignore[arg-type]
            if d is not None:
                owner.received += 1
        if missed is not None:
            self._missed(missed)  # type: ignore[attr-defined]
        if dead or redelivered or dropped or expired:
            self._after(dead, redelivered, dropped, expired)  # type: ignore[attr-defined]
        return None if d is None else (d._message, d)

    def _ack_one(self, handle: Any, owner: AckOwner) -> None:
        with self.lock:
            retired = self._settle(self._check(handle, owner), 1)
            owner.acked += 1
        if retired:
            self._count_retired(retired, 0, 0, 0, 0)  # type: ignore[attr-defined]
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()  # type: ignore[attr-defined]

    def settle(self, handles: list[Any], owner: AckOwner, ack: bool, requeue: bool) -> int:
        """Ack or nack ``handles`` (all checked first: one bad handle settles none); returns
        how many went to the dead-letter topic."""
        dead: list[tuple[Any, str]] = []
        gone = retired = lettered = 0
        with self.lock:
            checked = [self._check(h, owner) for h in handles]
            if len({id(d) for d in checked}) != len(checked):
                raise AckError("the same AckHandle appears twice in one batch")
            attached = self.cursor.attached
            if ack:
                owner.acked += len(checked)
            else:
                owner.nacked += len(checked)
            for d in checked:
                if ack:
                    retired += self._settle(d, 1)
                elif requeue and attached:
                    self._retry_or_dead(d, "max_deliveries_exceeded", dead)
                elif requeue and (
                    d.max_deliveries is None
                    or d.delivery_count < d.max_deliveries
                    or d._dead_letter_topic is None
                ):
                    # the topic was deleted: nothing to redeliver from, so it is dropped
                    self._settle(d, 0)
                    gone += 1
                else:
                    self._settle(d, 0)
                    dead.append((d, "rejected"))
        if retired:
            self._count_retired(retired, 0, 0, 0, 0)  # type: ignore[attr-defined]
        if gone:
            self._dropped_deleted(gone)  # type: ignore[attr-defined]
        if dead or gone:
            lettered = self._after(dead, 0, gone)  # type: ignore[attr-defined]
            if lettered:
                with self.lock:
                    owner.dead_lettered += lettered
        if not ack and requeue:
            self.log.wake_waiters()  # a waiting member takes the redelivery
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()  # type: ignore[attr-defined]
        return lettered

    def check(self, handles: list[Any], owner: AckOwner) -> None:
        """Raise what settling ``handles`` would (TypeError, AckError), settling nothing."""
        with self.lock:
            for handle in handles:
                self._check(handle, owner)

    def extend(self, handle: Any, owner: AckOwner) -> None:
        """Restart the ack deadline of ``handle``'s delivery from now."""
        with self.lock:
            d = self._check(handle, owner)
            d.deadline = monotonic() + d.timeout
            # its bucket holds one timeout's deliveries in deadline order: now due last
            self.owned[d.timeout].move_to_end(id(d))

    def release(self, owner: AckOwner) -> None:
        """``owner`` is closing: its deliveries go back for redelivery, oldest first."""
        with self.lock:
            count = self._give_back(owner)
        if count:
            self.log.wake_waiters()

    def hold_unsettled(self) -> None:
        """The cursor is about to detach: tell the log which of its delivered messages are
        still unsettled. If it is the topic's last reader, the log keeps those for the next
        reader and drops the settled ones delivered after the oldest unsettled one."""
        with self.lock:
            self.cursor.keep(list(self.records))

    def abandon(self) -> None:
        """The cursor is gone (its subscriber left, or its group was deleted): forget all."""
        with self.lock:
            if self.cursor.attached:  # it detaches next (after its state is forgotten)
                self.cursor.keep(list(self.records))
            for d in self.records.values():
                d.live = False
            count = len(self.records)
            self.records = OrderedDict()
            self.ready = deque()
            self.owned = {}
        self.log.count_acks(0, 0, 0, -count)
        if not self.cursor.attached:
            self.cursor.ack = None  # nothing can use this state again: no cycle left behind

    def has_ready(self) -> bool:
        """Whether a message waits for redelivery (read without the lock: a hint)."""
        return bool(self.ready)

    def next_deadline(self) -> float | None:
        """The earliest ack deadline of the deliveries held (engine clock), or None."""
        with self.lock:  # the buckets change under other members' deliveries and acks
            firsts = [next(iter(b.values())).deadline for b in self.owned.values() if b]
        return min(firsts) if firsts else None

    def owned_by(self, owner: AckOwner) -> int:
        """How many deliveries ``owner`` holds unsettled."""
        with self.lock:
            return sum(1 for d in self.records.values() if d.live and d._owner is owner)


def deliver(subscriber: Any, owner: AckOwner) -> tuple[Any, Any] | None:
    """The next (Message, handle) for ``subscriber`` (whose token is ``owner``) from the states
    of its cursors, taken in turn (each state's redeliveries first), or None. The states are
    ``owner._cache`` while the subscriber's cursors are the ones cached, else
    ``subscriber._states()``."""
    cached = owner._cache
    if cached is not None and cached[0] is subscriber._attached_cursors():
        states = cached[1]
    else:
        states = subscriber._states()
    count = len(states)
    if not count:
        return None
    start = owner.rotation = (owner.rotation + 1) % count
    for i in range(count):
        got = states[(start + i) % count].next(owner)
        if got is not None:
            return got  # type: ignore[no-any-return]
    return None


def ack_one(handle: Any, owner: AckOwner) -> None:
    """Ack ``handle`` for the subscriber whose token is ``owner`` (TypeError for anything but a
    handle, AckError for a settled or foreign one)."""
    if not isinstance(handle, AckHandle):
        raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
    state = getattr(handle, "_state", None)
    if state is None:
        raise AckError("this AckHandle was not handed out by a subscriber")
    state._ack_one(handle, owner)
