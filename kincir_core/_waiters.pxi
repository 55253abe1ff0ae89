# Waiters: what a blocked receive or publish waits on, and how it is woken.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

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
        self.want = 1
        KINCIR_LIVE(LIVE_SYNC_WAITERS, 1)

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_SYNC_WAITERS, -1 if self.sem != NULL else 0)
        if self.sem != NULL:
            PyThread_acquire_lock(self.sem, 0)  # held or not, hold it, then hand it back
            PyThread_release_lock(self.sem)
            PyThread_free_lock(self.sem)

    cdef void rearm(self) noexcept:
        """Make a used waiter ready to wait again (subscribers reuse theirs)."""
        if self.woken and not self.consumed:
            PyThread_acquire_lock(self.sem, 0)  # swallow a wake that came after the last wait
        self.woken = False
        self.consumed = False

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
                self.consumed = True
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
        self.want = 1
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
