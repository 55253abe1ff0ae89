from libc.stdint cimport int64_t, uint64_t


cdef class Message:
    cdef readonly bytes payload
    cdef dict _meta
    cdef object _topic
    cdef uint64_t _id_hi
    cdef uint64_t _id_lo
    cdef int64_t _sequence
    cdef int64_t _enqueued_at
    cdef bint _ordered


cdef Message stamp_one(object item, Py_ssize_t index, str topic, int64_t enqueued_at,
                       bint ordered)
cdef int check_batch(object items) except -1
cdef list stamp_all(object items, str topic, int64_t enqueued_at, bint ordered)
