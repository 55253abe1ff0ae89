# A topic's ring storage: growing and shrinking it (the topic's lock held).
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

# -- a topic's ring storage (its lock held) -------------------------------------------------

cdef void _ring_shrink(TopicLog log, uint64_t size) noexcept nogil:
    """Move the held slots into a smaller ring; without memory, keep the larger one. Not
    zeroed: no slot outside [tail, head) is ever read, and the smaller ring is still four to
    eight times what it holds, so zeroing it would write (and fault in) that much more."""
    cdef Slot* ring = <Slot*>malloc(size * sizeof(Slot))
    cdef double* stamps = NULL
    cdef uint64_t seq, mask = size - 1
    if ring == NULL:
        return
    if log.stamps != NULL:
        stamps = <double*>malloc(size * sizeof(double))
        if stamps == NULL:
            free(ring)
            return
    for seq in range(log.tail, log.head):
        ring[seq & mask] = log.ring[seq & log.mask]
        if stamps != NULL:
            stamps[seq & mask] = log.stamps[seq & log.mask]
    free(log.ring)
    free(log.stamps)
    log.ring = ring
    log.stamps = stamps
    log.mask = mask


cdef int _ring_grow(TopicLog log, uint64_t size) noexcept nogil:
    """Enlarge the ring in place where the allocator can (realloc keeps the pages already
    touched), then move each held slot to its index under the new mask: only into the new
    upper part, which holds nothing yet. Returns -1, changing nothing, without memory."""
    cdef Slot* ring = <Slot*>realloc(log.ring, size * sizeof(Slot))
    cdef double* stamps = log.stamps
    cdef uint64_t seq, old_mask = log.mask, mask = size - 1
    if ring == NULL:
        return -1
    log.ring = ring  # larger, still consistent under the old mask
    if stamps != NULL:
        stamps = <double*>realloc(stamps, size * sizeof(double))
        if stamps == NULL:
            return -1
        log.stamps = stamps
    for seq in range(log.tail, log.head):
        if (seq & mask) != (seq & old_mask):
            ring[seq & mask] = ring[seq & old_mask]
            if stamps != NULL:
                stamps[seq & mask] = stamps[seq & old_mask]
    log.mask = mask
    return 0
