# Ring slots: filling and clearing them, and the pure C scans over positions and stamps.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

# -- pure C helpers ---------------------------------------------------------------------------

cdef uint64_t _min_position(
    uint64_t** positions, Py_ssize_t count, Py_ssize_t* at_min
) noexcept nogil:
    cdef uint64_t low = positions[0][0]
    cdef Py_ssize_t i, n = 1
    for i in range(1, count):
        if positions[i][0] < low:
            low = positions[i][0]
            n = 1
        elif positions[i][0] == low:
            n += 1
    at_min[0] = n
    return low


cdef uint64_t _first_live(const double* stamps, uint64_t mask, uint64_t pos, uint64_t head,
                          double deadline) noexcept nogil:
    while pos < head and stamps[pos & mask] < deadline:
        pos += 1
    return pos


cdef inline Py_ssize_t _payload_size(PyObject* payload) noexcept:
    """The bytes of a payload the memory estimate counts: a bytes payload's length. An object
    is shared with the publisher, not copied, and counts as a reference (0).
    (PyBytes_Check: a bytes subclass counts its length too.)"""
    if PyBytes_Check(<object>payload):
        return PyBytes_GET_SIZE(<object>payload)
    return 0


cdef inline void _clear_slot(Slot* slot) noexcept:
    """Drop a slot's references. Frees Python code only through an object payload: the log
    moves those to its graves before clearing a slot under its lock."""
    Py_XDECREF(slot.message)
    Py_XDECREF(slot.payload)
    Py_XDECREF(slot.meta)
    slot.message = slot.payload = slot.meta = NULL


cdef dict _NO_METADATA = {}


cdef inline int _fill_slot(Slot* slot, object item) except -1:
    """Write ``item`` (a Message or a payload) into ``slot``, taking references."""
    cdef Message source
    cdef object payload
    cdef object meta
    if type(item) is Message:
        source = <Message>item
        payload = source.payload
        meta = source._meta
        ensure_id(source)  # a delivered message published again keeps its uuid
        slot.id_hi = source._id_hi
        slot.id_lo = source._id_lo
    else:
        payload = to_payload(item)
        meta = _NO_METADATA
        slot.id_hi = slot.id_lo = 0  # drawn when first read
    Py_INCREF(payload)
    Py_INCREF(meta)
    slot.payload = <PyObject*>payload
    slot.meta = <PyObject*>meta
    slot.message = NULL
    return 0


cdef void _clear_slots(Slot* slots, Py_ssize_t count) noexcept:
    cdef Py_ssize_t i
    for i in range(count):
        _clear_slot(&slots[i])
