# BrokerKernel: what the hot path reads of a broker (BrokerCore, in _topics.py, is the rest).
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

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
