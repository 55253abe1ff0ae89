# TopicLog: a topic's ring of slots, its readers, publishing into it and reading from it.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

cdef inline void _unlock(TopicLog log) noexcept:
    """Release the log's lock, then drop the payloads it let go of meanwhile (their last
    reference may run ``__del__`` or a weakref callback, which may call the broker)."""
    kincir_mutex_unlock(&log.lock)
    if PyList_GET_SIZE(log.graves):
        _bury(log)


cdef void _bury(TopicLog log) noexcept:
    # list slice deletion detaches the items before dropping them: a payload's finalizer that
    # publishes and reads (adding graves) finds a consistent list
    if PyList_SetSlice(log.graves, 0, PY_SSIZE_T_MAX, NULL) < 0:
        PyErr_Clear()


cdef inline bint _last_holder(Slot* slot) noexcept:
    """Whether clearing ``slot`` may free an object payload (bytes free no Python code): the
    slot holds the payload once, and once more through its delivered copy when nobody else
    holds that copy. Usually a reader or the publisher still holds the payload, and the slot
    is cleared at once; otherwise the payload goes to the log's graves."""
    cdef Py_ssize_t held = 1
    if _is_exact_bytes(slot.payload):
        return False
    if slot.message != NULL and _refcount(slot.message) == 1:
        held += 1
    return _refcount(slot.payload) <= held


cdef inline void _put(list out, Py_ssize_t i, Message msg) noexcept:
    """``out[i] = msg`` for ``i`` in range, replacing a None (never freed: safe under the log's
    lock) without an index check."""
    cdef PyObject* old = PyList_GET_ITEM(out, i)
    Py_INCREF(msg)
    PyList_SET_ITEM(out, i, <PyObject*>msg)
    Py_XDECREF(old)


cdef class TopicLog:
    """A topic: a ring of message slots addressed by sequence number, read through cursors."""

    def __cinit__(self, str name, object capacity, object ttl, bint persistence,
                  bint ordered, int overflow):
        """``capacity``: None for unbounded; ``ttl``: None for no TTL."""
        KINCIR_LIVE(LIVE_LOGS, 1)
        self.name = name
        self.capacity = -1 if capacity is None else capacity
        self.overflow = overflow
        self.room_waiters = []
        self.graves = []
        self.ttl = -1.0 if ttl is None else ttl
        self.persistence = persistence
        self.ordered = ordered
        self.ring = <Slot*>calloc(MIN_RING, sizeof(Slot))
        if self.ttl >= 0:  # publish times, kept only for a topic with a TTL
            self.stamps = <double*>calloc(MIN_RING, sizeof(double))
            if self.stamps == NULL:
                raise MemoryError("cannot allocate a topic log")
        self.positions = <uint64_t**>malloc(4 * sizeof(uint64_t*))
        if self.ring == NULL or self.positions == NULL:
            raise MemoryError("cannot allocate a topic log")
        self.positions_cap = 4
        self.mask = MIN_RING - 1
        self.head = 1
        self.tail = 1
        self.cursors = []
        self.waiters = []
        self.accepting = True
        self.created_at = _wall()
        self.last_activity = _wall()

    def __dealloc__(self):
        cdef uint64_t seq
        KINCIR_LIVE(LIVE_LOGS, -1)
        KINCIR_LIVE(LIVE_SLOTS, -<Py_ssize_t>(self.head - self.tail - self.holes))
        if self.ring != NULL:
            for seq in range(self.tail, self.head):
                _clear_slot(&self.ring[seq & self.mask])
            free(self.ring)
        free(self.stamps)
        free(self.positions)

    # -- ring management (lock held) ------------------------------------------------------------

    cdef void _release_to(self, uint64_t new_tail) noexcept:
        """Drop the log's references to the slots before ``new_tail``."""
        cdef uint64_t seq
        cdef Slot* slot
        cdef int64_t freed = 0
        cdef uint64_t size, held, fit
        if self.hole_end > self.tail:  # tombstones among the slots released
            _refill_holes(self, new_tail)
        for seq in range(self.tail, new_tail):
            slot = &self.ring[seq & self.mask]
            freed += _payload_size(slot.payload)
            if _last_holder(slot) and PyList_Append(self.graves, <object>slot.payload) < 0:
                PyErr_Clear()  # no room for the grave: drop it here, as before objects
            _clear_slot(slot)
        self.held_bytes -= freed + <int64_t>(new_tail - self.tail) * _MESSAGE_OVERHEAD
        KINCIR_LIVE(LIVE_SLOTS, -<Py_ssize_t>(new_tail - self.tail))
        self.tail = new_tail
        if self.room_waiters:
            self.room_freed = True
        size = self.mask + 1
        held = self.head - new_tail
        if size > RING_FLOOR and held * 8 < size:
            fit = RING_FLOOR
            while fit < held * 4:
                fit *= 2
            _ring_shrink(self, fit)

    cdef void _recompute_tail(self) noexcept:
        cdef Py_ssize_t count = len(self.cursors)
        cdef uint64_t low
        if count == 0:
            self.at_tail = 0
            return
        low = _min_position(self.positions, count, &self.at_tail)
        if low != self.tail:
            self._release_to(low)

    cdef void _moved(self, uint64_t old_pos) noexcept:
        """A cursor advanced from ``old_pos``: release slots every reader has passed."""
        if old_pos == self.tail:
            self.at_tail -= 1
            if self.at_tail == 0:
                if self.positions_count == 1:  # one reader: it is the new tail
                    self.at_tail = 1
                    self._release_to(self.positions[0][0])
                else:
                    self._recompute_tail()

    # -- publishing -----------------------------------------------------------------------------

    cdef int append(self, Slot* batch, Py_ssize_t count, bint letter=False) except -1:
        """Append ``count`` filled slots atomically: all of them get consecutive sequence
        numbers, or none does. Takes over the slots' references in every case."""
        cdef Py_ssize_t i
        cdef list waiters = None
        cdef PyObject* called[CALL_MAX]   # group members to wake (new references)
        cdef Py_ssize_t calls = 0
        cdef double now = _monotonic() if self.ttl >= 0 else 0.0
        cdef uint64_t held, size, seq
        cdef int64_t added = 0
        cdef Slot* slot
        # an append_outcome (_broker.pxd): APPEND_WRITTEN, or why nothing (more) was written
        cdef int outcome = APPEND_WRITTEN
        # the part of the batch written: drop_newest cuts its end, drop_oldest its start
        cdef Py_ssize_t first = 0, last = count
        if count == 0:
            return 0
        kincir_mutex_lock(&self.lock)
        try:
            # first: a force_shutdown closes the topics too; a dead letter passes a draining
            # topic
            if not self.accepting and not letter:
                outcome = APPEND_TOPIC_CLOSED if self.ended else APPEND_SHUTTING_DOWN
            elif self.closed:
                outcome = APPEND_TOPIC_DELETED
            elif not self.cursors and not self.persistence:
                self.dropped += count
                self.last_activity = batch[0].enqueued_at * 1e-3
                outcome = APPEND_DROPPED
            else:
                self.last_activity = batch[0].enqueued_at * 1e-3
                # the slots (not tombstones) bound what counts against the capacity; only
                # when that count (unread plus in flight, not the settled messages pinned
                # behind an unsettled one) is over does a publish reclaim expired messages
                held = self.head - self.tail - self.holes
                if self.capacity >= 0 and held + count > <uint64_t>self.capacity:
                    outcome = _make_room(self, count, now, &first, &last)
                    held = self.head - self.tail
                if outcome == APPEND_WRITTEN and held + (last - first) > self.mask + 1:
                    size = self.mask + 1
                    while size < held + (last - first):
                        size *= 2
                    if _ring_grow(self, size) < 0:
                        outcome = APPEND_NO_MEMORY
                if outcome == APPEND_WRITTEN:
                    seq = self.head
                    for i in range(first, last):
                        slot = &self.ring[seq & self.mask]
                        slot[0] = batch[i]
                        if self.stamps != NULL:
                            self.stamps[seq & self.mask] = now
                        added += _payload_size(slot.payload)
                        seq += 1
                    self.head = seq
                    KINCIR_LIVE(LIVE_SLOTS, last - first)
                    self.published += last - first
                    self.held_bytes += added + (last - first) * _MESSAGE_OVERHEAD
                    # take the one-shot waiters; _add_waiter brings a new list when needed
                    waiters = self.waiters
                    self.waiters = None
                    if waiters is not None:
                        self.wakes += len(waiters)
                    if self.lined:
                        calls = _call_lines(self, called)
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        if outcome:
            _clear_slots(batch, count)  # not written: give the references back
            if outcome == APPEND_MUST_WAIT:
                return 1
            if outcome == APPEND_QUEUE_FULL:
                raise QueueFull(self.name, self.capacity)
            if outcome == APPEND_TOPIC_DELETED:
                raise TopicNotFound(self.name)
            if outcome == APPEND_SHUTTING_DOWN:
                raise BrokerShutdown()
            if outcome == APPEND_TOPIC_CLOSED:
                raise TopicClosed(self.name)
            if outcome == APPEND_NO_MEMORY:
                raise MemoryError(f"cannot grow topic {self.name!r}")
            return 0
        if first:
            _clear_slots(batch, first)  # dropped by drop_oldest before they were written
        if last < count:
            _clear_slots(batch + last, count - last)  # dropped by drop_newest
        _wake_all(waiters)
        if calls:
            _wake_called(called, calls)
            if calls == CALL_MAX:  # maybe more to wake: the rest, in passes of their own
                _wake_lines(self, None, False)
        return 0

    cdef int wait_room(self, Waiter waiter, Py_ssize_t count) except -1:
        """Register ``waiter`` to be woken when ``count`` messages fit: 1 if registered, 0 if
        the publisher should retry now (room, a policy change, deletion or shutdown)."""
        cdef int waiting = 0
        cdef double now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if self.ttl >= 0:
                _expire(self, now)
            if (not self.closed and self.accepting and self.overflow == OVERFLOW_BLOCK
                    and self.capacity >= 0
                    and _held(self) + count > <uint64_t>self.capacity):
                self.room_waiters.append(waiter)
                waiting = 1
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        return waiting

    def remove_room_waiter(self, Waiter waiter):
        cdef Py_ssize_t i
        kincir_mutex_lock(&self.lock)
        for i in range(len(self.room_waiters) - 1, -1, -1):
            if self.room_waiters[i] is waiter:
                del self.room_waiters[i]
                break
        _unlock(self)

    def note_queue_full(self):
        """Count a publish refused for want of room (a block-policy timeout or nowait)."""
        kincir_mutex_lock(&self.lock)
        self.queue_full += 1
        _unlock(self)

    def configure(self, int overflow, Py_ssize_t capacity):
        """Change the topic's overflow policy and capacity (-1: unbounded); wakes blocked
        publishers to look again."""
        kincir_mutex_lock(&self.lock)
        self.overflow = overflow
        self.capacity = capacity
        _unlock(self)
        _wake_room(self)

    def count_acks(self, uint64_t redelivered, uint64_t dead_lettered, uint64_t dropped,
                   int64_t in_flight, uint64_t expired=0):
        """Add the acknowledgement layer's events to the topic's counters; False, counting
        nothing, when the topic was deleted (the caller counts on the broker's totals)."""
        kincir_mutex_lock(&self.lock)
        if self.closed:
            _unlock(self)
            return False
        self.redelivered += redelivered
        self.dead_lettered += dead_lettered
        self.dropped += dropped
        self.expired += expired
        self.delivered += dead_lettered  # settled out of the topic: consumed
        self.in_flight += in_flight
        if self.in_flight < 0:
            self.in_flight = 0
        _unlock(self)
        return True

    cpdef int64_t settle(self, Cursor cursor, uint64_t floor, int64_t count,
                         int64_t consumed=0) except? -2:
        cdef uint64_t old, new, held_from
        kincir_mutex_lock(&self.lock)
        try:
            if self.closed:  # retired: its counters are already in the broker's totals
                return -1
            self.in_flight -= count
            if self.in_flight < 0:
                self.in_flight = 0
            cursor.unsettled = cursor.unsettled - count if cursor.unsettled > count else 0
            cursor.delivered += consumed
            self.delivered += consumed
            if self.room_waiters and count:  # an in-flight message no longer counts
                self.room_freed = True
            if cursor.attached and cursor.acking:
                new = floor if floor and floor < cursor.pos else cursor.pos
                if new > cursor.floor:
                    old = cursor.floor
                    cursor.floor = new
                    self._moved(old)
            held_from = cursor.floor
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        return held_from

    # -- reading --------------------------------------------------------------------------------

    cdef inline Message _delivered(self, uint64_t seq):
        """The Message readers receive for ``seq``, built by the first reader (lock held)."""
        cdef Slot* slot = &self.ring[seq & self.mask]
        cdef Message msg
        if slot.message == NULL:
            msg = delivered_copy(slot.payload, slot.meta, slot.id_hi, slot.id_lo, self.name,
                                 <int64_t>seq, slot.enqueued_at, self.ordered)
            Py_INCREF(msg)
            slot.message = <PyObject*>msg
            return msg
        return <Message>slot.message

    cdef Message take_one(self, Cursor cursor):
        """The next message for ``cursor``, or None."""
        cdef Message got = None
        cdef uint64_t old, first
        cdef double now
        if cursor.pos == self.head:  # racy pre-check; re-checked under the lock
            return None
        now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.attached:
                if self.ttl >= 0:
                    _skip_expired(self, cursor, now)
                old = cursor.pos
                if old < self.hole_end:  # among tombstones (old < head): skip them
                    first = _skip_holes(self, old)
                    if first != self.head:
                        got = self._delivered(first)
                        _took(self, cursor, old, first, _skip_holes(self, first + 1), 1)
                    else:
                        _took(self, cursor, old, first, first, 0)
                elif old != self.head:
                    got = self._delivered(old)
                    cursor.pos = old + 1
                    if not cursor.acking:
                        cursor.delivered += 1
                        self.delivered += 1
                        self._moved(old)
                    else:  # its floor stays: in flight (not consumed) until settled
                        cursor.unsettled += 1
                        self.in_flight += 1
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        return got

    cdef list take_many(self, Cursor cursor, Py_ssize_t limit):
        """Up to ``limit`` messages for ``cursor``, in sequence order (maybe none)."""
        cdef uint64_t available = self.head - cursor.pos  # racy estimate, sizes the list
        cdef Py_ssize_t n = 0
        cdef uint64_t old, end, first, seq
        cdef double now
        cdef list out
        if available == 0 or not cursor.attached:
            return []
        if <uint64_t>limit > available:
            limit = <Py_ssize_t>available
        # made before locking (a list is GC-tracked); filled under the lock, which only
        # replaces its None items (n < limit stays in range: audited, so _put checks nothing)
        out = [None] * limit
        now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.attached:
                if self.ttl >= 0:
                    _skip_expired(self, cursor, now)
                old = cursor.pos
                end = self.head
                if end - old > <uint64_t>limit:
                    end = old + limit
                if old < self.hole_end:  # among tombstones (old < head): skip them
                    first = seq = _skip_holes(self, old)
                    while seq < self.head and n < limit:
                        _put(out, n, self._delivered(seq))
                        n += 1
                        seq = _skip_holes(self, seq + 1)
                    _took(self, cursor, old, first, seq, n)
                else:
                    while old + <uint64_t>n < end:
                        _put(out, n, self._delivered(old + n))
                        n += 1
                    if n:
                        cursor.pos = end
                        if not cursor.acking:
                            cursor.delivered += n
                            self.delivered += n
                            self._moved(old)
                        else:  # in flight (not consumed) until settled
                            cursor.unsettled += n
                            self.in_flight += n
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        if n < limit:
            del out[n:]
        return out

    # -- readers joining and leaving ------------------------------------------------------------

    cpdef int attach(self, Cursor cursor, Py_ssize_t limit) except -1:
        """Start ``cursor``: the first reader inherits held messages, later ones start at the end.

        Returns an attach_outcome (_broker.pxd): ATTACH_FULL if ``limit`` subscribers are already
        attached, ATTACH_GONE if the topic was deleted (nothing changed in either case), else
        ATTACH_OK.
        """
        cdef Py_ssize_t count
        cdef uint64_t** grown
        cdef int full = ATTACH_OK
        kincir_mutex_lock(&self.lock)
        try:
            if self.closed:
                full = ATTACH_GONE
            elif limit >= 0 and cursor.members and self._subscriber_count() >= limit:
                full = ATTACH_FULL
            elif len(self.cursors) + 1 > self.positions_cap:
                grown = <uint64_t**>realloc(self.positions,
                                            2 * self.positions_cap * sizeof(uint64_t*))
                if grown == NULL:
                    full = ATTACH_NO_MEMORY
                else:
                    self.positions = grown
                    self.positions_cap *= 2
            if full == ATTACH_OK:
                count = len(self.cursors)
                cursor.pos = self.tail if count == 0 else self.head
                cursor.floor = cursor.pos
                self.cursors.append(cursor)
                self.positions[count] = _tracked(cursor)
                self.positions_count = count + 1
                cursor.attached = True
                if cursor.pos == self.tail:
                    self.at_tail += 1
                self.last_activity = _wall()
        finally:
            _unlock(self)
        if full == ATTACH_NO_MEMORY:
            raise MemoryError("cannot add a reader")
        return full

    cpdef int join(self, Cursor cursor, Py_ssize_t limit) except -1:
        """One more subscriber on an attached group cursor: ATTACH_OK, or ATTACH_FULL if ``limit``
        subscribers are already attached, or ATTACH_GONE if the group or topic is gone (nothing
        changed)."""
        cdef int refused = ATTACH_OK
        kincir_mutex_lock(&self.lock)
        if self.closed or not cursor.attached:
            refused = ATTACH_GONE
        elif limit >= 0 and self._subscriber_count() >= limit:
            refused = ATTACH_FULL
        else:
            cursor.members += 1
            self.last_activity = _wall()
        _unlock(self)
        return refused

    def leave(self, Cursor cursor):
        """One subscriber fewer on a group cursor; the group keeps its place (durable)."""
        cdef list waiters = None
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.members > 0:
                cursor.members -= 1
            self.last_activity = _wall()
            waiters = self.waiters
            self.waiters = None
        finally:
            _unlock(self)
        _wake_all(waiters)
        _wake_lines(self)

    cpdef int detach(self, Cursor cursor) except -1:
        """Stop ``cursor``; the last reader's unread messages stay held if persistence is on."""
        cdef list waiters = None
        cdef Py_ssize_t i, count
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.attached:
                cursor.attached = False
                count = len(self.cursors)
                for i in range(count):
                    if self.cursors[i] is cursor:
                        # swap-remove, keeping positions[] aligned with cursors[]
                        self.positions[i] = self.positions[count - 1]
                        self.cursors[i] = self.cursors[count - 1]
                        del self.cursors[count - 1]
                        self.positions_count = count - 1
                        break
                self.last_activity = _wall()
                if self.cursors:
                    self._moved(_tracked(cursor)[0])
                else:
                    self.at_tail = 0
                    if not self.persistence:
                        self.dropped += self.head - self.tail - self.holes
                        self._release_to(self.head)
                    elif cursor.kept != NULL and cursor.floor < cursor.pos:
                        _drop_settled(self, cursor)
                free(cursor.kept)  # (C memory: no Python code runs)
                cursor.kept = NULL
                waiters = self.waiters
                self.waiters = None
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        _wake_all(waiters)
        if cursor.waiters:
            _wake_lines(self, cursor)
        _wake_lines(self)
        return 0

    cdef Py_ssize_t _subscriber_count(self) noexcept:
        cdef Py_ssize_t total = 0
        cdef Cursor cursor
        for cursor in self.cursors:
            total += cursor.members
        return total

    def waiter_count(self):
        """Waiters registered and not yet woken (a gauge for tests and debugging)."""
        cdef Py_ssize_t n = 0
        cdef object cursor
        kincir_mutex_lock(&self.lock)
        if self.waiters is not None:
            n = len(self.waiters)
        for cursor in self.cursors:
            if (<Cursor>cursor).waiters:
                n += len((<Cursor>cursor).waiters)
        _unlock(self)
        return n

    def wake_count(self):
        """Receives the topic has woken so far, group members and plain readers (a gauge for
        tests and debugging: a publish of k messages wakes at most k members of a group)."""
        return self.wakes

    def wake_waiters(self):
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        try:
            waiters = self.waiters
            self.waiters = None
        finally:
            _unlock(self)
        _wake_all(waiters)
        _wake_lines(self)

    def stop_accepting(self, bint end=False):
        """Refuse publishes from now on and wake the waiters to notice: the broker shuts down,
        or (``end``) the topic is closed for writing."""
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        try:
            self.accepting = False
            if end:
                self.ended = True
            waiters = self.waiters
            self.waiters = None
        finally:
            _unlock(self)
        _wake_all(waiters)
        _wake_lines(self)
        _wake_room(self)  # blocked publishers retry and meet BrokerShutdown or TopicClosed

    # -- maintenance ----------------------------------------------------------------------------

    def expire(self):
        """Run the TTL cleanup pass now; return how many (reader, message) pairs expired."""
        cdef uint64_t n
        if self.ttl < 0:
            return 0
        kincir_mutex_lock(&self.lock)
        try:
            n = _expire(self, _monotonic())
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        return n

    def clear(self):
        """Drop every held message (each reader's unread ones counted as dropped)."""
        cdef uint64_t held, lost
        cdef Cursor cursor
        kincir_mutex_lock(&self.lock)
        try:
            held = _held(self)
            for cursor in self.cursors:
                lost = self.head - cursor.pos - _holes_in(self, cursor.pos, self.head)
                cursor.dropped += lost
                self.dropped += lost
                cursor.pos = self.head
                cursor.floor = self.head
            if not self.cursors:
                self.dropped += held
            self._release_to(self.head)
            self.at_tail = len(self.cursors)
            self.last_activity = _wall()
        finally:
            _unlock(self)
        if self.room_freed:
            _wake_room(self)
        return held

    def close(self):
        """Detach every reader and drop everything held (the topic is being deleted)."""
        cdef list waiters
        cdef list no_cursors = []
        cdef Cursor cursor
        kincir_mutex_lock(&self.lock)
        self.closed = True  # first: a publish racing the deletion is refused, not lost
        _unlock(self)
        held = self.clear()
        _wake_lines(self)
        kincir_mutex_lock(&self.lock)
        try:
            for cursor in self.cursors:
                cursor.attached = False
            self.cursors = no_cursors
            self.positions_count = 0
            self.at_tail = 0
            waiters = self.waiters
            self.waiters = None
        finally:
            _unlock(self)
        _wake_all(waiters)
        _wake_room(self)  # blocked publishers retry and meet TopicNotFound
        return held

    def close_if_idle(self, double threshold):
        """Refuse publishes and readers from now on (True) if no subscriber is attached and
        nothing happened for ``threshold`` seconds; the caller then closes the topic."""
        cdef bint idle
        kincir_mutex_lock(&self.lock)
        idle = (not self.closed and self._subscriber_count() == 0
                and _wall() - self.last_activity > threshold)
        if idle:
            self.closed = True
        _unlock(self)
        return idle

    def touch(self):
        """Stamp the topic active now (a pull through ``consume``)."""
        self.last_activity = _wall()

    def append_letter(self, Message message):
        """Append a dead letter (accepted while the broker drains): False if the topic is full
        under the block policy (a dead letter never waits); raises what a publish raises."""
        cdef Slot one
        _fill_slot(&one, message)
        one.enqueued_at = _now_ms()
        return not self.append(&one, 1, True)  # takes over the reference, whatever happens

    def drained(self):
        """True when every reader with an attached subscriber has read everything."""
        cdef Cursor cursor
        cdef bint done = True
        kincir_mutex_lock(&self.lock)
        try:
            for cursor in self.cursors:
                if cursor.members and (
                        cursor.pos + _holes_in(self, cursor.pos, self.head) != self.head
                        or cursor.floor < cursor.pos and cursor.acking):
                    done = False
                    break
        finally:
            _unlock(self)
        return done

    def subscriber_count(self):
        cdef Py_ssize_t n
        kincir_mutex_lock(&self.lock)
        try:
            n = self._subscriber_count()
        finally:
            _unlock(self)
        return n

    def ring_slots(self):
        """The slots the ring has allocated (a gauge for tests and debugging)."""
        return self.mask + 1

    def snapshot(self):
        """One consistent read of the topic's gauges and counters: a TopicRow."""
        cdef uint64_t queued, published, delivered, expired, dropped, queue_full, head
        cdef uint64_t lagged, redelivered, dead_lettered
        cdef int64_t in_flight
        cdef Py_ssize_t subscribers
        cdef int64_t held_bytes
        cdef double wall, last
        kincir_mutex_lock(&self.lock)
        try:
            wall = _wall()
            queued = _queued(self)
            subscribers = self._subscriber_count()
            published = self.published
            delivered = self.delivered
            expired = self.expired
            dropped = self.dropped
            queue_full = self.queue_full
            head = self.head
            held_bytes = self.held_bytes + <int64_t>(self.mask + 1) * (
                sizeof(Slot) + (sizeof(double) if self.stamps != NULL else 0))
            last = self.last_activity
            lagged = self.lagged
            redelivered = self.redelivered
            dead_lettered = self.dead_lettered
            in_flight = self.in_flight
        finally:
            _unlock(self)
        return _TopicRow(self.name, queued, subscribers, published, delivered, expired, dropped,
                         queue_full, self.created_at, last, head, held_bytes,
                         max(0.0, wall - last), lagged, redelivered, dead_lettered, in_flight,
                         OVERFLOW_POLICIES[self.overflow],
                         None if self.capacity < 0 else self.capacity)
