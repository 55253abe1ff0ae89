from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t


cdef class Message:
    cdef readonly object payload
    cdef dict _meta
    cdef object _topic
    cdef uint64_t _id_hi
    cdef uint64_t _id_lo
    cdef int64_t _sequence
    cdef int64_t _enqueued_at
    cdef bint _ordered


cdef int check_batch(object items) except -1
cdef object to_payload(object value)
cdef dict copy_metadata(object metadata)
cdef void new_id(uint64_t* hi, uint64_t* lo) noexcept
cdef inline void ensure_id(Message msg) noexcept:
    """Draw the uuid of a message the engine built without one (see ``delivered_copy``)."""
    if msg._id_hi == 0 and msg._id_lo == 0:
        new_id(&msg._id_hi, &msg._id_lo)


cdef Message delivered_copy(PyObject* payload, PyObject* meta, uint64_t id_hi, uint64_t id_lo,
                            str topic, int64_t sequence, int64_t enqueued_at, bint ordered)
