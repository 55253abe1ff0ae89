# A topic's waiters and its consumer groups' lines of waiting members.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).
#
# A group's members wait in line on its cursor, never on the topic's waiter list. A member the
# line wakes moves to the cursor's ``called`` list and covers ``want`` messages (its receive's
# limit) until it comes back; the line wakes members, in order, only while the unread messages
# exceed what the called members cover. So a publish of k messages wakes at most k members, and
# a member that comes back without taking its share leaves the unread messages uncovered: the
# next in line is woken at once. A member waiting on an event loop may never come back (its loop
# stopped or blocked): once a member woken after it came back, it covers nothing any more.

cdef enum:
    # members one pass under the lock may wake: their references wait on the stack meanwhile
    CALL_MAX = 16


cdef int _add_waiter(TopicLog log, Waiter waiter, Cursor cursor) except -1:
    """Register ``waiter`` to be woken by the next publish; a member of ``cursor``'s group
    joins the line (it takes what is unread itself before it waits)."""
    cdef list fresh
    cdef list line = cursor.waiters
    cdef bint added = False
    if line is not None:
        kincir_mutex_lock(&log.lock)
        try:
            line.append(waiter)
            if len(line) == 1:
                log.lined += 1
        finally:
            _unlock(log)
        return 0
    while not added:
        # a new list is made before locking: nothing GC-tracked is allocated under the lock
        fresh = [] if log.waiters is None else None
        kincir_mutex_lock(&log.lock)
        if log.waiters is None:
            log.waiters = fresh  # None if a publish took the list meanwhile: try again
        if log.waiters is not None:
            log.waiters.append(waiter)
            added = True
        _unlock(log)
    return 0


cdef int _remove_waiter(TopicLog log, Waiter waiter, Cursor cursor) except -1:
    """Unregister ``waiter``. A member the line woke no longer covers a message: the next in
    line is woken if the unread messages call for it (it may have taken none)."""
    cdef Py_ssize_t i, j
    cdef list line = cursor.waiters
    cdef list called = cursor.called
    cdef object other
    cdef PyObject* woken[CALL_MAX]
    cdef Py_ssize_t n = 0
    kincir_mutex_lock(&log.lock)
    try:
        if line is None:
            if log.waiters is not None:
                for i in range(len(log.waiters) - 1, -1, -1):
                    if log.waiters[i] is waiter:
                        del log.waiters[i]
                        break
        else:
            for i in range(len(called) - 1, -1, -1):
                if called[i] is waiter:
                    # the members woken before it on an event loop it overtook: that loop may
                    # never run them (stopped, blocked), so they cover nothing any more
                    for j in range(i, -1, -1):
                        other = called[j]
                        if j == i or isinstance(other, AsyncWaiter):
                            cursor.covered -= (<Waiter>other).want
                            del called[j]
                    break
            else:
                for i in range(len(line) - 1, -1, -1):
                    if line[i] is waiter:
                        del line[i]
                        if not line:
                            log.lined -= 1
                        break
            n = _call_line(log, cursor, woken, CALL_MAX, False)
    finally:
        _unlock(log)
    _wake_called(woken, n)
    if n == CALL_MAX:
        _wake_lines(log, cursor, False)
    return 0


cdef Py_ssize_t _call_line(TopicLog log, Cursor cursor, PyObject** out, Py_ssize_t room,
                           bint every) noexcept:
    """Take the members of ``cursor``'s line the unread messages call for (``every``: all of
    them) off it, at most ``room``, into ``out`` (new references) and its called list (lock
    held). Returns how many."""
    cdef list line = cursor.waiters
    cdef Py_ssize_t n = 0
    cdef uint64_t unread = 0
    cdef Waiter waiter
    if not line:
        return 0
    if cursor.attached:
        unread = log.head - cursor.pos
    while n < room and PyList_GET_SIZE(line) and (every or <uint64_t>cursor.covered < unread):
        waiter = <Waiter>line[0]
        if PyList_SetSlice(line, 0, 1, NULL) < 0:
            PyErr_Clear()
            break
        if PyList_Append(cursor.called, waiter) == 0:
            cursor.covered += waiter.want
        else:  # not counted: the next publish wakes one more member, never one fewer
            PyErr_Clear()
        Py_INCREF(waiter)
        out[n] = <PyObject*>waiter
        n += 1
    if not line:
        log.lined -= 1
    log.wakes += n
    return n


cdef Py_ssize_t _call_lines(TopicLog log, PyObject** out) noexcept:
    """``_call_line`` for each of the topic's groups, up to CALL_MAX members (lock held)."""
    cdef Py_ssize_t n = 0
    cdef object cursor
    for cursor in log.cursors:
        if (<Cursor>cursor).waiters:
            n += _call_line(log, <Cursor>cursor, out + n, CALL_MAX - n, False)
            if n == CALL_MAX:
                break
    return n


cdef void _wake_called(PyObject** woken, Py_ssize_t count) noexcept:
    """Wake the members ``_call_line`` took (lock not held) and drop its references."""
    cdef Py_ssize_t i
    for i in range(count):
        (<Waiter>woken[i]).wake()
        Py_XDECREF(woken[i])


cdef int _wake_lines(TopicLog log, Cursor only=None, bint every=True) except -1:
    """Wake the members waiting in line (lock not held): with ``every``, each of them
    (something other than a publish happened that each must look at), else those the unread
    messages call for; only ``only``'s line if given, else every group's."""
    cdef PyObject* woken[CALL_MAX]
    cdef Py_ssize_t n = CALL_MAX
    cdef object cursor
    while n == CALL_MAX:
        n = 0
        kincir_mutex_lock(&log.lock)
        if only is not None:
            n = _call_line(log, only, woken, CALL_MAX, every)
        else:
            for cursor in log.cursors:
                if (<Cursor>cursor).waiters:
                    n += _call_line(log, <Cursor>cursor, woken + n, CALL_MAX - n, every)
                    if n == CALL_MAX:
                        break
        _unlock(log)
        _wake_called(woken, n)
    return 0
