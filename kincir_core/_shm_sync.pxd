# What the shared-memory modules cimport from _shm_sync: the C primitives of _shm_sync.h, and the
# waiting helpers every wait in shared memory goes through (defined in _shm_sync.pyx).
from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "_shm_sync.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    uint64_t kincir_atomic_load_u64(uint64_t* word)
    void kincir_atomic_store_u64(uint64_t* word, uint64_t value)
    uint64_t kincir_atomic_add_u64(uint64_t* word, uint64_t delta)
    bint kincir_atomic_cas_u64(uint64_t* word, uint64_t expected, uint64_t desired)
    uint32_t kincir_atomic_load_u32(uint32_t* word)
    void kincir_atomic_store_u32(uint32_t* word, uint32_t value)
    uint32_t kincir_atomic_add_u32(uint32_t* word, uint32_t delta)
    int kincir_futex_wait(uint32_t* word, uint32_t expected, double seconds)
    long kincir_futex_wake(uint32_t* word, int count)
    int kincir_shared_mutex_init(pthread_mutex_t* mutex)
    int kincir_shared_mutex_lock(pthread_mutex_t* mutex, double seconds)
    double kincir_monotonic()
    void kincir_cpu_relax()
    int sched_yield()
    int pthread_mutex_trylock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)
    int pthread_mutex_consistent(pthread_mutex_t* mutex)
    enum:
        EOWNERDEAD
        ETIMEDOUT
        EBUSY
        EINTR
        ENOTRECOVERABLE


cdef double deadline_of(object timeout) except? -2.0
cdef double next_sleep(double deadline) except? -2.0
cdef bint past(double deadline) except -1
cdef int raise_errno(int err) except -1
cdef int lock_mutex(pthread_mutex_t* mutex, double deadline) except -1


cdef class SharedView:
    # A writable shared buffer kept exported (so its mapping cannot be closed under the view)
    # until release(): what SharedWords and _shm_log's ShmLog stand on.
    cdef Py_buffer view
    cdef bint held
    cdef unsigned char* base
    cdef Py_ssize_t size
    cdef int _check_held(self) except -1
