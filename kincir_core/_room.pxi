# Room in a topic: what counts against its capacity, expiry, and the overflow policies that
# make room. Functions over a TopicLog whose lock the caller holds (except _wake_room, which
# takes it). Included by _broker.pyx (one module: its cdef classes and functions see each other).


cdef int _make_room(TopicLog log, Py_ssize_t count, double now, Py_ssize_t* first,
                    Py_ssize_t* last) noexcept:
    """Room for ``count`` messages in ``log`` under its capacity, which they overflow by the
    slot count: reclaim expired messages if what counts is over too, then apply the overflow
    policy. Returns an append_outcome: APPEND_WRITTEN with the part of the batch to write in
    [first, last) (drop_newest cuts its end, drop_oldest its start), or why nothing is written.
    Lock held."""
    cdef uint64_t keep
    cdef uint64_t held
    held = _held(log)
    if log.ttl >= 0 and held + count > <uint64_t>log.capacity:
        _expire(log, now)
        held = _held(log)
    if held + count > <uint64_t>log.capacity:
        if log.overflow == OVERFLOW_DROP_NEWEST:
            keep = 0
            if held < <uint64_t>log.capacity:
                keep = <uint64_t>log.capacity - held
            last[0] = <Py_ssize_t>keep
            log.dropped += count - last[0]
            if last[0] == 0:
                return APPEND_DROPPED
        elif log.overflow == OVERFLOW_DROP_OLDEST:
            if count > log.capacity:
                # the batch alone overflows: everything held goes, and so does the batch's
                # start, numbered like the rest
                first[0] = count - log.capacity
                _drop_oldest(log, log.head - log.tail)
                _skip(log, first[0])
            else:
                # the oldest slots go: acked ones behind an in-flight message free nothing,
                # so count them too
                _drop_oldest(log, log.head - log.tail - log.holes + count
                             - <uint64_t>log.capacity)
        elif log.overflow == OVERFLOW_BLOCK and count <= log.capacity:
            return APPEND_MUST_WAIT
        else:
            log.queue_full += 1
            return APPEND_QUEUE_FULL
    return APPEND_WRITTEN


cdef uint64_t _held(TopicLog log) noexcept:
    """Messages held against the capacity: the most any reader holds, unread plus in flight
    (not the acked ones behind an unsettled message; none whose slot the log dropped); with
    no reader, every message the log holds. Lock held."""
    cdef uint64_t most = 0, held, pinned
    cdef Cursor cursor
    if not log.cursors:
        return log.head - log.tail - log.holes
    for cursor in log.cursors:
        held = log.head - cursor.pos - _holes_in(log, cursor.pos, log.head)
        if cursor.acking:
            pinned = cursor.pos - cursor.floor
            if <uint64_t>cursor.unsettled < pinned:
                pinned = <uint64_t>cursor.unsettled
            held += pinned
        if held > most:
            most = held
    return most


cdef uint64_t _queued(TopicLog log) noexcept:
    """Messages not yet read by the reader furthest behind (all held ones: no reader).
    Lock held."""
    cdef uint64_t most = 0, unread
    cdef Cursor cursor
    if not log.cursors:
        return log.head - log.tail - log.holes
    for cursor in log.cursors:
        unread = log.head - cursor.pos - _holes_in(log, cursor.pos, log.head)
        if unread > most:
            most = unread
    return most


cdef void _skip_expired(TopicLog log, Cursor cursor, double now) noexcept:
    cdef uint64_t old = cursor.pos
    cdef uint64_t pos = _first_live(log.stamps, log.mask, old, log.head, now - log.ttl)
    cdef uint64_t expired
    if pos != old:
        cursor.pos = pos
        expired = pos - old - _holes_in(log, old, pos)
        cursor.expired += expired
        log.expired += expired
        if not cursor.acking:
            log._moved(old)
        elif cursor.floor == old:  # nothing in flight below: the floor follows
            cursor.floor = pos
            log._moved(old)


cdef void _skip(TopicLog log, uint64_t count) noexcept:
    """Number ``count`` messages dropped on arrival (drop_oldest, a batch larger than the
    capacity): every reader loses them, counted as lagged. Lock held, nothing held."""
    cdef Cursor cursor
    log.head += count
    log.tail = log.head
    log.holes = log.hole_end = 0
    log.published += count
    if not log.cursors:
        log.dropped += count
    for cursor in log.cursors:
        cursor.lagged += count
        cursor.dropped += count
        log.lagged += count
        log.dropped += count
        cursor.pos = log.head
        cursor.floor = log.head
    log.at_tail = log.positions_count


cdef void _drop_oldest(TopicLog log, uint64_t count) noexcept:
    """Release the ``count`` oldest held messages (drop_oldest); readers that had not read
    them lose them, counted as lagged. Lock held."""
    cdef uint64_t new_tail
    cdef uint64_t lost
    cdef Cursor cursor
    if count == 0:
        return
    new_tail = _after_live(log, count)
    if not log.cursors:
        log.dropped += new_tail - log.tail - _holes_in(log, log.tail, new_tail)
    for cursor in log.cursors:
        if cursor.pos < new_tail:
            lost = new_tail - cursor.pos - _holes_in(log, cursor.pos, new_tail)
            cursor.lagged += lost
            cursor.dropped += lost
            log.lagged += lost
            log.dropped += lost
            cursor.pos = new_tail
        if cursor.floor < new_tail:
            cursor.floor = new_tail
    log._release_to(new_tail)
    if log.positions_count:
        _min_position(log.positions, log.positions_count, &log.at_tail)


cdef void _wake_room(TopicLog log) noexcept:
    """Wake the publishers waiting for room (after the lock is released)."""
    cdef list fresh = []
    cdef list waiters
    kincir_mutex_lock(&log.lock)
    waiters = log.room_waiters
    log.room_waiters = fresh
    log.room_freed = False
    _unlock(log)
    _wake_all(waiters)


cdef uint64_t _expire(TopicLog log, double now) noexcept:
    """The cleanup pass: move every reader past expired messages; reclaim orphans."""
    cdef uint64_t before = log.expired
    cdef uint64_t pos
    cdef Cursor cursor
    if log.ttl < 0:
        return 0
    if log.cursors:
        for cursor in log.cursors:
            _skip_expired(log, cursor, now)
    else:
        pos = _first_live(log.stamps, log.mask, log.tail, log.head, now - log.ttl)
        log.expired += pos - log.tail - _holes_in(log, log.tail, pos)
        log._release_to(pos)
    return log.expired - before
