# A topic's waiters and its consumer groups' lines of waiting members.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

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
        _unlock(log)
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
    _unlock(log)
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
    _unlock(log)
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
