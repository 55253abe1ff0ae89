# Cursors: one reader's position in a topic log.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

# -- cursors ----------------------------------------------------------------------------------

cdef class Cursor:
    """One reader's position in a topic log: the sequence number it reads next."""

    def __cinit__(self, TopicLog log, Py_ssize_t members, object group=None, bint acking=False):
        KINCIR_LIVE(LIVE_CURSORS, 1)
        self.log = log
        self.members = members
        self.group = group
        self.acking = acking
        # a group's waiting members, in line (publishes wake them in turn, _lines.pxi)
        if group is not None:
            self.waiters = []
            self.called = []

    cdef bint pending_now(self) noexcept:
        """True if this reader has unread messages."""
        cdef bint pending
        kincir_mutex_lock(&self.log.lock)
        try:
            pending = self.attached and self.pos != self.log.head
        finally:
            _unlock(self.log)
        return pending

    def pending(self):
        """Messages this reader has not read yet (0 once detached)."""
        cdef uint64_t n = 0
        kincir_mutex_lock(&self.log.lock)
        try:
            if self.attached:
                n = self.log.head - self.pos - _holes_in(self.log, self.pos, self.log.head)
        finally:
            _unlock(self.log)
        return n

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_CURSORS, -1)
        free(self.kept)

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

    def keep(self, list unsettled):
        """This acknowledging reader is about to detach: ``unsettled`` (ascending) are the
        sequences it delivered and has not settled. If it is the last reader to leave, the log
        keeps only those of its delivered messages for the next reader (it drops the settled
        ones behind the oldest unsettled one)."""
        cdef Py_ssize_t i, count = len(unsettled)
        cdef uint64_t* kept = <uint64_t*>malloc((count if count else 1) * sizeof(uint64_t))
        cdef uint64_t* old
        if kept == NULL:
            raise MemoryError("cannot keep the unsettled messages")
        for i in range(count):
            kept[i] = unsettled[i]
        kincir_mutex_lock(&self.log.lock)
        if self.attached:
            old = self.kept
            self.kept = kept
            self.kept_count = count
            self.kept_end = self.pos
        else:
            old = kept
        _unlock(self.log)
        free(old)

    def counts(self):
        """This reader's own counters (a CursorCounts)."""
        return _CursorCounts(self.delivered, self.expired, self.dropped, self.lagged)

    def floor_now(self):
        """The oldest sequence the log still holds for this reader (its settled floor)."""
        cdef uint64_t floor
        kincir_mutex_lock(&self.log.lock)
        floor = self.floor if self.acking else self.pos
        _unlock(self.log)
        return floor


cdef inline uint64_t* _tracked(Cursor cursor) noexcept:
    """The position that holds this reader's slots: the floor of an acknowledging reader."""
    return &cursor.floor if cursor.acking else &cursor.pos
