# The engine's clock and the argument checks of its hot calls.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

# Added to every clock read of the engine's TTL and waiting logic; moved forward only by
# _advance_clock, for tests that must step time (TTL, ack deadlines) without sleeping.
cdef double _clock_offset = 0.0


cdef inline double _monotonic() noexcept nogil:
    return <double>PyTime_MonotonicRaw() * 1e-9 + _clock_offset


def monotonic():
    """The engine's monotonic clock, in seconds (TTL and ack deadlines are measured on it)."""
    return _monotonic()


def wall_ms():
    """Unix time in milliseconds, moved by _advance_clock like the engine's monotonic clock
    (the age of a delivered message is measured against its ``enqueued_at`` on it)."""
    return _now_ms()


def _reset_clock():
    """Undo every _advance_clock (tests only: call it when no broker that saw the stepped
    clock is still in use)."""
    global _clock_offset
    _clock_offset = 0.0


def _advance_clock(double seconds):
    """Move the engine's clock forward by ``seconds`` (tests only: it is process-wide)."""
    global _clock_offset
    if not seconds >= 0:
        raise ValueError("the clock only moves forward")
    _clock_offset += seconds


cdef inline double _wall() noexcept nogil:
    return <double>PyTime_TimeRaw() * 1e-9


cdef extern from "_clock.h":
    int64_t kincir_coarse_time_ns() noexcept nogil


cdef inline int64_t _now_ms() noexcept nogil:
    """Unix milliseconds, for ``enqueued_at`` (moved by _advance_clock too): from the coarse
    clock where the OS keeps one (at most a kernel tick old, a quarter of the cost of a
    precise read: see _clock.h)."""
    cdef int64_t ns = kincir_coarse_time_ns()
    if ns < 0:
        ns = PyTime_TimeRaw()
    return ns // 1000000 + <int64_t>(_clock_offset * 1000)


cdef double _check_timeout_c(object timeout) except? -2.0:
    """Seconds as a double, -1.0 for None (wait forever); _validate.check_timeout checks."""
    if timeout is None:
        return -1.0
    if type(timeout) is float and <double>timeout >= 0.0:  # the common case, in C (NaN fails)
        return <double>timeout
    return check_timeout(timeout)


cdef Py_ssize_t _check_batch_size(object value, str name) except -1:
    """A batch receive's size: 0 asks for nothing (an empty batch at once)."""
    if type(value) is int and 0 <= value < (1 << 62):
        return value
    return check_batch_size(value, name)
