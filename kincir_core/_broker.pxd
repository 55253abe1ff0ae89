# What other Cython modules may cimport from _broker: the engine's classes and their C-level
# fields and methods. See _broker.pyx for the design, ownership and locking rules.

cimport cython
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_type_lock
from libc.stdint cimport int64_t, uint64_t

from ._message cimport Message


cdef extern from "_lock.h":
    ctypedef struct kincir_mutex:
        pass
    void kincir_mutex_lock(kincir_mutex* m) noexcept nogil
    void kincir_mutex_unlock(kincir_mutex* m) noexcept nogil


cdef class TopicLog


# Status codes, mirroring the IntEnums of _codes.py (same order and values; _broker.pyx checks
# them when it loads). Python code sees the IntEnums; C code uses these constants.
cdef enum broker_state:
    RUNNING = 0                 # BrokerState.RUNNING
    DRAINING = 1                # BrokerState.DRAINING: shutdown began, receives drain
    STOPPED = 2                 # BrokerState.STOPPED

cdef enum append_outcome:       # what TopicLog.append did with a batch (AppendOutcome)
    APPEND_WRITTEN = 0          # written (maybe in part, under a drop policy)
    APPEND_DROPPED = 1          # dropped on arrival (no reader, persistence off; drop_newest)
    APPEND_QUEUE_FULL = 2       # no room under the error policy: QueueFull
    APPEND_TOPIC_DELETED = 3    # TopicNotFound
    APPEND_SHUTTING_DOWN = 4    # BrokerShutdown
    APPEND_NO_MEMORY = 5        # the ring could not grow: MemoryError
    APPEND_MUST_WAIT = 6        # no room under the block policy: wait for room, retry
    APPEND_TOPIC_CLOSED = 7     # closed for writing (close_topic): TopicClosed

cdef enum attach_outcome:       # what TopicLog.attach / join did with a reader (AttachOutcome)
    ATTACH_OK = 0
    ATTACH_FULL = 1             # max_subscribers reached
    ATTACH_NO_MEMORY = 2        # attach only: raised as MemoryError
    ATTACH_GONE = 3             # the topic (or group) is gone: look it up again


# One message in a topic log. The log holds the parts of a message (strong references to the
# payload and metadata) rather than a Message object: publishing writes a slot in place, and the
# Message readers receive is built by the first reader and kept in the slot for the others.
cdef struct Slot:
    PyObject* message     # the delivered copy, made by the first reader; NULL until then
    PyObject* payload     # any object (bytes-like ones published are bytes)
    PyObject* meta        # dict, never mutated
    uint64_t id_hi        # the uuid; both 0 for a payload published without a Message: the
    uint64_t id_lo        # delivered Message draws it when first read
    int64_t enqueued_at   # Unix milliseconds

cdef class Waiter:
    # the messages its receive takes at most: what it covers when a group's line wakes it
    cdef Py_ssize_t want
    cdef void wake(self) noexcept


@cython.final
cdef class SyncWaiter(Waiter):
    cdef PyThread_type_lock sem
    cdef bint woken
    cdef bint consumed                # a wait took the wake: nothing for rearm to swallow
    cdef void rearm(self) noexcept
    cdef int wait(self, double deadline) except -1


@cython.final
cdef class AsyncWaiter(Waiter):
    cdef object loop
    cdef object future
    cdef unsigned long thread


@cython.final
cdef class Cursor:
    cdef readonly TopicLog log
    cdef readonly uint64_t pos
    # acknowledging readers only: the oldest sequence not yet settled (<= pos); the log holds
    # slots from here, so in-flight messages keep their slot. positions[] points here for them.
    cdef uint64_t floor
    cdef int64_t unsettled            # its messages in flight (acknowledging readers only)
    cdef readonly bint acking
    cdef readonly object group        # the consumer group's name, or None for a plain reader
    cdef public object ack            # the acknowledgement state shared by a group's members
    cdef readonly Py_ssize_t members  # attached subscribers (0: the pull group, or a durable group)
    cdef uint64_t delivered
    cdef uint64_t expired
    cdef uint64_t dropped
    cdef uint64_t lagged
    cdef readonly bint attached
    cdef list waiters                 # a group's members waiting in line (None: not a group)
    cdef list called                  # members the line woke that have not come back, in order
    cdef Py_ssize_t covered           # the messages those will take (their wants, summed)
    # set by keep() before an acknowledging reader detaches: the sequences it delivered and has
    # not settled (ascending, malloc'd), all below kept_end. NULL: not told.
    cdef uint64_t* kept
    cdef Py_ssize_t kept_count
    cdef uint64_t kept_end
    cdef bint pending_now(self) noexcept


@cython.final
cdef class TopicLog:
    cdef readonly str name
    cdef readonly Py_ssize_t capacity   # -1: unbounded
    cdef readonly int overflow          # what a publish to a full topic does (OVERFLOW_*)
    cdef readonly double ttl          # < 0: no TTL
    cdef bint persistence
    cdef kincir_mutex lock
    cdef bint ordered
    cdef Slot* ring
    cdef double* stamps         # monotonic publish times by slot; NULL unless a TTL is set
    cdef uint64_t mask
    cdef uint64_t head
    cdef uint64_t tail
    # tombstones: cleared slots (payload NULL) in [tail, hole_end) of settled messages that the
    # last acknowledging reader to leave had delivered behind an unsettled one. Every read skips
    # them, no count or size includes them; holes counts them (0: hole_end is 0 too).
    cdef uint64_t holes
    cdef uint64_t hole_end
    cdef list cursors
    cdef uint64_t** positions
    cdef Py_ssize_t positions_cap
    cdef Py_ssize_t positions_count   # = len(cursors), readable without touching the list
    cdef Py_ssize_t at_tail
    cdef list waiters
    cdef Py_ssize_t lined             # cursors whose line of waiting group members is not empty
    cdef uint64_t wakes               # receives it woke (a gauge: waiter_count's twin)
    cdef list room_waiters            # publishers blocked until the topic has room
    cdef bint room_freed              # slots were released while room_waiters was non-empty
    cdef uint64_t published
    cdef uint64_t delivered
    cdef uint64_t expired
    cdef uint64_t dropped
    cdef uint64_t queue_full
    cdef uint64_t lagged
    cdef uint64_t redelivered
    cdef uint64_t dead_lettered
    cdef readonly int64_t in_flight
    cdef int64_t held_bytes
    # payloads the log let go of under its lock, dropped once it is released (_unlock): freeing
    # an object may run Python code, which must never run while the lock is held
    cdef list graves
    cdef double created_at
    # wall-clock seconds of the last publish, subscribe, unsubscribe, pull or clear; a
    # subscriber's receive is not stamped (the clock read would cost more than the receive)
    cdef double last_activity
    cdef bint closed
    cdef readonly bint accepting
    cdef readonly bint ended          # closed for writing (close_topic): readers end once drained
    cdef void _release_to(self, uint64_t new_tail) noexcept
    cdef void _recompute_tail(self) noexcept
    cdef void _moved(self, uint64_t old_pos) noexcept
    cdef int append(self, Slot* batch, Py_ssize_t count, bint letter=*) except -1
    cdef int wait_room(self, Waiter waiter, Py_ssize_t count) except -1
    cdef inline Message _delivered(self, uint64_t seq)
    cdef Message take_one(self, Cursor cursor)
    cdef list take_many(self, Cursor cursor, Py_ssize_t limit)
    cpdef int attach(self, Cursor cursor, Py_ssize_t limit) except -1
    cpdef int join(self, Cursor cursor, Py_ssize_t limit) except -1
    cpdef int detach(self, Cursor cursor) except -1
    cpdef int64_t settle(self, Cursor cursor, uint64_t floor, int64_t count,
                         int64_t consumed=*) except? -2
    cdef Py_ssize_t _subscriber_count(self) noexcept


# The broker's kernel: what the hot path reads (BrokerCore, in _topics.py, is the rest).
cdef class BrokerKernel:
    cdef object __weakref__
    cdef readonly dict _topics          # name -> TopicLog
    cdef public int _state             # RUNNING, DRAINING or STOPPED
    cdef readonly set _letter_topics    # dead-letter topics of ack subscribers
    cdef list shutdown_waiters        # receives no topic may wake at shutdown (patterns)
    cdef kincir_mutex lock            # guards shutdown_waiters
    cdef int add_shutdown_waiter(self, Waiter waiter) except -1
    cdef void remove_shutdown_waiter(self, Waiter waiter) noexcept


cdef class PublisherCore:
    cdef readonly BrokerKernel broker
    cdef uint64_t published           # messages of the publishes the broker accepted
    cdef uint64_t refused             # messages of the publishes it refused (an error raised)
    cdef str last_name                # the topic of the last publish, and its log
    cdef TopicLog last_log
    cdef object _log_of(self, object topic, Py_ssize_t count)
    cdef object _append(self, TopicLog log, Slot* batch, Py_ssize_t count)
    cdef object _offer(self, object topic, object messages, object payload, object metadata,
                       TopicLog target)
    cdef object _send(self, object topic, object payload, object metadata, TopicLog target=*)
    cdef object _publish(self, object topic, object messages, TopicLog target=*)
    cdef int _publish_waiting(self, object topic, object messages, object payload,
                              object metadata, double deadline) except -1


# A subscriber's kernel: what its receives need (SubscriberCore, in _subscriptions.py, is the
# rest).
cdef class SubscriberKernel:
    cdef object __weakref__
    cdef readonly BrokerKernel broker
    cdef readonly object group
    cdef readonly bint acking
    cdef tuple cursors
    cdef readonly dict _by_topic      # topic -> Cursor, the subscriptions
    cdef Py_ssize_t next_index
    cdef public bint _closed
    cdef public bint _patterned       # has pattern subscriptions: may gain topics later
    cdef kincir_mutex lock
    # its waiting receives: the first in a slot of its own (one at a time is the common case: a
    # list it joins and leaves would be grown and shrunk at every wait), any other in the list
    cdef Waiter waiting_one
    cdef list waiting
    cdef SyncWaiter spare_waiter
    cdef uint64_t received            # messages the receives handed to the caller
    cdef void _refresh(self) noexcept
    cdef void _subscriptions_changed(self) noexcept
    cdef object _nothing(self)
    cdef inline Message _take_one(self)
    cdef Message _take_round_robin(self, tuple cursors, Py_ssize_t count)
    cdef list _take_many(self, Py_ssize_t limit)
    cdef object _receive_blocking(self, Py_ssize_t limit, object timeout)
    cdef tuple _register(self, Waiter waiter)
    cdef int _unregister(self, Waiter waiter, tuple cursors) except -1
    cdef bint _any_pending(self, tuple cursors) except -1


# The in-flight messages of acknowledging readers (_in_flight.pxi).
cdef class InFlight
cdef class AckHandle


@cython.final
cdef class _Line:
    cdef PyObject* first
    cdef PyObject* last
    cdef double timeout


@cython.final
cdef class AckOwner:
    cdef readonly double ack_timeout
    cdef readonly object max_deliveries
    cdef readonly object dead_letter_topic
    cdef readonly uint64_t received       # the subscriber's own counts (stats())
    cdef readonly uint64_t redelivered
    cdef readonly uint64_t acked
    cdef readonly uint64_t nacked
    cdef readonly uint64_t dead_lettered
    cdef Py_ssize_t rotation           # the state of its last receive, among its cursors'
    cdef public tuple _cache           # (its subscriber's cursors, their states)


@cython.final
cdef class AckHandle:
    cdef readonly object _owner        # the AckOwner it was handed to
    cdef readonly object _message
    cdef readonly InFlight _state
    cdef readonly str topic
    cdef readonly double timestamp
    cdef readonly Py_ssize_t delivery_count
    cdef readonly object _dead_letter_topic
    cdef object max_deliveries
    cdef uint64_t seq
    cdef double timeout
    cdef double deadline
    cdef bint live                    # the message's current delivery, held by _owner
    cdef AckHandle next                # the records list, in sequence order (it owns them)
    cdef PyObject* prev
    cdef _Line line                   # its ack timeout's line while live, else ready or None
    cdef PyObject* lprev
    cdef PyObject* lnext


cdef class InFlight:
    cdef readonly Cursor cursor
    cdef readonly TopicLog log
    cdef readonly object orphaned     # owner tokens of collected group members (no lock)
    cdef kincir_mutex lock            # guards everything below; taken before the topic's
    cdef AckHandle first
    cdef PyObject* last
    cdef _Line ready                  # waiting for redelivery
    cdef list lines                   # the held deliveries, one _Line per ack timeout
    cdef _Line recent                 # the line of the last delivery's ack timeout
    # the log holds this cursor's slots from here (as of the last settle): an older record's
    # slot was dropped (clear_topic, drop_oldest), and it must not hold the floor back
    cdef uint64_t held_from
    cdef double ttl_ms                # < 0: no TTL
    cdef void _unchain(self, AckHandle d) noexcept
    cdef AckHandle _handle(self, object message, uint64_t seq, Py_ssize_t count,
                           AckOwner owner, double now)
    cdef void _disown(self, AckHandle d) noexcept
    cdef int _settle(self, AckHandle d, int64_t consumed) except -1
    cdef int _retry_or_dead(self, AckHandle d, object reason, list dead) except -1
    cdef bint _due(self, double now) noexcept
    cdef list _expire(self, double now, list dead)
    cdef int _give_back(self, object owner) except -1
    cdef AckHandle _check(self, object handle, object owner)
    cdef list _unsettled(self)
    cdef object _next(self, AckOwner owner)
    cdef int _ack_one(self, AckHandle d, AckOwner owner) except -1


cpdef int leave(Cursor cursor) except -1
