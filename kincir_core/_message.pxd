from cpython.bytes cimport PyBytes_CheckExact
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t


cdef class Message:
    # The three object fields come first, and Message has no cdef methods (no vtable pointer):
    # _message.pyx writes them through a C mirror of this layout (KincirMessageHead), checked at
    # import.
    cdef readonly object payload
    cdef dict _meta
    cdef object _topic
    cdef uint64_t _id_hi
    cdef uint64_t _id_lo
    cdef int64_t _sequence
    cdef int64_t _enqueued_at
    cdef bint _ordered


cdef int check_batch(object items) except -1
cdef object snapshot_payload(object value)
cdef dict copy_metadata(object metadata)
cdef void new_id(uint64_t* hi, uint64_t* lo) noexcept


# Inline here (the engine's hot paths call them from another module): a cross-module cdef
# function is called through a pointer and cannot be inlined.

cdef inline void ensure_id(Message msg) noexcept:
    """Draw the uuid of a message the engine built without one (see ``delivered_copy``). Runs
    with the GIL held (the engine does not declare free-threading support), so two readers of
    one shared delivered Message cannot both draw."""
    if msg._id_hi == 0 and msg._id_lo == 0:
        new_id(&msg._id_hi, &msg._id_lo)


cdef inline object to_payload(object value):
    """A published payload as the broker keeps it: the object itself, except that a
    ``bytearray`` or ``memoryview`` becomes ``bytes`` (``snapshot_payload``)."""
    if PyBytes_CheckExact(value):
        return value
    return snapshot_payload(value)


cdef Message delivered_copy(PyObject* payload, PyObject* meta, uint64_t id_hi, uint64_t id_lo,
                            str topic, int64_t sequence, int64_t enqueued_at, bint ordered)
