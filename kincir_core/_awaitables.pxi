# PublishOp and ReceiveOp: awaitables without a coroutine frame.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

# -- awaitables without a coroutine frame -----------------------------------------------------
#
# ``publish()`` and ``receive()`` are called once per message; a Cython coroutine costs two
# GC-tracked allocations (the coroutine and its closure) per call. These one-shot awaitables do
# the same work with one small object: they act only when awaited (sent to), like a coroutine,
# and asyncio accepts them wherever it accepts a coroutine (they are registered as
# collections.abc.Coroutine), create_task included. The interpreter and asyncio's Task drive
# them through ``am_send`` (PyIter_Send), which hands back the result without raising
# StopIteration; ``send``/``__next__`` serve everyone else.

cdef object _thrown(object typ, object val, object tb):
    """The exception ``coroutine.throw(typ, val, tb)`` raises, normalised as generators do."""
    if isinstance(typ, BaseException):
        exc = typ
    elif isinstance(val, BaseException):
        exc = val
    elif val is None:
        exc = typ()
    elif type(val) is tuple:
        exc = typ(*val)
    else:
        exc = typ(val)
    return exc.with_traceback(tb) if tb is not None else exc


cdef extern from "Python.h":
    """
    #define KINCIR_SET_AM_SEND(type, fn) \
        (((PyTypeObject *)(type))->tp_as_async->am_send = (sendfunc)(fn))
    """
    enum:
        PYGEN_RETURN
        PYGEN_NEXT
    void KINCIR_SET_AM_SEND(object type, void* fn)


cdef extern from *:
    """
    /* What CPython says of a coroutine finalized before it started, so that a forgotten
       ``await`` reads the same on both engines; the pending exception, if any, is kept. */
    static void kincir_warn_unawaited(const char *qualname) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "coroutine '%s' was never awaited", qualname) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        PyErr_Restore(type, value, traceback);
    }
    """
    void kincir_warn_unawaited(const char* qualname) noexcept


@cython.final
@cython.freelist(16)
cdef class PublishOp:
    """``await publisher.publish(...)``: publishes when first sent to."""

    cdef PublisherCore publisher
    cdef object topic
    cdef object messages      # None: one message, ``send``'s payload and metadata
    cdef object payload
    cdef object metadata
    cdef TopicLog blocked     # the full topic waited on under the block policy
    cdef AsyncWaiter waiter
    cdef bint started         # sent to at least once: a never-started op warns when freed
    cdef bint done

    def __cinit__(self):
        KINCIR_LIVE(LIVE_PUBLISH_OPS, 1)

    cdef void _stop_waiting(self) noexcept:
        cdef AsyncWaiter waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                self.blocked.remove_room_waiter(waiter)
            except BaseException:
                pass

    cdef object _step(self):
        """None once published (``done`` set), or a future to wait on for room."""
        cdef object loop, future
        if self.done:
            raise RuntimeError("cannot reuse an already awaited publish")
        self.started = True
        try:
            self._stop_waiting()
            while True:
                self.blocked = self.publisher._offer(
                    self.topic, self.messages, self.payload, self.metadata, self.blocked
                )
                if self.blocked is None:
                    break
                loop = _get_running_loop()
                future = loop.create_future()
                self.waiter = AsyncWaiter(loop, future)
                if self.blocked.wait_room(self.waiter, self.count()):
                    future._asyncio_future_blocking = True
                    return future
                self.waiter = None
        except BaseException:
            self._finish()
            raise
        self._finish()
        return None

    cdef Py_ssize_t count(self):
        """The messages this op publishes."""
        return 1 if self.messages is None else len(self.messages)

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        value = self._step()
        if self.done:
            raise StopIteration
        return value

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise _thrown(typ, val, tb)

    cdef void _finish(self) noexcept:
        # a cdef method: _step runs it once per publish, where a Python-level call of close()
        # would cost more than the publish itself
        self.done = True
        self._stop_waiting()
        self.topic = self.messages = self.payload = self.metadata = None

    def close(self):
        self._finish()

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_PUBLISH_OPS, -1)
        if not self.started and not self.done:
            kincir_warn_unawaited(
                "PublisherCore.publish" if self.messages is not None else "PublisherCore.send"
            )
        if self.waiter is not None and self.blocked is not None:
            self._stop_waiting()


cdef int _publish_am_send(PyObject* op, PyObject* arg, PyObject** result) except -1:
    cdef object value = (<PublishOp>op)._step()
    Py_INCREF(value)
    result[0] = <PyObject*>value
    return PYGEN_RETURN if (<PublishOp>op).done else PYGEN_NEXT


@cython.final
@cython.freelist(16)
cdef class ReceiveOp:
    """``await subscriber.receive()``: takes the next message when sent to, yielding a future
    to the event loop while none is ready."""

    cdef SubscriberKernel subscriber
    cdef AsyncWaiter waiter
    cdef tuple cursors
    cdef bint started         # sent to at least once: a never-started op warns when freed
    cdef bint done

    def __cinit__(self):
        KINCIR_LIVE(LIVE_RECEIVE_OPS, 1)

    cdef void _stop_waiting(self) noexcept:
        cdef AsyncWaiter waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                self.subscriber._unregister(waiter, self.cursors)
            except BaseException:
                pass
            self.cursors = None

    cdef object _step(self):
        """The message (and ``done`` set), or a future to wait on."""
        cdef Message got
        cdef object loop, future
        if self.done:
            raise RuntimeError("cannot reuse an already awaited receive")
        self.started = True
        try:
            # first step, or woken: taken before unregistering, as a group member hands the
            # wake on when it leaves the line
            got = self.subscriber._take_one()
            self._stop_waiting()
            if got is None:
                loop = _get_running_loop()
                future = loop.create_future()
                self.waiter = AsyncWaiter(loop, future)
                self.cursors = self.subscriber._register(self.waiter)
                got = self.subscriber._take_one()  # a publish may have come before we registered
                if got is None:
                    future._asyncio_future_blocking = True
                    return future
                self._stop_waiting()
        except BaseException:
            self.done = True
            self._stop_waiting()
            raise
        self.done = True
        return got

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        value = self._step()
        if self.done:
            raise StopIteration(value)
        return value

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise _thrown(typ, val, tb)

    def close(self):
        self.done = True
        self._stop_waiting()

    def __dealloc__(self):
        KINCIR_LIVE(LIVE_RECEIVE_OPS, -1)
        if not self.started and not self.done:
            kincir_warn_unawaited("SubscriberCore.receive")
        if self.waiter is not None and self.subscriber is not None:
            self._stop_waiting()


cdef int _receive_am_send(PyObject* op, PyObject* arg, PyObject** result) except -1:
    cdef object value = (<ReceiveOp>op)._step()
    Py_INCREF(value)
    result[0] = <PyObject*>value
    return PYGEN_RETURN if (<ReceiveOp>op).done else PYGEN_NEXT


KINCIR_SET_AM_SEND(PublishOp, <void*>_publish_am_send)
KINCIR_SET_AM_SEND(ReceiveOp, <void*>_receive_am_send)

from collections.abc import Coroutine as _Coroutine

_Coroutine.register(PublishOp)
_Coroutine.register(ReceiveOp)
