# cython: language_level=3, embedsignature=True, binding=False
"""The engine's kernel: topic logs, cursors, waiting, and the hot calls.

Only this is written twice (the twin is _broker_py.py). The broker's topic management, groups,
lifecycle and snapshots (_topics.py) and a subscriber's subscriptions (_subscriptions.py) are
written once, in Python, above it: they subclass BrokerKernel and SubscriberKernel and call the
TopicLog and Cursor methods below; the hot calls (publish*, try_receive*, receive*) never leave
this module while the topic exists.

A topic is a ring of message slots addressed by sequence number (slot = seq & mask), with a head
(the next sequence to assign) and a tail (the oldest sequence still held). Every reader owns a
cursor, the sequence it reads next; publishing writes each slot once whatever the number of
readers, and a slot is released once every cursor has passed it. ``at_tail`` counts the cursors
sitting on the tail, so the O(readers) minimum scan runs once per tail advance, not per read.

Ownership: a ring slot (see Slot in _broker.pxd) holds strong references to a message's payload
and metadata, taken when the slot is written, and to the Message readers receive, built by the
first reader that reaches the slot and shared by the others; all are dropped when the slot is
released. Publishing therefore writes the ring sequentially and allocates no object, and a
message nobody reads never becomes one. Freeing a Message, bytes or a dict of str never runs
Python code, and building a Message allocates only an object the GC does not track, so both may
happen while the topic lock is held.

Locks: each TopicLog has a mutex (_lock.h: PyMutex, or the GIL itself on 3.11/3.12) guarding
its ring, cursors, waiter list and counters; the broker's mutex guards its list of shutdown
waiters; a subscriber's mutex guards its set of cursors. Order: subscriber, then broker, then
topic. While a mutex is held nothing allocates a GC-tracked object or calls Python code, so no
finalizer can re-enter the engine. The topic table itself is changed only by the Python layer,
under its own reentrant lock (never taken under a mutex); the hot path reads it without one.

Waiting: receive_sync blocks with the GIL released on a one-shot SyncWaiter (a PyThread lock
used as a semaphore), in slices, checking signals between them so Ctrl-C interrupts it. An
asyncio receive registers an AsyncWaiter (a future on its loop). A publish takes the topic's
waiter list under the lock and wakes each waiter after unlocking: the thread-safe wake-up is paid
only when someone waits. A consumer group's members wait in line on its cursor, and only the
first is on the topic's list: a publish wakes one member, which passes the wake on to the next
when it stops waiting with messages still unread (one member woken per message, and none left
waiting beside unread messages). Only waiting releases the GIL; the ``nogil`` helpers below are
pure C (cursor and expiry scans) and run with the GIL held, since dropping it costs more than
they do.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from cpython.pythread cimport (
    PY_LOCK_ACQUIRED,
    PyLockStatus,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_get_thread_ident,
    PyThread_release_lock,
    PyThread_type_lock,
)
from cpython.bytes cimport PyBytes_CheckExact
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.time cimport PyTime_MonotonicRaw, PyTime_TimeRaw
from libc.stdint cimport int64_t, uint64_t
# PyMem_Raw*: the C allocator, but seen by tracemalloc, so memory measurements include the rings
from cpython.mem cimport PyMem_RawCalloc as calloc
from cpython.mem cimport PyMem_RawFree as free
from cpython.mem cimport PyMem_RawMalloc as malloc
from cpython.mem cimport PyMem_RawRealloc as realloc

from ._message cimport Message, check_batch, delivered_copy, new_id

from asyncio import get_running_loop as _get_running_loop
from asyncio import timeout as _asyncio_timeout

from ._validate import OVERFLOW_POLICIES, check_batch_size, check_timeout, validate_topic_name

from ._codes import AppendOutcome as _AppendOutcome
from ._codes import AttachOutcome as _AttachOutcome
from ._codes import BrokerState as _BrokerState
from ._rows import CursorCounts as _CursorCounts
from ._rows import TopicRow as _TopicRow
from ._errors import BrokerShutdown, QueueFull, TopicNotFound

cdef extern from "Python.h":
    Py_ssize_t PyBytes_GET_SIZE(object)
    bint PyObject_CheckBuffer(object obj)

cdef extern from "_debug.h":
    bint KINCIR_DEBUG_BUILD
    void KINCIR_LIVE(int kind, Py_ssize_t delta) noexcept nogil
    Py_ssize_t kincir_live_count(int kind) noexcept nogil

cdef enum:
    LIVE_LOGS = 0
    LIVE_CURSORS = 1
    LIVE_SYNC_WAITERS = 2
    LIVE_ASYNC_WAITERS = 3
    LIVE_PUBLISH_OPS = 4
    LIVE_RECEIVE_OPS = 5
    LIVE_SLOTS = 6

_LIVE_NAMES = ("topic_logs", "cursors", "sync_waiters", "async_waiters", "publish_ops",
               "receive_ops", "held_slots")


def _live_objects():
    """Engine objects (and held ring slots) alive now, by kind, in a KINCIR_DEBUG=1 build;
    None in a normal build."""
    if not KINCIR_DEBUG_BUILD:
        return None
    return {name: kincir_live_count(i) for i, name in enumerate(_LIVE_NAMES)}


cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(
        PyThread_type_lock lock, long long microseconds, int intr_flag) nogil

cdef enum:
    MIN_RING = 16
    # A ring that grew shrinks back once it is less than 1/8 full, to four times what it holds
    # but never below RING_FLOOR slots: it grows only when full, so a steady queue never resizes.
    RING_FLOOR = 1024
    WAIT_SLICE_US = 50000
    OVERFLOW_ERROR = 0
    OVERFLOW_BLOCK = 1
    OVERFLOW_DROP_OLDEST = 2
    OVERFLOW_DROP_NEWEST = 3

# The C enums of _broker.pxd mirror the IntEnums of _codes.py: the same names and values.
if (tuple(_BrokerState) != (RUNNING, DRAINING, STOPPED)
        or tuple(_AppendOutcome) != (APPEND_WRITTEN, APPEND_DROPPED, APPEND_QUEUE_FULL,
                                     APPEND_TOPIC_DELETED, APPEND_SHUTTING_DOWN,
                                     APPEND_NO_MEMORY, APPEND_MUST_WAIT)
        or tuple(_AttachOutcome) != (ATTACH_OK, ATTACH_FULL, ATTACH_NO_MEMORY, ATTACH_GONE)):
    raise ImportError("the codes of kincir_core/_broker.pxd differ from kincir_core/_codes.py")

# Estimated bytes a held message costs beyond its payload and its ring slot: the bytes object
# header; the Message readers share adds 80 once read. Used by the memory estimate, kept
# incrementally; the estimate adds every allocated slot of the ring (sizeof(Slot), and a double
# with a TTL).
MESSAGE_OVERHEAD = 33  # the bytes object header (a read adds a Message)
cdef int64_t _MESSAGE_OVERHEAD = MESSAGE_OVERHEAD


# Added to every clock read of the engine's TTL and waiting logic; moved forward only by
# _advance_clock, for tests that must step time (TTL, ack deadlines) without sleeping.
cdef double _clock_offset = 0.0


cdef inline double _monotonic() noexcept nogil:
    return <double>PyTime_MonotonicRaw() * 1e-9 + _clock_offset


def monotonic():
    """The engine's monotonic clock, in seconds (TTL and ack deadlines are measured on it)."""
    return _monotonic()


def wall_ms():
    """Unix time in milliseconds, moved by _advance_clock like the engine's monotonic clock
    (the age of a delivered message is measured against its ``enqueued_at`` on it)."""
    return _now_ms()


def _reset_clock():
    """Undo every _advance_clock (tests only: call it when no broker that saw the stepped
    clock is still in use)."""
    global _clock_offset
    _clock_offset = 0.0


def _advance_clock(double seconds):
    """Move the engine's clock forward by ``seconds`` (tests only: it is process-wide)."""
    global _clock_offset
    if not seconds >= 0:
        raise ValueError("the clock only moves forward")
    _clock_offset += seconds


cdef inline double _wall() noexcept nogil:
    return <double>PyTime_TimeRaw() * 1e-9


cdef inline int64_t _now_ms() noexcept nogil:
    """Unix milliseconds, for ``enqueued_at`` (moved by _advance_clock too)."""
    return PyTime_TimeRaw() // 1000000 + <int64_t>(_clock_offset * 1000)


cdef double _check_timeout_c(object timeout) except? -2.0:
    """Seconds as a double, -1.0 for None (wait forever); _validate.check_timeout checks."""
    if timeout is None:
        return -1.0
    return check_timeout(timeout)


cdef Py_ssize_t _check_batch_size(object value, str name) except -1:
    """A batch receive's size: 0 asks for nothing (an empty batch at once)."""
    if type(value) is int and 0 <= value < (1 << 62):
        return value
    return check_batch_size(value, name)


# -- waiting ----------------------------------------------------------------------------------

cdef class Waiter:
    """Something blocked in a receive, woken once by a publish, unsubscribe or shutdown."""

    cdef void wake(self) noexcept:
        pass


cdef class SyncWaiter(Waiter):
    """A thread blocked in a receive: a PyThread lock used as a one-shot semaphore."""

    def __cinit__(self):
        self.sem = PyThread_allocate_lock()
        if self.sem == NULL:
            raise MemoryError("cannot allocate a lock")
        PyThread_acquire_lock(self.sem, 1)
        KINCIR_LIVE(LIVE_SYNC_WAITERS, 1)

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_SYNC_WAITERS, -1 if self.sem != NULL else 0)
        if self.sem != NULL:
            PyThread_acquire_lock(self.sem, 0)  # held or not, hold it, then hand it back
            PyThread_release_lock(self.sem)
            PyThread_free_lock(self.sem)

    cdef void rearm(self) noexcept:
        """Make a used waiter ready to wait again (subscribers reuse theirs)."""
        PyThread_acquire_lock(self.sem, 0)  # swallow a wake that came after the last wait
        self.woken = False

    cdef void wake(self) noexcept:
        if not self.woken:
            self.woken = True
            PyThread_release_lock(self.sem)

    cdef int wait(self, double deadline) except -1:
        """Block until woken (1) or ``deadline`` passes (0); -1.0 waits forever."""
        cdef PyLockStatus status
        cdef long long slice_us
        cdef double remaining
        while True:
            slice_us = WAIT_SLICE_US
            if deadline >= 0:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    return 0
                if remaining * 1e6 < slice_us:
                    slice_us = <long long>(remaining * 1e6) + 1
            with nogil:
                status = PyThread_acquire_lock_timed(self.sem, slice_us, 1)
            if status == PY_LOCK_ACQUIRED:
                self.woken = True
                return 1
            PyErr_CheckSignals()


cdef object _resolve_future(object future):
    if not future.done():
        future.set_result(None)


def _resolve(future):
    _resolve_future(future)


cdef class AsyncWaiter(Waiter):
    """A task awaiting a receive on an event loop: woken by resolving its future."""

    def __cinit__(self, loop, future):
        self.loop = loop
        self.future = future
        self.thread = PyThread_get_thread_ident()
        KINCIR_LIVE(LIVE_ASYNC_WAITERS, 1)

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_ASYNC_WAITERS, -1)

    cdef void wake(self) noexcept:
        try:
            if PyThread_get_thread_ident() == self.thread:
                _resolve_future(self.future)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            pass


cdef inline void _wake_all(list waiters) noexcept:
    cdef object waiter
    if waiters:
        for waiter in waiters:
            (<Waiter>waiter).wake()


# -- pure C helpers ---------------------------------------------------------------------------

cdef uint64_t _min_position(
    uint64_t** positions, Py_ssize_t count, Py_ssize_t* at_min
) noexcept nogil:
    cdef uint64_t low = positions[0][0]
    cdef Py_ssize_t i, n = 1
    for i in range(1, count):
        if positions[i][0] < low:
            low = positions[i][0]
            n = 1
        elif positions[i][0] == low:
            n += 1
    at_min[0] = n
    return low


cdef uint64_t _first_live(const double* stamps, uint64_t mask, uint64_t pos, uint64_t head,
                          double deadline) noexcept nogil:
    while pos < head and stamps[pos & mask] < deadline:
        pos += 1
    return pos


cdef inline Py_ssize_t _payload_size(PyObject* payload) noexcept:
    return PyBytes_GET_SIZE(<object>payload)


cdef inline void _clear_slot(Slot* slot) noexcept:
    """Drop a slot's references. Frees only bytes, dicts of str and Messages: no Python code."""
    Py_XDECREF(slot.message)
    Py_XDECREF(slot.payload)
    Py_XDECREF(slot.meta)
    slot.message = slot.payload = slot.meta = NULL


cdef dict _NO_METADATA = {}


cdef int _fill_slot(Slot* slot, object item, Py_ssize_t index) except -1:
    """Write ``item`` (a Message or a bytes-like payload) into ``slot``, taking references.

    Raises TypeError naming ``messages[index]`` for anything else, leaving the slot empty.
    """
    cdef Message source
    cdef object payload
    cdef object meta
    if type(item) is Message:
        source = <Message>item
        payload = source.payload
        meta = source._meta
        slot.id_hi = source._id_hi
        slot.id_lo = source._id_lo
    else:
        if PyBytes_CheckExact(item):
            payload = item
        elif isinstance(item, str) or not PyObject_CheckBuffer(item):
            raise TypeError(
                f"messages[{index}] must be a Message or a bytes-like payload, "
                f"not {type(item).__name__}"
            )
        else:
            payload = bytes(item)
        meta = _NO_METADATA
        new_id(&slot.id_hi, &slot.id_lo)
    Py_INCREF(payload)
    Py_INCREF(meta)
    slot.payload = <PyObject*>payload
    slot.meta = <PyObject*>meta
    slot.message = NULL
    return 0


cdef void _clear_slots(Slot* slots, Py_ssize_t count) noexcept:
    cdef Py_ssize_t i
    for i in range(count):
        _clear_slot(&slots[i])


# -- cursors and topic logs -------------------------------------------------------------------

cdef class Cursor:
    """One reader's position in a topic log: the sequence number it reads next."""

    def __cinit__(self, TopicLog log, Py_ssize_t members, object group=None, bint acking=False):
        KINCIR_LIVE(LIVE_CURSORS, 1)
        self.log = log
        self.members = members
        self.group = group
        self.acking = acking
        # a group's waiting members, in line: the first is on the topic's waiter list
        self.waiters = [] if group is not None else None

    cdef bint pending_now(self) noexcept:
        """True if this reader has unread messages."""
        cdef bint pending
        kincir_mutex_lock(&self.log.lock)
        try:
            pending = self.attached and self.pos != self.log.head
        finally:
            kincir_mutex_unlock(&self.log.lock)
        return pending

    def pending(self):
        """Messages this reader has not read yet (0 once detached)."""
        cdef uint64_t n = 0
        kincir_mutex_lock(&self.log.lock)
        try:
            if self.attached:
                n = self.log.head - self.pos
        finally:
            kincir_mutex_unlock(&self.log.lock)
        return n

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_CURSORS, -1)

    def take(self, Py_ssize_t limit):
        """Up to ``limit`` messages for this reader (the acknowledgement layer's read)."""
        return self.log.take_many(self, limit)

    def settle(self, uint64_t floor, int64_t count, int64_t consumed=0):
        """An acknowledging reader settled ``count`` messages, ``consumed`` of them acked:
        ``floor`` is its oldest unsettled sequence whose slot the log holds (0: none is left).
        The log releases the slots every reader has settled. Returns the floor the log holds
        from (it may have dropped slots meanwhile), or -1 when the topic was deleted: nothing
        is counted (the caller counts on the broker's totals)."""
        return self.log.settle(self, floor, count, consumed)

    def counts(self):
        """This reader's own counters (a CursorCounts)."""
        return _CursorCounts(self.delivered, self.expired, self.dropped, self.lagged)

    def floor_now(self):
        """The oldest sequence the log still holds for this reader (its settled floor)."""
        cdef uint64_t floor
        kincir_mutex_lock(&self.log.lock)
        floor = self.floor if self.acking else self.pos
        kincir_mutex_unlock(&self.log.lock)
        return floor


cdef inline uint64_t* _tracked(Cursor cursor) noexcept:
    """The position that holds this reader's slots: the floor of an acknowledging reader."""
    return &cursor.floor if cursor.acking else &cursor.pos


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
        KINCIR_LIVE(LIVE_SLOTS, -<Py_ssize_t>(self.head - self.tail))
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
        for seq in range(self.tail, new_tail):
            slot = &self.ring[seq & self.mask]
            freed += _payload_size(slot.payload)
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

    cdef uint64_t _held(self) noexcept:
        """Messages held against the capacity: the most any reader holds, unread plus in flight
        (not the acked ones behind an unsettled message; none whose slot the log dropped); with
        no reader, every message the log holds. Lock held."""
        cdef uint64_t most = 0, held, pinned
        cdef Cursor cursor
        if not self.cursors:
            return self.head - self.tail
        for cursor in self.cursors:
            held = self.head - cursor.pos
            if cursor.acking:
                pinned = cursor.pos - cursor.floor
                if <uint64_t>cursor.unsettled < pinned:
                    pinned = <uint64_t>cursor.unsettled
                held += pinned
            if held > most:
                most = held
        return most

    cdef uint64_t _queued(self) noexcept:
        """Messages not yet read by the reader furthest behind (all held ones: no reader).
        Lock held."""
        cdef uint64_t most = 0
        cdef Cursor cursor
        if not self.cursors:
            return self.head - self.tail
        for cursor in self.cursors:
            if self.head - cursor.pos > most:
                most = self.head - cursor.pos
        return most

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

    cdef void _skip_expired(self, Cursor cursor, double now) noexcept:
        cdef uint64_t old = cursor.pos
        cdef uint64_t pos = _first_live(self.stamps, self.mask, old, self.head, now - self.ttl)
        if pos != old:
            cursor.pos = pos
            cursor.expired += pos - old
            self.expired += pos - old
            if not cursor.acking:
                self._moved(old)
            elif cursor.floor == old:  # nothing in flight below: the floor follows
                cursor.floor = pos
                self._moved(old)

    cdef void _skip(self, uint64_t count) noexcept:
        """Number ``count`` messages dropped on arrival (drop_oldest, a batch larger than the
        capacity): every reader loses them, counted as lagged. Lock held, nothing held."""
        cdef Cursor cursor
        self.head += count
        self.tail = self.head
        self.published += count
        if not self.cursors:
            self.dropped += count
        for cursor in self.cursors:
            cursor.lagged += count
            cursor.dropped += count
            self.lagged += count
            self.dropped += count
            cursor.pos = self.head
            cursor.floor = self.head
        self.at_tail = self.positions_count

    cdef void _drop_oldest(self, uint64_t count) noexcept:
        """Release the ``count`` oldest held messages (drop_oldest); readers that had not read
        them lose them, counted as lagged. Lock held."""
        cdef uint64_t new_tail = self.tail + count
        cdef uint64_t lost
        cdef Cursor cursor
        if count == 0:
            return
        if new_tail > self.head:
            new_tail = self.head
        if not self.cursors:
            self.dropped += new_tail - self.tail
        for cursor in self.cursors:
            if cursor.pos < new_tail:
                lost = new_tail - cursor.pos
                cursor.lagged += lost
                cursor.dropped += lost
                self.lagged += lost
                self.dropped += lost
                cursor.pos = new_tail
            if cursor.floor < new_tail:
                cursor.floor = new_tail
        self._release_to(new_tail)
        if self.positions_count:
            _min_position(self.positions, self.positions_count, &self.at_tail)

    cdef void _wake_room(self) noexcept:
        """Wake the publishers waiting for room (after the lock is released)."""
        cdef list fresh = []
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        waiters = self.room_waiters
        self.room_waiters = fresh
        self.room_freed = False
        kincir_mutex_unlock(&self.lock)
        _wake_all(waiters)

    cdef uint64_t _expire(self, double now) noexcept:
        """The cleanup pass: move every reader past expired messages; reclaim orphans."""
        cdef uint64_t before = self.expired
        cdef uint64_t pos
        cdef Cursor cursor
        if self.ttl < 0:
            return 0
        if self.cursors:
            for cursor in self.cursors:
                self._skip_expired(cursor, now)
        else:
            pos = _first_live(self.stamps, self.mask, self.tail, self.head, now - self.ttl)
            self.expired += pos - self.tail
            self._release_to(pos)
        return self.expired - before

    # -- publishing -----------------------------------------------------------------------------

    cdef int append(self, Slot* batch, Py_ssize_t count, bint letter=False) except -1:
        """Append ``count`` filled slots atomically: all of them get consecutive sequence
        numbers, or none does. Takes over the slots' references in every case."""
        cdef Py_ssize_t i
        cdef list waiters = None
        cdef bint stale = False  # a line whose first member was woken before: wake it whole
        cdef double now = _monotonic() if self.ttl >= 0 else 0.0
        cdef uint64_t held, size, seq
        cdef int64_t added = 0
        cdef Slot* slot
        # an append_outcome (_broker.pxd): APPEND_WRITTEN, or why nothing (more) was written
        cdef int outcome = APPEND_WRITTEN
        # the part of the batch written: drop_newest cuts its end, drop_oldest its start
        cdef Py_ssize_t first = 0, last = count
        cdef uint64_t keep
        if count == 0:
            return 0
        kincir_mutex_lock(&self.lock)
        try:
            # first: a force_shutdown closes the topics too; a dead letter passes a draining
            # topic
            if not self.accepting and not letter:
                outcome = APPEND_SHUTTING_DOWN
            elif self.closed:
                outcome = APPEND_TOPIC_DELETED
            elif not self.cursors and not self.persistence:
                self.dropped += count
                self.last_activity = batch[0].enqueued_at * 1e-3
                outcome = APPEND_DROPPED
            else:
                self.last_activity = batch[0].enqueued_at * 1e-3
                held = self.head - self.tail
                if self.capacity >= 0 and held + count > <uint64_t>self.capacity:
                    if self.ttl >= 0:
                        self._expire(now)
                    held = self._held()
                    if held + count > <uint64_t>self.capacity:
                        if self.overflow == OVERFLOW_DROP_NEWEST:
                            keep = 0
                            if held < <uint64_t>self.capacity:
                                keep = <uint64_t>self.capacity - held
                            last = <Py_ssize_t>keep
                            self.dropped += count - last
                            if last == 0:
                                outcome = APPEND_DROPPED
                        elif self.overflow == OVERFLOW_DROP_OLDEST:
                            if count > self.capacity:
                                # the batch alone overflows: everything held goes, and so does
                                # the batch's start, numbered like the rest
                                first = count - self.capacity
                                self._drop_oldest(self.head - self.tail)
                                self._skip(first)
                            else:
                                # the oldest slots go: acked ones behind an in-flight message
                                # free nothing, so count them too
                                self._drop_oldest(self.head - self.tail + count
                                                  - <uint64_t>self.capacity)
                        elif self.overflow == OVERFLOW_BLOCK and count <= self.capacity:
                            outcome = APPEND_MUST_WAIT
                        else:
                            self.queue_full += 1
                            outcome = APPEND_QUEUE_FULL
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
                    if self.lined:
                        stale = _lines_woken(self)
        finally:
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
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
            if outcome == APPEND_NO_MEMORY:
                raise MemoryError(f"cannot grow topic {self.name!r}")
            return 0
        if first:
            _clear_slots(batch, first)  # dropped by drop_oldest before they were written
        if last < count:
            _clear_slots(batch + last, count - last)  # dropped by drop_newest
        _wake_all(waiters)
        if stale:
            _wake_lines(self)
        return 0

    cdef int wait_room(self, Waiter waiter, Py_ssize_t count) except -1:
        """Register ``waiter`` to be woken when ``count`` messages fit: 1 if registered, 0 if
        the publisher should retry now (room, a policy change, deletion or shutdown)."""
        cdef int waiting = 0
        cdef double now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if self.ttl >= 0:
                self._expire(now)
            if (not self.closed and self.accepting and self.overflow == OVERFLOW_BLOCK
                    and self.capacity >= 0
                    and self._held() + count > <uint64_t>self.capacity):
                self.room_waiters.append(waiter)
                waiting = 1
        finally:
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        return waiting

    def remove_room_waiter(self, Waiter waiter):
        cdef Py_ssize_t i
        kincir_mutex_lock(&self.lock)
        for i in range(len(self.room_waiters) - 1, -1, -1):
            if self.room_waiters[i] is waiter:
                del self.room_waiters[i]
                break
        kincir_mutex_unlock(&self.lock)

    def note_queue_full(self):
        """Count a publish refused for want of room (a block-policy timeout or nowait)."""
        kincir_mutex_lock(&self.lock)
        self.queue_full += 1
        kincir_mutex_unlock(&self.lock)

    def configure(self, int overflow, Py_ssize_t capacity):
        """Change the topic's overflow policy and capacity (-1: unbounded); wakes blocked
        publishers to look again."""
        kincir_mutex_lock(&self.lock)
        self.overflow = overflow
        self.capacity = capacity
        kincir_mutex_unlock(&self.lock)
        self._wake_room()

    def count_acks(self, uint64_t redelivered, uint64_t dead_lettered, uint64_t dropped,
                   int64_t in_flight, uint64_t expired=0):
        """Add the acknowledgement layer's events to the topic's counters; False, counting
        nothing, when the topic was deleted (the caller counts on the broker's totals)."""
        kincir_mutex_lock(&self.lock)
        if self.closed:
            kincir_mutex_unlock(&self.lock)
            return False
        self.redelivered += redelivered
        self.dead_lettered += dead_lettered
        self.dropped += dropped
        self.expired += expired
        self.delivered += dead_lettered  # settled out of the topic: consumed
        self.in_flight += in_flight
        if self.in_flight < 0:
            self.in_flight = 0
        kincir_mutex_unlock(&self.lock)
        return True

    def settle(self, Cursor cursor, uint64_t floor, int64_t count, int64_t consumed=0):
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
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        return held_from

    # -- reading --------------------------------------------------------------------------------

    cdef Message _delivered(self, uint64_t seq):
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
        cdef uint64_t old
        cdef double now
        if cursor.pos == self.head:  # racy pre-check; re-checked under the lock
            return None
        now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.attached:
                if self.ttl >= 0:
                    self._skip_expired(cursor, now)
                old = cursor.pos
                if old != self.head:
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
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        return got

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef list take_many(self, Cursor cursor, Py_ssize_t limit):
        """Up to ``limit`` messages for ``cursor``, in sequence order (maybe none)."""
        cdef uint64_t available = self.head - cursor.pos  # racy estimate, sizes the list
        cdef Py_ssize_t n = 0
        cdef uint64_t old, end
        cdef double now
        cdef list out
        if available == 0 or not cursor.attached:
            return []
        if <uint64_t>limit > available:
            limit = <Py_ssize_t>available
        # made before locking (a list is GC-tracked); filled under the lock, which only
        # replaces its None items (n < limit stays in range: audited, so no bounds checks)
        out = [None] * limit
        now = _monotonic() if self.ttl >= 0 else 0.0
        kincir_mutex_lock(&self.lock)
        try:
            if cursor.attached:
                if self.ttl >= 0:
                    self._skip_expired(cursor, now)
                old = cursor.pos
                end = self.head
                if end - old > <uint64_t>limit:
                    end = old + limit
                while old + <uint64_t>n < end:
                    out[n] = self._delivered(old + n)
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
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
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
            kincir_mutex_unlock(&self.lock)
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
        kincir_mutex_unlock(&self.lock)
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
            kincir_mutex_unlock(&self.lock)
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
                        self.dropped += self.head - self.tail
                        self._release_to(self.head)
                waiters = self.waiters
                self.waiters = None
        finally:
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        _wake_all(waiters)
        if cursor.waiters:
            _wake_all(list(cursor.waiters))
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
                n += len((<Cursor>cursor).waiters) - 1
        kincir_mutex_unlock(&self.lock)
        return n

    def wake_waiters(self):
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        try:
            waiters = self.waiters
            self.waiters = None
        finally:
            kincir_mutex_unlock(&self.lock)
        _wake_all(waiters)
        _wake_lines(self)

    def stop_accepting(self):
        """Refuse publishes from now on (shutdown) and wake the waiters to notice."""
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        try:
            self.accepting = False
            waiters = self.waiters
            self.waiters = None
        finally:
            kincir_mutex_unlock(&self.lock)
        _wake_all(waiters)
        _wake_lines(self)
        self._wake_room()  # blocked publishers retry and meet BrokerShutdown

    # -- maintenance ----------------------------------------------------------------------------

    def expire(self):
        """Run the TTL cleanup pass now; return how many (reader, message) pairs expired."""
        cdef uint64_t n
        if self.ttl < 0:
            return 0
        kincir_mutex_lock(&self.lock)
        try:
            n = self._expire(_monotonic())
        finally:
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        return n

    def clear(self):
        """Drop every held message (each reader's unread ones counted as dropped)."""
        cdef uint64_t held, lost
        cdef Cursor cursor
        kincir_mutex_lock(&self.lock)
        try:
            held = self._held()
            for cursor in self.cursors:
                lost = self.head - cursor.pos
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
            kincir_mutex_unlock(&self.lock)
        if self.room_freed:
            self._wake_room()
        return held

    def close(self):
        """Detach every reader and drop everything held (the topic is being deleted)."""
        cdef list waiters
        cdef list no_cursors = []
        cdef Cursor cursor
        kincir_mutex_lock(&self.lock)
        self.closed = True  # first: a publish racing the deletion is refused, not lost
        kincir_mutex_unlock(&self.lock)
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
            kincir_mutex_unlock(&self.lock)
        _wake_all(waiters)
        self._wake_room()  # blocked publishers retry and meet TopicNotFound
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
        kincir_mutex_unlock(&self.lock)
        return idle

    def touch(self):
        """Stamp the topic active now (a pull through ``consume``)."""
        self.last_activity = _wall()

    def append_letter(self, Message message):
        """Append a dead letter (accepted while the broker drains): False if the topic is full
        under the block policy (a dead letter never waits); raises what a publish raises."""
        cdef Slot one
        _fill_slot(&one, message, 0)
        one.enqueued_at = _now_ms()
        return not self.append(&one, 1, True)  # takes over the reference, whatever happens

    def drained(self):
        """True when every reader with an attached subscriber has read everything."""
        cdef Cursor cursor
        cdef bint done = True
        kincir_mutex_lock(&self.lock)
        try:
            for cursor in self.cursors:
                if cursor.members and (cursor.pos != self.head or cursor.floor < cursor.pos
                                       and cursor.acking):
                    done = False
                    break
        finally:
            kincir_mutex_unlock(&self.lock)
        return done

    def subscriber_count(self):
        cdef Py_ssize_t n
        kincir_mutex_lock(&self.lock)
        try:
            n = self._subscriber_count()
        finally:
            kincir_mutex_unlock(&self.lock)
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
            queued = self._queued()
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
            kincir_mutex_unlock(&self.lock)
        return _TopicRow(self.name, queued, subscribers, published, delivered, expired, dropped,
                         queue_full, self.created_at, last, head, held_bytes,
                         max(0.0, wall - last), lagged, redelivered, dead_lettered, in_flight,
                         OVERFLOW_POLICIES[self.overflow],
                         None if self.capacity < 0 else self.capacity)


# -- a topic's ring storage (its lock held) -------------------------------------------------

cdef void _ring_shrink(TopicLog log, uint64_t size) noexcept nogil:
    """Move the held slots into a smaller ring; without memory, keep the larger one."""
    cdef Slot* ring = <Slot*>calloc(size, sizeof(Slot))
    cdef double* stamps = NULL
    cdef uint64_t seq, mask = size - 1
    if ring == NULL:
        return
    if log.stamps != NULL:
        stamps = <double*>calloc(size, sizeof(double))
        if stamps == NULL:
            free(ring)
            return
    for seq in range(log.tail, log.head):
        ring[seq & mask] = log.ring[seq & log.mask]
        if stamps != NULL:
            stamps[seq & mask] = log.stamps[seq & log.mask]
    free(log.ring)
    free(log.stamps)
    log.ring = ring
    log.stamps = stamps
    log.mask = mask


cdef int _ring_grow(TopicLog log, uint64_t size) noexcept nogil:
    """Enlarge the ring in place where the allocator can (realloc keeps the pages already
    touched), then move each held slot to its index under the new mask: only into the new
    upper part, which holds nothing yet. Returns -1, changing nothing, without memory."""
    cdef Slot* ring = <Slot*>realloc(log.ring, size * sizeof(Slot))
    cdef double* stamps = log.stamps
    cdef uint64_t seq, old_mask = log.mask, mask = size - 1
    if ring == NULL:
        return -1
    log.ring = ring  # larger, still consistent under the old mask
    if stamps != NULL:
        stamps = <double*>realloc(stamps, size * sizeof(double))
        if stamps == NULL:
            return -1
        log.stamps = stamps
    for seq in range(log.tail, log.head):
        if (seq & mask) != (seq & old_mask):
            ring[seq & mask] = ring[seq & old_mask]
            if stamps != NULL:
                stamps[seq & mask] = stamps[seq & old_mask]
    log.mask = mask
    return 0


# -- waiting: a topic's waiter list and its groups' lines ------------------------------------

cdef int _add_waiter(TopicLog log, Waiter waiter, Cursor cursor) except -1:
    """Register ``waiter`` to be woken by the next publish; a member of ``cursor``'s group
    joins the line instead when another member is first."""
    cdef list fresh
    cdef list line = cursor.waiters
    cdef bint added = False
    while not added:
        # a new list is made before locking: nothing GC-tracked is allocated under the lock
        fresh = [] if log.waiters is None or line is not None else None
        kincir_mutex_lock(&log.lock)
        if line is not None:
            line.append(waiter)
            added = True
            if len(line) == 1:  # first in line: waits on the topic's list
                if log.waiters is None:
                    log.waiters = fresh
                log.waiters.append(waiter)
                log.lined += 1
                cursor.line_woken = False
        else:
            if log.waiters is None:
                log.waiters = fresh  # None if a publish took the list meanwhile: try again
            if log.waiters is not None:
                log.waiters.append(waiter)
                added = True
        kincir_mutex_unlock(&log.lock)
    return 0


cdef int _remove_waiter(TopicLog log, Waiter waiter, Cursor cursor) except -1:
    """Unregister ``waiter``. The first member of a group's line hands its place to the
    next: woken at once if messages are unread (it may have taken none), else put on the
    topic's waiter list."""
    cdef Py_ssize_t i
    cdef list line = cursor.waiters
    cdef list fresh = [] if line else None  # made before locking, as in _add_waiter
    cdef object after = None
    kincir_mutex_lock(&log.lock)
    if log.waiters is not None:
        for i in range(len(log.waiters) - 1, -1, -1):
            if log.waiters[i] is waiter:
                del log.waiters[i]
                break
    if line:
        if line[0] is waiter:
            del line[0]
            if line:
                if log.waiters is None:
                    log.waiters = fresh
                if (cursor.attached and cursor.pos != log.head) or log.waiters is None:
                    after = line[0]
                    cursor.line_woken = True
                else:
                    log.waiters.append(line[0])
                    cursor.line_woken = False
            else:
                log.lined -= 1
        else:
            for i in range(len(line) - 1, 0, -1):
                if line[i] is waiter:
                    del line[i]
                    break
    kincir_mutex_unlock(&log.lock)
    if after is not None:
        (<Waiter>after).wake()
    return 0


cdef int _wake_lines(TopicLog log) except -1:
    """Wake every group member waiting in line (lock not held): something other than a
    publish happened that each must look at."""
    cdef list lines = []
    cdef object cursor
    kincir_mutex_lock(&log.lock)
    for cursor in log.cursors:
        if (<Cursor>cursor).waiters:
            lines.append((<Cursor>cursor).waiters)
            (<Cursor>cursor).line_woken = True
    kincir_mutex_unlock(&log.lock)
    for line in lines:
        _wake_all(list(line))
    return 0


cdef bint _lines_woken(TopicLog log) noexcept:
    """A publish woke the first member of each line (lock held). True if a line's first
    member had already been woken and has not come back: that line must be woken whole."""
    cdef bint stale = False
    cdef object cursor
    for cursor in log.cursors:
        if (<Cursor>cursor).waiters:
            if (<Cursor>cursor).line_woken:
                stale = True
            else:
                (<Cursor>cursor).line_woken = True
    return stale


# -- the broker's kernel ----------------------------------------------------------------------

cdef class BrokerKernel:
    """What the hot path reads of a broker: its topic table and state, and the receives no
    topic may wake at shutdown. The rest of the broker (creating and deleting topics, groups,
    the lifecycle, snapshots) is ``BrokerCore`` in _topics.py, written once above this."""

    def __cinit__(self, *args, **kwargs):
        self._topics = {}
        self._letter_topics = set()
        self._state = RUNNING
        self.shutdown_waiters = []

    @property
    def _orphans(self):
        """Cursors of subscribers the GC freed, left to detach: never any here (the compiled
        engine detaches them at once)."""
        return False

    def _detach_orphans(self):
        pass

    cdef int add_shutdown_waiter(self, Waiter waiter) except -1:
        kincir_mutex_lock(&self.lock)
        self.shutdown_waiters.append(waiter)  # a list append allocates nothing GC-tracked
        kincir_mutex_unlock(&self.lock)
        return 0

    cdef void remove_shutdown_waiter(self, Waiter waiter) noexcept:
        cdef Py_ssize_t i
        kincir_mutex_lock(&self.lock)
        for i in range(len(self.shutdown_waiters) - 1, -1, -1):
            if self.shutdown_waiters[i] is waiter:
                del self.shutdown_waiters[i]
                break
        kincir_mutex_unlock(&self.lock)

    def _wake_shutdown_waiters(self):
        """Wake the receives no topic may wake (the state changed first: a receive that
        registers after this sees it)."""
        cdef list fresh = []  # made before locking: nothing GC-tracked under the lock
        cdef list waiters
        kincir_mutex_lock(&self.lock)
        waiters = self.shutdown_waiters
        self.shutdown_waiters = fresh
        kincir_mutex_unlock(&self.lock)
        _wake_all(waiters)

cdef class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    def __init__(self, broker):
        if not isinstance(broker, BrokerKernel):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        self.broker = broker

    def publish_nowait(self, topic, messages):
        """Publish a batch now; never waits. Raises QueueFull when the topic has no room."""
        cdef object blocked = self._publish(topic, messages)
        if blocked is not None:
            _refuse_full(<TopicLog>blocked)

    def publish_sync(self, topic, messages, timeout=None):
        """Publish a batch from a thread (same rules as ``publish``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef object blocked = self._publish(topic, messages)
        if blocked is not None:
            self._publish_waiting(topic, messages,
                                  -1.0 if seconds < 0 else _monotonic() + seconds)

    cdef int _publish_waiting(self, object topic, object messages, double deadline) except -1:
        """Wait for room and retry until the batch is published or ``deadline`` passes."""
        cdef SyncWaiter waiter = SyncWaiter()
        cdef object blocked = None
        cdef int woken
        while True:
            blocked = self._publish(topic, messages, blocked)
            if blocked is None:
                return 0
            waiter.rearm()
            if (<TopicLog>blocked).wait_room(waiter, len(messages)):
                try:
                    woken = waiter.wait(deadline)
                finally:
                    (<TopicLog>blocked).remove_room_waiter(waiter)
                if not woken:
                    _refuse_full(<TopicLog>blocked)

    def publish(self, topic, messages, timeout=None):
        """Publish a batch: all of it, with consecutive sequence numbers, or none of it.

        Returns a coroutine (as asyncio sees it) that publishes when awaited. Under the
        ``block`` overflow policy it waits for room, up to ``timeout`` seconds (then
        QueueFull); other policies never wait.
        """
        if timeout is not None:
            return self._publish_within(topic, messages, timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        return op

    async def _publish_within(self, topic, messages, timeout):
        cdef double seconds = _check_timeout_c(timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        try:
            async with _asyncio_timeout(seconds):
                await op
        except TimeoutError:
            if op.blocked is None:
                raise
            _refuse_full(op.blocked)

    cdef object _publish(self, object topic, object messages, TopicLog target=None):
        """Publish, or return the topic's log when it is full under the block policy (nothing
        written: the caller waits for room and calls again with it as ``target``, so a topic
        deleted meanwhile raises TopicNotFound); None once published."""
        cdef BrokerKernel broker = self.broker
        cdef object log = target
        cdef Slot one
        cdef Slot* batch
        cdef Py_ssize_t i, count, filled = 0
        cdef int64_t now_ms
        if broker._state != RUNNING:
            raise BrokerShutdown()
        if log is None:
            log = broker._topics.get(topic) if type(topic) is str else None
            if log is None:
                validate_topic_name(topic)
        # every item is checked before the topic is created or anything is written
        check_batch(messages)
        count = len(messages)
        if count == 0:
            return None
        now_ms = _now_ms()
        if count == 1:  # the common case needs no buffer
            batch = &one
        else:
            batch = <Slot*>malloc(count * sizeof(Slot))
            if batch == NULL:
                raise MemoryError("cannot allocate a publish buffer")
        try:
            for i in range(count):
                _fill_slot(&batch[i], messages[i], i)
                batch[i].enqueued_at = now_ms
                filled += 1
            if log is None:
                log = broker._topic(topic)
        except BaseException:
            _clear_slots(batch, filled)
            if batch != &one:
                free(batch)
            raise
        try:
            # takes over the references, whatever happens
            if (<TopicLog>log).append(batch, count):
                return log
        finally:
            if batch != &one:
                free(batch)
        return None


cdef int _refuse_full(TopicLog log) except -1:
    log.note_queue_full()
    raise QueueFull(log.name, None if log.capacity < 0 else log.capacity)


cpdef int leave(Cursor cursor) except -1:
    """A subscriber lets go of ``cursor``: a group member leaves, a plain reader detaches."""
    if cursor.group is not None:
        cursor.log.leave(cursor)
    else:
        cursor.log.detach(cursor)
    return 0


cdef class SubscriberKernel:
    """What a subscriber's receives need: its cursors, its lock and its waiting receives.
    Joining and leaving topics is ``SubscriberCore`` in _subscriptions.py, written once above
    this."""

    def __init__(self, broker, group, bint acking):
        self.group = group
        self.broker = broker
        self.acking = acking
        self.cursors = ()
        self._by_topic = {}
        self.waiting = []

    # -- subscriptions --------------------------------------------------------------------------

    def _adopt(self, object topic, Cursor cursor):
        """Record the new subscription ``cursor`` to ``topic``."""
        cdef Cursor displaced = None
        kincir_mutex_lock(&self.lock)
        try:
            current = self._by_topic.get(topic)
            if current is not None and (<Cursor>current).attached:
                displaced = cursor   # a concurrent subscribe won: undo ours
            else:
                self._by_topic[topic] = cursor
        finally:
            kincir_mutex_unlock(&self.lock)
        if displaced is not None:
            leave(displaced)
        self._subscriptions_changed()

    cdef void _refresh(self) noexcept:
        self.cursors = tuple([c for c in self._by_topic.values() if (<Cursor>c).attached])

    def _drop(self, topic):
        """Forget the subscription to ``topic`` (every one: None) and return its cursors for
        the caller to leave; None if not subscribed to ``topic``."""
        cdef list leaving
        kincir_mutex_lock(&self.lock)
        try:
            if topic is None:
                leaving = list(self._by_topic.values())
                self._by_topic.clear()
            else:
                found = self._by_topic.pop(topic, None)
                leaving = None if found is None else [found]
        finally:
            kincir_mutex_unlock(&self.lock)
        return leaving

    def _release_on_gc(self):
        """Leave every topic; called by the finalizer of a subscriber dropped without close().

        The compiled engine never allocates a GC-tracked object or calls Python code while it
        holds a topic or broker lock, so a collection (and this finalizer) cannot run inside
        one; the only lock taken under a collection is a subscriber's own, and a subscriber is
        not finalized while one of its methods runs. Detaching at once is safe.
        """
        cdef object cursor
        try:
            leaving = self._drop(None)
            self._subscriptions_changed()
            for cursor in leaving:
                leave(<Cursor>cursor)
        except Exception:
            pass

    def _wake_receivers(self):
        """Wake this subscriber's waiting receives to look at its subscriptions again."""
        self._subscriptions_changed()

    def _attached_cursors(self):
        """The cursors of the live subscriptions (the acknowledgement layer reads through
        them)."""
        return self.cursors

    def _check_receivable(self):
        """Raise what a receive with nothing ready raises: BrokerShutdown once drained,
        NotSubscribed without a subscription."""
        self._nothing()

    def _wait_ready(self, timeout, ready):
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef SyncWaiter waiter
        cdef tuple cursors
        kincir_mutex_lock(&self.lock)
        waiter = self.spare_waiter  # reused, as in _receive_blocking
        self.spare_waiter = None
        kincir_mutex_unlock(&self.lock)
        if waiter is None:
            waiter = SyncWaiter()
        waiter.rearm()
        cursors = self._register(waiter)
        try:
            for cursor in cursors:
                if (<Cursor>cursor).pending_now():
                    return True
            if ready():
                return True
            return bool(waiter.wait(-1.0 if seconds < 0 else _monotonic() + seconds))
        finally:
            self._unregister(waiter, cursors)
            self.spare_waiter = waiter

    async def _wait_ready_async(self, ready):
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``)."""
        cdef object loop = _get_running_loop()
        cdef object future = loop.create_future()
        cdef AsyncWaiter waiter = AsyncWaiter(loop, future)
        cdef tuple cursors = self._register(waiter)
        try:
            for cursor in cursors:
                if (<Cursor>cursor).pending_now():
                    return
            if ready():
                return
            await future
        finally:
            self._unregister(waiter, cursors)

    # -- receiving ------------------------------------------------------------------------------

    cdef object _nothing(self):
        """No message is ready: None while one may come, else raise (SubscriberCore's
        ``_nothing_ready`` decides, off the hot path)."""
        if self.broker._state == RUNNING:
            for cursor in self.cursors:
                if (<Cursor>cursor).attached:
                    return None
        self._nothing_ready()
        return None

    cdef inline Message _take_one(self):
        cdef tuple cursors = self.cursors
        cdef Py_ssize_t count = len(cursors)
        cdef Cursor cursor
        cdef Message got
        if count == 1:  # the common case, inlined into the callers
            cursor = <Cursor>cursors[0]
            got = cursor.log.take_one(cursor)
            if got is not None:
                return got
        return self._take_round_robin(cursors, count)

    cdef Message _take_round_robin(self, tuple cursors, Py_ssize_t count):
        """Take from several topics in turn (one topic was tried by _take_one already)."""
        cdef Py_ssize_t i, start
        cdef Cursor cursor
        cdef Message got
        if count > 1:
            start = self.next_index
            self.next_index = (start + 1) % count
            for i in range(count):
                cursor = <Cursor>cursors[(start + i) % count]
                got = cursor.log.take_one(cursor)
                if got is not None:
                    return got
        self._nothing()
        return None

    cdef list _take_many(self, Py_ssize_t limit):
        cdef tuple cursors = self.cursors
        cdef Py_ssize_t i, start, count = len(cursors)
        cdef Cursor cursor
        cdef list got
        if count == 1:
            cursor = <Cursor>cursors[0]
            got = cursor.log.take_many(cursor, limit)
            if got:
                return got
        elif count:
            start = self.next_index
            self.next_index = (start + 1) % count
            for i in range(count):
                cursor = <Cursor>cursors[(start + i) % count]
                got = cursor.log.take_many(cursor, limit)
                if got:
                    return got
        self._nothing()
        return []

    def try_receive(self):
        """The next message if one is ready, else None."""
        return self._take_one()

    def try_receive_batch(self, max_messages):
        """Up to ``max_messages`` ready messages (possibly none; none at once for 0)."""
        cdef Py_ssize_t limit = _check_batch_size(max_messages, "max_messages")
        return self._take_many(limit) if limit else []

    cdef tuple _register(self, Waiter waiter):
        """Wait on every subscribed topic; returns the cursors to unregister from."""
        cdef tuple cursors = self.cursors
        self.waiting.append(waiter)
        if self._patterned:  # may have no topic to wake it at shutdown
            self.broker.add_shutdown_waiter(waiter)
        for cursor in cursors:
            _add_waiter((<Cursor>cursor).log, waiter, <Cursor>cursor)
        return cursors

    cdef int _unregister(self, Waiter waiter, tuple cursors) except -1:
        for cursor in cursors:
            _remove_waiter((<Cursor>cursor).log, waiter, <Cursor>cursor)
        if self.broker.shutdown_waiters:
            self.broker.remove_shutdown_waiter(waiter)
        try:
            self.waiting.remove(waiter)
        except ValueError:
            pass
        return 0

    cdef void _subscriptions_changed(self) noexcept:
        """Wake this subscriber's waiting receives so they wait on the new set of topics."""
        self._refresh()
        _wake_all(list(self.waiting))

    cdef list _receive_blocking(self, Py_ssize_t limit, object timeout):
        cdef double seconds = _check_timeout_c(timeout)
        cdef double deadline = -1.0
        cdef list got = self._take_many(limit) if limit > 1 else None
        cdef Message one
        cdef SyncWaiter waiter
        cdef tuple cursors
        cdef int woken
        if limit == 1:
            one = self._take_one()
            if one is not None:
                return [one]
        elif got:
            return got
        if seconds >= 0:
            deadline = _monotonic() + seconds
        # reuse the subscriber's waiter: allocating an OS lock per wait costs more than the wait
        kincir_mutex_lock(&self.lock)
        waiter = self.spare_waiter
        self.spare_waiter = None
        kincir_mutex_unlock(&self.lock)
        if waiter is None:
            waiter = SyncWaiter()
        try:
            while True:
                waiter.rearm()
                cursors = self._register(waiter)
                try:
                    got = self._take_many(limit)
                    if got:
                        return got
                    woken = waiter.wait(deadline)
                    got = self._take_many(limit)  # before unregistering: a member hands on after
                    if got:
                        return got
                finally:
                    self._unregister(waiter, cursors)
                if not woken:
                    raise TimeoutError(f"no message arrived within {seconds} seconds")
        finally:
            self.spare_waiter = waiter

    def receive(self, timeout=None):
        """Wait for the next message (TimeoutError after ``timeout`` seconds).

        Returns a coroutine (as asyncio sees it) that takes the message when awaited, so a
        receive that is never awaited, or cancelled, consumes nothing.
        """
        cdef ReceiveOp op
        if timeout is not None:
            return self._receive_within(timeout)
        op = ReceiveOp.__new__(ReceiveOp)
        op.subscriber = self
        return op

    async def _receive_within(self, timeout):
        cdef double seconds = _check_timeout_c(timeout)  # bad input is refused before any take
        cdef Message got = self._take_one()
        if got is not None:
            return got
        async with _asyncio_timeout(seconds):
            return await self._wait_async(0)

    async def _wait_async(self, Py_ssize_t limit):
        """Wait on the running loop until a message is ready; return it (``limit`` 0) or a
        batch of up to ``limit``."""
        cdef object loop = _get_running_loop()
        cdef object future
        cdef AsyncWaiter waiter
        cdef tuple cursors
        cdef object got
        while True:
            future = loop.create_future()
            waiter = AsyncWaiter(loop, future)
            cursors = self._register(waiter)
            try:
                got = self._take_one() if limit == 0 else self._take_many(limit)
                if got:
                    return got
                await future
                # before unregistering: a group member hands the wake on after taking
                got = self._take_one() if limit == 0 else self._take_many(limit)
                if got:
                    return got
            finally:
                self._unregister(waiter, cursors)

    def receive_sync(self, timeout=None):
        """Block the calling thread until a message arrives (TimeoutError after ``timeout``)."""
        if timeout is not None:
            _check_timeout_c(timeout)  # bad input is refused before anything is taken
        cdef Message got = self._take_one()
        if got is not None:
            return got
        return self._receive_blocking(1, timeout)[0]

    def receive_batch_sync(self, max_messages, timeout=None):
        """Block until at least one message is ready, then return up to ``max_messages``
        (0: an empty batch at once)."""
        cdef Py_ssize_t limit = _check_batch_size(max_messages, "max_messages")
        if not limit:
            _check_timeout_c(timeout)
            return []
        return self._receive_blocking(limit, timeout)


# -- awaitables without a coroutine frame -----------------------------------------------------
#
# ``publish()`` and ``receive()`` are called once per message; a Cython coroutine costs two
# GC-tracked allocations (the coroutine and its closure) per call. These one-shot awaitables do
# the same work with one small object: they act only when awaited (sent to), like a coroutine,
# and asyncio accepts them wherever it accepts a coroutine (they are registered as
# collections.abc.Coroutine), create_task included. The interpreter and asyncio's Task drive
# them through ``am_send`` (PyIter_Send), which hands back the result without raising
# StopIteration; ``send``/``__next__`` serve everyone else.

cdef object _thrown(object typ, object val, object tb):
    """The exception ``coroutine.throw(typ, val, tb)`` raises, normalised as generators do."""
    if isinstance(typ, BaseException):
        exc = typ
    elif isinstance(val, BaseException):
        exc = val
    elif val is None:
        exc = typ()
    elif type(val) is tuple:
        exc = typ(*val)
    else:
        exc = typ(val)
    return exc.with_traceback(tb) if tb is not None else exc


cdef extern from "Python.h":
    """
    #define KINCIR_SET_AM_SEND(type, fn) \
        (((PyTypeObject *)(type))->tp_as_async->am_send = (sendfunc)(fn))
    """
    enum:
        PYGEN_RETURN
        PYGEN_NEXT
    void KINCIR_SET_AM_SEND(object type, void* fn)


cdef extern from *:
    """
    /* What CPython says of a coroutine finalized before it started, so that a forgotten
       ``await`` reads the same on both engines; the pending exception, if any, is kept. */
    static void kincir_warn_unawaited(const char *qualname) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "coroutine '%s' was never awaited", qualname) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        PyErr_Restore(type, value, traceback);
    }
    """
    void kincir_warn_unawaited(const char* qualname) noexcept


@cython.final
@cython.freelist(16)
cdef class PublishOp:
    """``await publisher.publish(...)``: publishes when first sent to."""

    cdef PublisherCore publisher
    cdef object topic
    cdef object messages
    cdef TopicLog blocked     # the full topic waited on under the block policy
    cdef AsyncWaiter waiter
    cdef bint started         # sent to at least once: a never-started op warns when freed
    cdef bint done

    def __cinit__(self):
        KINCIR_LIVE(LIVE_PUBLISH_OPS, 1)

    cdef void _stop_waiting(self) noexcept:
        cdef AsyncWaiter waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                self.blocked.remove_room_waiter(waiter)
            except BaseException:
                pass

    cdef object _step(self):
        """None once published (``done`` set), or a future to wait on for room."""
        cdef object loop, future
        if self.done:
            raise RuntimeError("cannot reuse an already awaited publish")
        self.started = True
        try:
            self._stop_waiting()
            while True:
                self.blocked = self.publisher._publish(self.topic, self.messages, self.blocked)
                if self.blocked is None:
                    break
                loop = _get_running_loop()
                future = loop.create_future()
                self.waiter = AsyncWaiter(loop, future)
                if self.blocked.wait_room(self.waiter, len(self.messages)):
                    future._asyncio_future_blocking = True
                    return future
                self.waiter = None
        except BaseException:
            self.close()
            raise
        self.close()
        return None

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        value = self._step()
        if self.done:
            raise StopIteration
        return value

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise _thrown(typ, val, tb)

    def close(self):
        self.done = True
        self._stop_waiting()
        self.topic = self.messages = None

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_PUBLISH_OPS, -1)
        if not self.started and not self.done:
            kincir_warn_unawaited("PublisherCore.publish")
        if self.waiter is not None and self.blocked is not None:
            self._stop_waiting()


cdef int _publish_am_send(PyObject* op, PyObject* arg, PyObject** result) except -1:
    cdef object value = (<PublishOp>op)._step()
    Py_INCREF(value)
    result[0] = <PyObject*>value
    return PYGEN_RETURN if (<PublishOp>op).done else PYGEN_NEXT


@cython.final
@cython.freelist(16)
cdef class ReceiveOp:
    """``await subscriber.receive()``: takes the next message when sent to, yielding a future
    to the event loop while none is ready."""

    cdef SubscriberKernel subscriber
    cdef AsyncWaiter waiter
    cdef tuple cursors
    cdef bint started         # sent to at least once: a never-started op warns when freed
    cdef bint done

    def __cinit__(self):
        KINCIR_LIVE(LIVE_RECEIVE_OPS, 1)

    cdef void _stop_waiting(self) noexcept:
        cdef AsyncWaiter waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                self.subscriber._unregister(waiter, self.cursors)
            except BaseException:
                pass
            self.cursors = None

    cdef object _step(self):
        """The message (and ``done`` set), or a future to wait on."""
        cdef Message got
        cdef object loop, future
        if self.done:
            raise RuntimeError("cannot reuse an already awaited receive")
        self.started = True
        try:
            # first step, or woken: taken before unregistering, as a group member hands the
            # wake on when it leaves the line
            got = self.subscriber._take_one()
            self._stop_waiting()
            if got is None:
                loop = _get_running_loop()
                future = loop.create_future()
                self.waiter = AsyncWaiter(loop, future)
                self.cursors = self.subscriber._register(self.waiter)
                got = self.subscriber._take_one()  # a publish may have come before we registered
                if got is None:
                    future._asyncio_future_blocking = True
                    return future
                self._stop_waiting()
        except BaseException:
            self.done = True
            self._stop_waiting()
            raise
        self.done = True
        return got

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        value = self._step()
        if self.done:
            raise StopIteration(value)
        return value

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise _thrown(typ, val, tb)

    def close(self):
        self.done = True
        self._stop_waiting()

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_RECEIVE_OPS, -1)
        if not self.started and not self.done:
            kincir_warn_unawaited("SubscriberCore.receive")
        if self.waiter is not None and self.subscriber is not None:
            self._stop_waiting()


cdef int _receive_am_send(PyObject* op, PyObject* arg, PyObject** result) except -1:
    cdef object value = (<ReceiveOp>op)._step()
    Py_INCREF(value)
    result[0] = <PyObject*>value
    return PYGEN_RETURN if (<ReceiveOp>op).done else PYGEN_NEXT


KINCIR_SET_AM_SEND(PublishOp, <void*>_publish_am_send)
KINCIR_SET_AM_SEND(ReceiveOp, <void*>_receive_am_send)

from collections.abc import Coroutine as _Coroutine

_Coroutine.register(PublishOp)
_Coroutine.register(ReceiveOp)
