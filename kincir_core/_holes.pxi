# Tombstones: the settled messages the last acknowledging reader leaves behind (cleared slots,
# payload NULL, in [tail, hole_end)). Every read skips them; no count or size includes them.
# Included by _broker.pyx (one module: its cdef classes and functions see each other); each
# function runs with the topic's lock held.


cdef uint64_t _holes_in(TopicLog log, uint64_t start, uint64_t end) noexcept:
    """The tombstones among the slots [start, end). Lock held."""
    cdef uint64_t n = 0, seq
    if start >= log.hole_end:
        return 0
    if start < log.tail:
        start = log.tail
    if end > log.hole_end:
        end = log.hole_end
    if start == log.tail and end == log.hole_end:
        return log.holes
    for seq in range(start, end):
        if log.ring[seq & log.mask].payload == NULL:
            n += 1
    return n


cdef uint64_t _skip_holes(TopicLog log, uint64_t pos) noexcept:
    """The first position from ``pos`` that is not a tombstone. Lock held."""
    while pos < log.hole_end and log.ring[pos & log.mask].payload == NULL:
        pos += 1
    return pos


cdef uint64_t _after_live(TopicLog log, uint64_t count) noexcept:
    """The sequence after the ``count`` oldest held messages (tombstones skipped)."""
    cdef uint64_t seq = log.tail
    if log.holes == 0:
        return log.tail + count if count < log.head - log.tail else log.head
    while count and seq < log.head:
        if log.ring[seq & log.mask].payload != NULL:
            count -= 1
        seq += 1
    return seq


cdef void _took(TopicLog log, Cursor cursor, uint64_t old, uint64_t first, uint64_t end,
                Py_ssize_t n) noexcept:
    """``cursor`` read among tombstones from ``old`` to ``end``: ``n`` messages, the first
    at ``first``. Lock held."""
    cursor.pos = end
    if not cursor.acking:
        cursor.delivered += n
        log.delivered += n
        log._moved(old)
    else:  # in flight until settled; the floor skips the tombstones before them
        cursor.unsettled += n
        log.in_flight += n
        if cursor.floor == old:
            cursor.floor = first if n else end
            if cursor.floor != old:
                log._moved(old)


cdef void _drop_settled(TopicLog log, Cursor cursor) noexcept:
    """The last reader, an acknowledging one, left: of the messages it delivered, drop the
    settled ones, keeping the unsettled ones (``cursor.kept``) for the next reader. Their
    slots become tombstones. Lock held."""
    cdef uint64_t seq, start = cursor.floor, end = cursor.pos
    cdef uint64_t tail
    cdef Py_ssize_t i = 0
    cdef int64_t freed = 0
    cdef Slot* slot
    if start < log.tail:
        start = log.tail
    if end > cursor.kept_end:
        end = cursor.kept_end
    for seq in range(start, end):
        while i < cursor.kept_count and cursor.kept[i] < seq:
            i += 1
        if i < cursor.kept_count and cursor.kept[i] == seq:
            continue
        slot = &log.ring[seq & log.mask]
        if slot.payload == NULL:
            continue
        freed += _payload_size(slot.payload) + _MESSAGE_OVERHEAD
        if _last_holder(slot) and PyList_Append(log.graves, <object>slot.payload) < 0:
            PyErr_Clear()  # no room for the grave: drop it here, as before objects
        _clear_slot(slot)
        KINCIR_LIVE(LIVE_SLOTS, -1)
        log.holes += 1
    if freed == 0:
        return
    log.held_bytes -= freed
    if end > log.hole_end:
        log.hole_end = end
    if log.room_waiters:
        log.room_freed = True
    tail = _skip_holes(log, log.tail)
    if tail != log.tail:
        log._release_to(tail)


cdef void _refill_holes(TopicLog log, uint64_t new_tail) noexcept:
    """Before _release_to(new_tail): turn the tombstones it releases into slots holding None
    (no bytes, never a grave), counted as if held, so that releasing them counts nothing.
    Lock held (None is only referenced: nothing is allocated or freed)."""
    cdef uint64_t seq, n = 0, end = new_tail
    cdef Slot* slot
    if end > log.hole_end:
        end = log.hole_end
    for seq in range(log.tail, end):
        slot = &log.ring[seq & log.mask]
        if slot.payload == NULL:
            Py_INCREF(None)
            slot.payload = <PyObject*>None
            n += 1
    log.held_bytes += <int64_t>n * _MESSAGE_OVERHEAD
    KINCIR_LIVE(LIVE_SLOTS, <Py_ssize_t>n)
    log.holes -= n
    if log.holes == 0:
        log.hole_end = 0
