# The in-flight messages of acknowledging readers: AckOwner, AckHandle (kincir.memory.AckHandle)
# and InFlight (one per acknowledging cursor, shared by a group).
# Included by _broker.pyx (one module: its cdef classes and functions see each other).
#
# The rules (locks, owner tokens, orphans, dropped slots, TTL, lazy deadlines) are those of
# kincir.memory.in_flight's docstring; the policy (dead letters, logging, waking a drain) stays
# there, in the Python subclass of InFlight, which this calls after its lock is released.
#
# A message's current delivery is its record: the records list (sequence order) owns them;
# each is also on one line (borrowed links): its ack timeout's, in deadline order, while a
# member holds it, or the ready line while it waits for redelivery. A redelivery is a new
# AckHandle taking the old one's place, so a handle goes stale by identity, with no token.
# InFlight.lock is a kincir_mutex taken before the topic's; code under it may allocate (a
# collection may run: a collected group member only queues its token on ``orphaned``).

from collections import deque as _deque

from ._errors import AckError


@cython.final
cdef class AckOwner:
    """An acknowledging subscriber as its deliveries name it (never the subscriber itself: a
    dropped one is collected): its settings and its own counts, kept under the states' locks."""

    def __init__(self, double ack_timeout, object max_deliveries, object dead_letter_topic):
        self.ack_timeout = ack_timeout
        self.max_deliveries = max_deliveries
        self.dead_letter_topic = dead_letter_topic
        self.rotation = -1


@cython.final
cdef class _Line:
    """Deliveries in order, linked through their ``lprev``/``lnext`` (borrowed: the records
    list owns them); an ack timeout's held deliveries, or those waiting for redelivery."""


cdef inline void _line_push(_Line line, AckHandle d) noexcept:
    d.line = line
    d.lnext = NULL
    d.lprev = line.last
    if line.last != NULL:
        (<AckHandle>line.last).lnext = <PyObject*>d
    else:
        line.first = <PyObject*>d
    line.last = <PyObject*>d


cdef inline void _line_push_front(_Line line, AckHandle d) noexcept:
    d.line = line
    d.lprev = NULL
    d.lnext = line.first
    if line.first != NULL:
        (<AckHandle>line.first).lprev = <PyObject*>d
    else:
        line.last = <PyObject*>d
    line.first = <PyObject*>d


cdef inline void _line_remove(AckHandle d) noexcept:
    cdef _Line line = d.line
    if d.lprev != NULL:
        (<AckHandle>d.lprev).lnext = d.lnext
    else:
        line.first = d.lnext
    if d.lnext != NULL:
        (<AckHandle>d.lnext).lprev = d.lprev
    else:
        line.last = d.lprev
    d.lprev = d.lnext = NULL
    d.line = None


@cython.final
@cython.freelist(64)
@cython.trashcan(True)  # a long records list is freed link by link: no deep recursion
cdef class AckHandle:
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it.

    One delivery of the message: a redelivery comes with a new handle, and this one goes stale.
    (A virtual subclass of ``kincir._ack.AckHandleBase``, like every backend's handle.)
    """

    @property
    def sequence(self):
        """The message's sequence number in its topic."""
        return self.seq

    @property
    def message_id(self):
        """The message's uuid."""
        return self._message.uuid

    @property
    def is_retry(self):
        """True when this is a redelivery."""
        return self.delivery_count > 1

    def __repr__(self):
        return (f"<AckHandle topic={self.topic!r} sequence={self.seq} "
                f"delivery_count={self.delivery_count}>")


# Public name: re-exported as kincir.memory.AckHandle, and its repr and tracebacks say so.
cdef const char* _HANDLE_NAME = "kincir.memory.AckHandle"
(<PyTypeObject*>AckHandle).tp_name = _HANDLE_NAME
PyType_Modified(<PyTypeObject*>AckHandle)


cdef object _missed_row(AckHandle d):
    return (d._message.uuid, d.seq, d.delivery_count, d.timeout)


cdef class InFlight:
    """The in-flight messages of one acknowledging cursor (one subscriber's, or a group's)."""

    def __init__(self, Cursor cursor):
        self.cursor = cursor
        self.log = cursor.log
        self.ready = _Line()
        self.lines = []
        self.orphaned = _deque()
        self.ttl_ms = cursor.log.ttl * 1000.0 if cursor.log.ttl >= 0 else -1.0

    def __dealloc__(self):
        self._unchain(self.first)

    cdef void _unchain(self, AckHandle d) noexcept:
        """Drop a detached records list one link at a time."""
        cdef AckHandle nxt
        while d is not None:
            nxt = d.next
            d.next = None
            d = nxt

    # -- under the lock -------------------------------------------------------------------------

    cdef AckHandle _handle(self, object message, uint64_t seq, Py_ssize_t count,
                           AckOwner owner, double now):
        cdef AckHandle d = AckHandle.__new__(AckHandle)
        cdef double timeout = owner.ack_timeout
        cdef _Line line = self.recent
        d._owner = owner
        d._message = message
        d._state = self
        d.topic = self.log.name
        d.timestamp = _wall()
        d.seq = seq
        d.delivery_count = count
        d.max_deliveries = owner.max_deliveries
        d._dead_letter_topic = owner.dead_letter_topic
        d.timeout = timeout
        d.deadline = now + timeout
        d.live = True
        if line is None or line.timeout != timeout:
            line = None
            for found in self.lines:
                if (<_Line>found).timeout == timeout:
                    line = <_Line>found
                    break
            if line is None:
                line = _Line()
                line.timeout = timeout
                self.lines.append(line)
            self.recent = line
        _line_push(line, d)
        return d

    cdef void _disown(self, AckHandle d) noexcept:
        """``d``'s delivery ends (acked, nacked, expired or returned): its handle goes stale."""
        if d.live:
            _line_remove(d)
            d.live = False

    cdef int _settle(self, AckHandle d, int64_t consumed) except -1:
        """Forget ``d`` (``consumed``: 1 when acked, else the caller counts it as dropped,
        expired or dead-lettered); the log releases its slot once no reader holds it. Returns
        what the broker must count as consumed: the topic was deleted."""
        cdef AckHandle rest
        cdef uint64_t floor = 0
        cdef int64_t held_from
        self._disown(d)
        if d.line is not None:  # waiting for redelivery
            _line_remove(d)
        rest = d.next
        if rest is not None:
            rest.prev = d.prev
        else:
            self.last = d.prev
        if d.prev != NULL:
            (<AckHandle>d.prev).next = rest
        else:
            self.first = rest
        d.next = None
        d.prev = NULL
        rest = self.first
        while rest is not None:  # in sequence order; those the log dropped come first
            if rest.seq >= self.held_from:
                floor = rest.seq
                break
            rest = rest.next
        held_from = self.log.settle(self.cursor, floor, 1, consumed)
        if held_from < 0:  # the topic was deleted: its totals live on the broker now
            return <int>consumed
        self.held_from = <uint64_t>held_from
        return 0

    cdef int _retry_or_dead(self, AckHandle d, object reason, list dead) except -1:
        self._disown(d)
        if d.max_deliveries is not None and d.delivery_count >= d.max_deliveries:
            self._settle(d, 0)
            dead.append((d, reason))
        else:
            _line_push(self.ready, d)
        return 0

    cdef bint _due(self, double now) noexcept:
        """Whether a delivery held is past its ack deadline."""
        cdef _Line line
        for found in self.lines:
            line = <_Line>found
            if line.first != NULL and (<AckHandle>line.first).deadline <= now:
                return True
        return False

    cdef list _expire(self, double now, list dead):
        """Redeliver (or dead-letter) the deliveries past their ack deadline; returns the rows
        of those going back for redelivery, to log once the lock is released (None: none)."""
        cdef list missed = None
        cdef _Line line
        cdef AckHandle d
        for found in self.lines:
            line = <_Line>found
            while line.first != NULL:
                d = <AckHandle>line.first
                if d.deadline > now:
                    break
                if d.max_deliveries is None or d.delivery_count < d.max_deliveries:
                    if missed is None:
                        missed = []
                    missed.append(_missed_row(d))
                self._retry_or_dead(d, "max_deliveries_exceeded", dead)
        return missed

    cdef int _give_back(self, object owner) except -1:
        """``owner``'s deliveries go back for redelivery, before the others, oldest first."""
        cdef PyObject* at = self.last
        cdef AckHandle d
        cdef int count = 0
        while at != NULL:
            d = <AckHandle>at
            at = d.prev
            if d.live and d._owner is owner:
                self._disown(d)
                _line_push_front(self.ready, d)
                count += 1
        return count

    cdef AckHandle _check(self, object handle, object owner):
        cdef AckHandle d
        if not isinstance(handle, AckHandle):
            raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
        d = <AckHandle>handle
        if d._state is not self or d._owner is not owner:
            raise AckError(
                f"this AckHandle (topic {d.topic!r}, sequence {d.seq}) was handed "
                "out by another subscriber; ack it with the subscriber that received it"
            )
        if not d.live:
            raise AckError(
                f"the message of this AckHandle (topic {d.topic!r}, sequence "
                f"{d.seq}) is already settled, or was redelivered after its ack deadline"
            )
        return d

    cdef list _unsettled(self):
        cdef list seqs = []
        cdef AckHandle d = self.first
        while d is not None:
            seqs.append(d.seq)
            d = d.next
        return seqs

    # -- the operations -------------------------------------------------------------------------

    cdef object _next(self, AckOwner owner):
        cdef list dead = None
        cdef list missed = None
        cdef Py_ssize_t redelivered = 0, dropped = 0, expired = 0
        cdef double now = _monotonic()
        cdef AckHandle old = None
        cdef AckHandle d = None
        cdef Message msg
        cdef uint64_t floor
        cdef int64_t wall
        kincir_mutex_lock(&self.lock)
        try:
            if not self.cursor.attached:
                # the topic was deleted: nothing to deliver. Messages waiting for redelivery
                # are dropped; delivered ones stay settleable (a deleted group's were abandoned)
                while self.ready.first != NULL:
                    self._settle(<AckHandle>self.ready.first, 0)
                    dropped += 1
            else:
                if self.orphaned:
                    while self.orphaned:
                        self._give_back(self.orphaned.popleft())
                if self._due(now):
                    dead = []
                    missed = self._expire(now, dead)
                if self.ready.first != NULL:
                    floor = self.cursor.floor_now()
                    wall = _now_ms() if self.ttl_ms >= 0 else 0
                    while self.ready.first != NULL:
                        old = <AckHandle>self.ready.first
                        _line_remove(old)
                        if old.seq < floor:  # the log dropped its slot: not redelivered
                            self._settle(old, 0)
                            dropped += 1
                        elif (self.ttl_ms >= 0
                              and wall - (old._message.enqueued_at or 0) > self.ttl_ms):
                            self._settle(old, 0)
                            expired += 1
                        else:
                            redelivered = 1
                            break
                        old = None
            if old is not None:
                d = self._handle(old._message, old.seq, old.delivery_count + 1, owner, now)
                # the redelivery takes the old delivery's place in the records list
                d.prev = old.prev
                d.next = old.next
                if old.next is not None:
                    old.next.prev = <PyObject*>d
                else:
                    self.last = <PyObject*>d
                if old.prev != NULL:
                    (<AckHandle>old.prev).next = d
                else:
                    self.first = d
                old.next = None
                old.prev = NULL
                owner.redelivered += 1
            elif self.cursor.attached:
                msg = self.log.take_one(self.cursor)
                if msg is not None:
                    d = self._handle(msg, <uint64_t>msg._sequence, 1, owner, now)
                    d.prev = self.last
                    if self.last != NULL:
                        (<AckHandle>self.last).next = d
                    else:
                        self.first = d
                    self.last = <PyObject*>d
            if d is not None:
                owner.received += 1
        finally:
            kincir_mutex_unlock(&self.lock)
        if missed is not None:
            self._missed(missed)
        if dead or redelivered or dropped or expired:
            self._after([] if dead is None else dead, redelivered, dropped, expired)
        if d is None:
            return None
        return (d._message, d)

    def next(self, AckOwner owner):
        """Deliver a redelivery or the cursor's next message to ``owner``: (Message, handle),
        or None."""
        return self._next(owner)

    cdef int _ack_one(self, AckHandle d, AckOwner owner) except -1:
        cdef int retired
        kincir_mutex_lock(&self.lock)
        try:
            retired = self._settle(self._check(d, owner), 1)
            owner.acked += 1
        finally:
            kincir_mutex_unlock(&self.lock)
        if retired:
            self._count_retired(retired, 0, 0, 0, 0)
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()
        return 0

    def settle(self, list handles, AckOwner owner, bint ack, bint requeue):
        """Ack or nack ``handles`` (all checked first: one bad handle settles none); returns
        how many went to the dead-letter topic."""
        cdef list dead = []
        cdef list checked = []
        cdef Py_ssize_t gone = 0, retired = 0, lettered = 0
        cdef bint attached
        cdef AckHandle d
        kincir_mutex_lock(&self.lock)
        try:
            for handle in handles:
                checked.append(self._check(handle, owner))
            if len(set(checked)) != len(checked):
                raise AckError("the same AckHandle appears twice in one batch")
            attached = self.cursor.attached
            if ack:
                owner.acked += len(checked)
            else:
                owner.nacked += len(checked)
            for found in checked:
                d = <AckHandle>found
                if ack:
                    retired += self._settle(d, 1)
                elif requeue and attached:
                    self._retry_or_dead(d, "max_deliveries_exceeded", dead)
                elif requeue and (d.max_deliveries is None
                                  or d.delivery_count < d.max_deliveries
                                  or d._dead_letter_topic is None):
                    # the topic was deleted: nothing to redeliver from, so it is dropped
                    self._settle(d, 0)
                    gone += 1
                else:
                    self._settle(d, 0)
                    dead.append((d, "rejected"))
        finally:
            kincir_mutex_unlock(&self.lock)
        if retired:
            self._count_retired(retired, 0, 0, 0, 0)
        if gone:
            self._dropped_deleted(gone)
        if dead or gone:
            lettered = self._after(dead, 0, gone)
            if lettered:
                kincir_mutex_lock(&self.lock)
                owner.dead_lettered += lettered
                kincir_mutex_unlock(&self.lock)
        if not ack and requeue:
            self.log.wake_waiters()  # a waiting member takes the redelivery
        if not self.log.accepting:  # the broker is shutting down
            self.wake_drain()
        return lettered

    def check(self, list handles, AckOwner owner):
        """Raise what settling ``handles`` would (TypeError, AckError), settling nothing."""
        kincir_mutex_lock(&self.lock)
        try:
            for handle in handles:
                self._check(handle, owner)
        finally:
            kincir_mutex_unlock(&self.lock)

    def extend(self, handle, AckOwner owner):
        """Restart the ack deadline of ``handle``'s delivery from now."""
        cdef AckHandle d
        cdef _Line line
        kincir_mutex_lock(&self.lock)
        try:
            d = self._check(handle, owner)
            d.deadline = _monotonic() + d.timeout
            line = d.line  # one timeout's deliveries in deadline order: now due last
            _line_remove(d)
            _line_push(line, d)
        finally:
            kincir_mutex_unlock(&self.lock)

    def release(self, AckOwner owner):
        """``owner`` is closing: its deliveries go back for redelivery, oldest first."""
        cdef int count
        kincir_mutex_lock(&self.lock)
        try:
            count = self._give_back(owner)
        finally:
            kincir_mutex_unlock(&self.lock)
        if count:
            self.log.wake_waiters()

    def hold_unsettled(self):
        """The cursor is about to detach: tell the log which of its delivered messages are
        still unsettled. If it is the topic's last reader, the log keeps those for the next
        reader and drops the settled ones delivered after the oldest unsettled one."""
        kincir_mutex_lock(&self.lock)
        try:
            self.cursor.keep(self._unsettled())
        finally:
            kincir_mutex_unlock(&self.lock)

    def abandon(self):
        """The cursor is gone (its subscriber left, or its group was deleted): forget all."""
        cdef AckHandle chain = None
        cdef AckHandle d
        cdef int64_t count = 0
        kincir_mutex_lock(&self.lock)
        try:
            if self.cursor.attached:  # it detaches next (after its state is forgotten)
                self.cursor.keep(self._unsettled())
            chain = self.first
            d = chain
            while d is not None:
                self._disown(d)
                if d.line is not None:
                    _line_remove(d)
                count += 1
                d = d.next
            self.first = None
            self.last = NULL
        finally:
            kincir_mutex_unlock(&self.lock)
        self._unchain(chain)  # after the lock: a message freed may free its payload
        self.log.count_acks(0, 0, 0, -count)
        if not self.cursor.attached:
            self.cursor.ack = None  # nothing can use this state again: no cycle left behind

    def has_ready(self):
        """Whether a message waits for redelivery (read without the lock: a hint)."""
        return self.ready.first != NULL

    def next_deadline(self):
        """The earliest ack deadline of the deliveries held (engine clock), or None."""
        cdef double earliest = 0.0
        cdef bint found = False
        cdef _Line line
        kincir_mutex_lock(&self.lock)
        for each in self.lines:
            line = <_Line>each
            if line.first != NULL and (not found
                                       or (<AckHandle>line.first).deadline < earliest):
                earliest = (<AckHandle>line.first).deadline
                found = True
        kincir_mutex_unlock(&self.lock)
        return earliest if found else None

    def owned_by(self, AckOwner owner):
        """How many deliveries ``owner`` holds unsettled."""
        cdef Py_ssize_t count = 0
        cdef AckHandle d
        kincir_mutex_lock(&self.lock)
        d = self.first
        while d is not None:
            if d.live and d._owner is owner:
                count += 1
            d = d.next
        kincir_mutex_unlock(&self.lock)
        return count


def deliver(SubscriberKernel subscriber, AckOwner owner):
    """The next (Message, handle) for ``subscriber`` (whose token is ``owner``) from the states
    of its cursors, taken in turn (each state's redeliveries first), or None. The states are
    ``owner._cache`` while the subscriber's cursors are the ones cached, else
    ``subscriber._states()``."""
    cdef tuple cached = owner._cache
    cdef list states
    cdef Py_ssize_t count, start, i
    cdef object got
    if cached is not None and cached[0] is subscriber.cursors:
        states = cached[1]
    else:
        states = subscriber._states()
    count = len(states)
    if count == 0:
        return None
    start = (owner.rotation + 1) % count
    owner.rotation = start
    for i in range(count):
        got = (<InFlight?>states[(start + i) % count])._next(owner)
        if got is not None:
            return got
    return None


def ack_one(handle, AckOwner owner):
    """Ack ``handle`` for the subscriber whose token is ``owner`` (TypeError for anything but a
    handle, AckError for a settled or foreign one)."""
    cdef AckHandle d
    if not isinstance(handle, AckHandle):
        raise TypeError(f"expected an AckHandle, not {type(handle).__name__}")
    d = <AckHandle>handle
    if d._state is None:
        raise AckError("this AckHandle was not handed out by a subscriber")
    d._state._ack_one(d, owner)
