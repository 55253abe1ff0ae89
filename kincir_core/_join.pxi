# Join: waiting until every reader of a topic has read, and settled, what was published before
# the wait (InMemoryBroker.join / join_async). Module functions over a TopicLog, as in
# _holes.pxi. A join waits with the publishers blocked for room (room_waiters): both are woken
# when slots are released, and a join looks again each time.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).


cdef bint _settled_to(TopicLog log, uint64_t mark) noexcept:
    """Whether no message before sequence ``mark`` is still held for a reader (every reader
    read it and, acknowledging, settled it; with no reader, it was dropped). Lock held."""
    cdef uint64_t end = mark if mark < log.head else log.head
    if log.ttl >= 0:
        _expire(log, _monotonic())
    return (log.closed or log.tail >= end
            or end - log.tail == _holes_in(log, log.tail, end))


cdef int _watch_settled(TopicLog log, Waiter waiter, uint64_t mark) except -1:
    """Register ``waiter`` to be woken as slots are released: 1, or 0, registering nothing,
    when everything before ``mark`` is settled already."""
    cdef int waiting = 0
    kincir_mutex_lock(&log.lock)
    try:
        if not _settled_to(log, mark):
            log.room_waiters.append(waiter)
            waiting = 1
    finally:
        _unlock(log)
    if log.room_freed:
        _wake_room(log)
    return waiting


cdef double _join_deadline(TopicLog log, double deadline):
    """When one wait of a join ends: at ``deadline`` (< 0: none), and within the TTL (a message
    that expires meanwhile releases its slot only when a reader or the cleanup pass comes by,
    so the join looks itself)."""
    cdef double by_ttl
    if log.ttl < 0:
        return deadline
    by_ttl = _monotonic() + log.ttl
    return by_ttl if deadline < 0 or by_ttl < deadline else deadline


cdef uint64_t _join_mark(TopicLog log) noexcept:
    """The sequence a join waits up to: the next one to be published now."""
    cdef uint64_t mark
    kincir_mutex_lock(&log.lock)
    mark = log.head
    _unlock(log)
    return mark


def wait_settled(TopicLog log, timeout):
    """Block until every message published to ``log`` before this call was read and settled by
    every reader (True), or ``timeout`` seconds pass (False)."""
    cdef double seconds = _check_timeout_c(timeout)
    cdef double deadline = -1.0 if seconds < 0 else _monotonic() + seconds
    cdef SyncWaiter waiter = SyncWaiter()
    cdef uint64_t mark = _join_mark(log)
    cdef bint settled
    while True:
        waiter.rearm()
        if not _watch_settled(log, waiter, mark):
            return True
        try:
            waiter.wait(_join_deadline(log, deadline))
        finally:
            log.remove_room_waiter(waiter)
        if deadline >= 0 and _monotonic() >= deadline:
            kincir_mutex_lock(&log.lock)
            settled = _settled_to(log, mark)
            _unlock(log)
            return settled


async def settled(TopicLog log):
    """``wait_settled`` on the running event loop (bound it with ``asyncio.timeout``)."""
    cdef object loop = _get_running_loop()
    cdef object future
    cdef AsyncWaiter waiter
    cdef uint64_t mark = _join_mark(log)
    while True:
        future = loop.create_future()
        waiter = AsyncWaiter(loop, future)
        if not _watch_settled(log, waiter, mark):
            return
        try:
            async with _asyncio_timeout(None if log.ttl < 0 else log.ttl):
                await future
        except TimeoutError:
            pass  # under a TTL: look again
        finally:
            log.remove_room_waiter(waiter)
