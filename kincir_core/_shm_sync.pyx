# cython: language_level=3, embedsignature=True
"""Synchronisation between processes over a shared segment (Linux): the second layer of the
shared-memory transport (issue 17), above ``_segment`` (which maps the memory) and below the topic
logs that will live in it.

``SharedWords`` views a writable shared buffer (a segment's mmap) and offers, at byte offsets
into it: 64-bit atomics (load, store, fetch-add, compare-and-swap), futex waits and wakes on
32-bit words, and robust process-shared mutexes (``MUTEX_SIZE`` bytes each, 8-aligned). The view
keeps the buffer exported, so the mapping cannot be closed under it.

Waits release the GIL and wake at least every ``_SLICE`` seconds to run signal handlers, so
Ctrl-C interrupts them. A mutex whose owner died while holding it is handed to the next locker
with ``lock`` returning True: what it guards may be half-updated, and the new owner repairs it
and calls ``mark_consistent`` before ``unlock`` (unlocking without that makes the mutex
unusable, as POSIX specifies).
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdint cimport uint32_t, uint64_t

import errno as _errno

#: Bytes a robust mutex takes in a segment (aligned to 8).
MUTEX_SIZE = (sizeof(pthread_mutex_t) + 7) // 8 * 8
# the longest a wait sleeps before it checks for signals
cdef double _SLICE = 0.05


# -- the waiting helpers (_shm_sync.pxd) --------------------------------------------------------

cdef int raise_errno(int err) except -1:
    raise OSError(err, _errno.errorcode.get(err, str(err)))


cdef double deadline_of(object timeout) except? -2.0:
    """The monotonic time a wait of ``timeout`` seconds ends (-1.0: never); checks it."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0, not {timeout!r}")
    if timeout == 0:
        return 0.0  # already past, without reading the clock (a publish that must not wait)
    return kincir_monotonic() + timeout


cdef double next_sleep(double deadline) except? -2.0:
    """How long the next sleep of a wait may last: a slice, or what is left before
    ``deadline``, so that signal handlers run between sleeps."""
    if deadline < 0:
        return _SLICE
    return min(_SLICE, max(0.0, deadline - kincir_monotonic()))


cdef bint past(double deadline) except -1:
    return deadline >= 0 and kincir_monotonic() >= deadline


cdef int lock_mutex(pthread_mutex_t* mutex, double deadline) except -1:
    """Lock a robust mutex, up to ``deadline`` (TimeoutError); 1 when its last owner died
    holding it (the caller repairs and marks it consistent), else 0."""
    cdef double step
    # uncontended, the common case: no clock read, no system call
    cdef int err = pthread_mutex_trylock(mutex)
    if err == 0:
        return 0
    if err == EOWNERDEAD:
        return 1
    if err != EBUSY:
        raise_errno(err)
    while True:
        step = next_sleep(deadline)
        with nogil:
            err = kincir_shared_mutex_lock(mutex, step)
        if err == 0:
            return 0
        if err == EOWNERDEAD:
            return 1
        if err != ETIMEDOUT:
            raise_errno(err)
        PyErr_CheckSignals()
        if past(deadline):
            raise TimeoutError("a shared mutex stayed locked past the timeout")


cdef class SharedView:
    """A writable shared buffer (a segment's mmap), kept exported until ``release``."""

    def __cinit__(self, buffer, *args, **kwargs):
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE)
        self.held = True
        self.base = <unsigned char*>self.view.buf
        self.size = self.view.len

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    def release(self):
        """Stop using the buffer (it may be closed after this); idempotent."""
        if self.held:
            self.held = False
            self.base = NULL
            self.size = 0
            PyBuffer_Release(&self.view)

    cdef int _check_held(self) except -1:
        if not self.held:
            raise ValueError(f"this {type(self).__name__} was released")
        return 0


cdef class SharedWords(SharedView):
    """Atomics, futexes and robust mutexes at byte offsets of a writable shared buffer."""

    cdef void* _at(self, Py_ssize_t offset, Py_ssize_t width) except NULL:
        self._check_held()
        if offset < 0 or offset > self.size - width:
            raise IndexError(f"offset {offset} is outside the buffer ({self.size} bytes)")
        if offset % (width if width < 8 else 8):
            raise ValueError(f"offset {offset} is not aligned to {min(width, 8)} bytes")
        return self.base + offset

    # -- atomics --------------------------------------------------------------------------------

    def load(self, Py_ssize_t offset):
        """The 64-bit word at ``offset``."""
        return kincir_atomic_load_u64(<uint64_t*>self._at(offset, 8))

    def store(self, Py_ssize_t offset, uint64_t value):
        """Set the 64-bit word at ``offset``."""
        kincir_atomic_store_u64(<uint64_t*>self._at(offset, 8), value)

    def add(self, Py_ssize_t offset, uint64_t delta):
        """Add ``delta`` to the 64-bit word at ``offset`` (modulo 2**64); its value before."""
        return kincir_atomic_add_u64(<uint64_t*>self._at(offset, 8), delta)

    def compare_and_swap(self, Py_ssize_t offset, uint64_t expected, uint64_t desired):
        """Set the 64-bit word at ``offset`` to ``desired`` if it is ``expected``; whether it
        was."""
        return kincir_atomic_cas_u64(<uint64_t*>self._at(offset, 8), expected, desired)

    # -- futexes (32-bit words) -----------------------------------------------------------------

    def load32(self, Py_ssize_t offset):
        """The 32-bit word at ``offset``."""
        return kincir_atomic_load_u32(<uint32_t*>self._at(offset, 4))

    def add32(self, Py_ssize_t offset, uint32_t delta):
        """Add ``delta`` to the 32-bit word at ``offset`` (modulo 2**32); its value before."""
        return kincir_atomic_add_u32(<uint32_t*>self._at(offset, 4), delta)

    def wait(self, Py_ssize_t offset, uint32_t expected, timeout=None):
        """Sleep while the 32-bit word at ``offset`` is ``expected`` (up to ``timeout``
        seconds): True once it differs or a wake came, False on timeout. Spurious wakes are
        possible: the caller re-reads what it waits for."""
        cdef uint32_t* word = <uint32_t*>self._at(offset, 4)
        cdef double deadline = deadline_of(timeout)
        cdef double step
        cdef int err
        while True:
            step = next_sleep(deadline)
            with nogil:
                err = kincir_futex_wait(word, expected, step)
            if err == 0:
                return True
            if err != ETIMEDOUT and err != EINTR:
                raise_errno(err)
            PyErr_CheckSignals()
            if kincir_atomic_load_u32(word) != expected:
                return True
            if past(deadline):
                return False

    def wake(self, Py_ssize_t offset, int count=2**31 - 1):
        """Wake up to ``count`` waiters on the 32-bit word at ``offset``; how many woke."""
        cdef long woken = kincir_futex_wake(<uint32_t*>self._at(offset, 4), count)
        if woken < 0:
            PyErr_SetFromErrno(OSError)
        return woken

    # -- robust mutexes -------------------------------------------------------------------------

    cdef pthread_mutex_t* _mutex(self, Py_ssize_t offset) except NULL:
        return <pthread_mutex_t*>self._at(offset, MUTEX_SIZE)

    def init_mutex(self, Py_ssize_t offset):
        """Make the ``MUTEX_SIZE`` bytes at ``offset`` a robust, process-shared mutex (once,
        by the segment's creator, before any other process uses them)."""
        cdef int err = kincir_shared_mutex_init(self._mutex(offset))
        if err:
            raise_errno(err)

    def lock(self, Py_ssize_t offset, timeout=None):
        """Lock the mutex at ``offset``; TimeoutError after ``timeout`` seconds. True when its
        last owner died holding it: repair what it guards, then ``mark_consistent``."""
        return lock_mutex(self._mutex(offset), deadline_of(timeout)) == 1

    def mark_consistent(self, Py_ssize_t offset):
        """After ``lock`` returned True and what the mutex guards was repaired."""
        cdef int err = pthread_mutex_consistent(self._mutex(offset))
        if err:
            raise_errno(err)

    def unlock(self, Py_ssize_t offset):
        """Unlock the mutex at ``offset`` (held by this thread)."""
        cdef int err = pthread_mutex_unlock(self._mutex(offset))
        if err:
            raise_errno(err)
