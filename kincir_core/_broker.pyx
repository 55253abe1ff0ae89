# cython: language_level=3, embedsignature=True, binding=False
"""The engine's kernel: topic logs, cursors, waiting, and the hot calls.

Only this is written twice (the twin is _broker_py.py, with _topic_log_py.py and _waiting_py.py).
The broker's topic management, groups, lifecycle and snapshots (_topics.py) and a subscriber's
subscriptions (_subscriptions.py) are written once, in Python, above it: they subclass
BrokerKernel and SubscriberKernel and call the TopicLog and Cursor methods of the .pxi files
included at the end; the hot calls (publish*, try_receive*, receive*) never leave this module
while the topic exists.

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
finalizer can re-enter the engine. The exception is an acknowledging cursor's InFlight
(_in_flight.pxi): its mutex, taken before the topic's, guards a state whose deliveries it makes
(AckHandle objects) under it, so a collection may run there; the finalizer of a group member
only queues its owner token, without locking. Its records list owns the handles in sequence
order; the lines of deadlines and redeliveries only borrow them. The topic table itself is
changed only by the Python layer, under its own reentrant lock (never taken under a mutex); the
hot path reads it without one.

Waiting: receive_sync blocks with the GIL released on a one-shot SyncWaiter (a PyThread lock
used as a semaphore), in slices, checking signals between them so Ctrl-C interrupts it. An
asyncio receive registers an AsyncWaiter (a future on its loop). A publish takes the topic's
waiter list under the lock and wakes each waiter after unlocking: the thread-safe wake-up is paid
only when someone waits. A consumer group's members wait in line on its cursor (_lines.pxi): a
publish wakes members only while the unread messages exceed what the members already woken will
take, so k messages wake at most k members, and a woken member that comes back without its share
passes the wake on to the next (none is left waiting beside unread messages). Only waiting
releases the GIL; the ``nogil`` helpers of _slots.pxi are pure C (cursor and expiry scans) and run
with the GIL held, since dropping it costs more than they do.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject, PyTypeObject
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
from cpython.bytes cimport PyBytes_Check
from cpython.exc cimport PyErr_Clear
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.time cimport PyTime_MonotonicRaw, PyTime_TimeRaw
from libc.stdint cimport int64_t, uint64_t
# PyMem_Raw*: the C allocator, but seen by tracemalloc, so memory measurements include the rings
from cpython.mem cimport PyMem_RawCalloc as calloc
from cpython.mem cimport PyMem_RawFree as free
from cpython.mem cimport PyMem_RawMalloc as malloc
from cpython.mem cimport PyMem_RawRealloc as realloc

from ._message cimport (
    Message, check_batch, copy_metadata, delivered_copy, ensure_id, to_payload,
)

from asyncio import get_running_loop as _get_running_loop
from asyncio import timeout as _asyncio_timeout

from ._validate import OVERFLOW_POLICIES, check_batch_size, check_timeout, validate_topic_name

from ._codes import AppendOutcome as _AppendOutcome
from ._codes import AttachOutcome as _AttachOutcome
from ._codes import BrokerState as _BrokerState
from ._rows import CursorCounts as _CursorCounts
from ._rows import TopicRow as _TopicRow
from ._errors import BrokerShutdown, NotSubscribed, QueueFull, TopicClosed, TopicNotFound

cdef extern from "Python.h":
    Py_ssize_t PyBytes_GET_SIZE(object)
    const Py_ssize_t PY_SSIZE_T_MAX
    # the list calls the graves need, declared to return their status (no exception check):
    # they run in noexcept code, which clears an error itself
    int PyList_Append(object lst, object item)
    Py_ssize_t PyList_GET_SIZE(object lst)
    int PyList_SetSlice(object lst, Py_ssize_t low, Py_ssize_t high, PyObject* items)
    # unchecked item access for the batch loops, which check type and size themselves
    Py_ssize_t Py_SIZE(object obj)
    PyObject* PySequence_Fast_GET_ITEM(object seq, Py_ssize_t i)  # borrowed
    PyObject* PyList_GET_ITEM(object lst, Py_ssize_t i)  # borrowed
    void PyList_SET_ITEM(object lst, Py_ssize_t i, PyObject* item)  # steals item
    # on the pointer itself: a cast to object would add the temporary reference it counts
    Py_ssize_t _refcount "Py_REFCNT" (PyObject* obj)
    bint _is_exact_bytes "PyBytes_CheckExact" (PyObject* obj)
    void PyType_Modified(PyTypeObject* tp)

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
                                     APPEND_NO_MEMORY, APPEND_MUST_WAIT, APPEND_TOPIC_CLOSED)
        or tuple(_AttachOutcome) != (ATTACH_OK, ATTACH_FULL, ATTACH_NO_MEMORY, ATTACH_GONE)):
    raise ImportError("the codes of kincir_core/_broker.pxd differ from kincir_core/_codes.py")

# Estimated bytes a held message costs beyond its payload and its ring slot: the bytes object
# header; the Message readers share adds 80 once read. Used by the memory estimate, kept
# incrementally; the estimate adds every allocated slot of the ring (sizeof(Slot), and a double
# with a TTL).
MESSAGE_OVERHEAD = 33  # the bytes object header (a read adds a Message)
cdef int64_t _MESSAGE_OVERHEAD = MESSAGE_OVERHEAD


# The kernel by concern, one file each (textually included: one module, so the cdef classes and
# functions see each other and every call between them stays a direct C call).
include "_clock.pxi"
include "_waiters.pxi"
include "_slots.pxi"
include "_cursor.pxi"
include "_topic_log.pxi"
include "_room.pxi"
include "_holes.pxi"
include "_join.pxi"
include "_ring.pxi"
include "_lines.pxi"
include "_broker_kernel.pxi"
include "_publisher.pxi"
include "_subscriber.pxi"
include "_awaitables.pxi"
include "_in_flight.pxi"
