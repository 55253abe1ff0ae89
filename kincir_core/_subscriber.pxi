# SubscriberKernel: a subscriber's receives and their waits (SubscriberCore, in
# _subscriptions.py, is the rest).
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

cpdef int leave(Cursor cursor) except -1:
    """A subscriber lets go of ``cursor``: a group member leaves, a plain reader detaches."""
    if cursor.group is not None:
        cursor.log.leave(cursor)
    else:
        cursor.log.detach(cursor)
    return 0


cdef class SubscriberKernel:
    """What a subscriber's receives need: its cursors, its lock and its waiting receives.
    Joining and leaving topics is ``SubscriberCore`` in _subscriptions.py, written once above
    this."""

    def __init__(self, broker, group, bint acking):
        self.group = group
        self.broker = broker
        self.acking = acking
        self.cursors = ()
        self._by_topic = {}
        self.waiting = []

    # -- subscriptions --------------------------------------------------------------------------

    def _adopt(self, object topic, Cursor cursor):
        """Record the new subscription ``cursor`` to ``topic``."""
        cdef Cursor displaced = None
        kincir_mutex_lock(&self.lock)
        try:
            current = self._by_topic.get(topic)
            if current is not None and (<Cursor>current).attached:
                displaced = cursor   # a concurrent subscribe won: undo ours
            else:
                self._by_topic[topic] = cursor
        finally:
            kincir_mutex_unlock(&self.lock)
        if displaced is not None:
            leave(displaced)
        self._subscriptions_changed()

    cdef void _refresh(self) noexcept:
        self.cursors = tuple([c for c in self._by_topic.values() if (<Cursor>c).attached])

    def _drop(self, topic):
        """Forget the subscription to ``topic`` (every one: None) and return its cursors for
        the caller to leave; None if not subscribed to ``topic``."""
        cdef list leaving
        kincir_mutex_lock(&self.lock)
        try:
            if topic is None:
                leaving = list(self._by_topic.values())
                self._by_topic.clear()
            else:
                found = self._by_topic.pop(topic, None)
                leaving = None if found is None else [found]
        finally:
            kincir_mutex_unlock(&self.lock)
        return leaving

    def _release_on_gc(self):
        """Leave every topic; called by the finalizer of a subscriber dropped without close().

        The compiled engine never allocates a GC-tracked object or calls Python code while it
        holds a topic or broker lock, so a collection (and this finalizer) cannot run inside
        one; the only lock taken under a collection is a subscriber's own, and a subscriber is
        not finalized while one of its methods runs. Detaching at once is safe.
        """
        cdef object cursor
        try:
            leaving = self._drop(None)
            self._subscriptions_changed()
            for cursor in leaving:
                leave(<Cursor>cursor)
        except Exception:
            pass

    def _wake_receivers(self):
        """Wake this subscriber's waiting receives to look at its subscriptions again."""
        self._subscriptions_changed()

    def _attached_cursors(self):
        """The cursors of the live subscriptions (the acknowledgement layer reads through
        them)."""
        return self.cursors

    def _check_receivable(self):
        """Raise what a receive with nothing ready raises: BrokerShutdown once drained,
        TopicClosed once every topic read has ended, NotSubscribed without a subscription."""
        self._nothing()

    def _wait_ready(self, timeout, ready, take=None):
        """Block until a subscribed topic has something unread, ``ready()`` is true, or the
        subscriptions change; at most ``timeout`` seconds (None: no limit). True if woken.

        With ``take``, returns what ``take()`` returns once woken instead (None after the
        timeout): it runs before the wait ends, so a group member whose wake brought it a
        message does not pass the wake on to the next member first.
        """
        cdef double seconds = _check_timeout_c(timeout)
        cdef SyncWaiter waiter
        cdef tuple cursors
        cdef bint woken = True
        kincir_mutex_lock(&self.lock)
        waiter = self.spare_waiter  # reused, as in _receive_blocking
        self.spare_waiter = None
        kincir_mutex_unlock(&self.lock)
        if waiter is None:
            waiter = SyncWaiter()
        waiter.rearm()
        waiter.want = 1
        cursors = self._register(waiter)
        try:
            if not self._any_pending(cursors) and not ready():
                woken = waiter.wait(-1.0 if seconds < 0 else _monotonic() + seconds)
            if take is None:
                return woken
            return take() if woken else None
        finally:
            self._unregister(waiter, cursors)
            self.spare_waiter = waiter

    async def _wait_ready_async(self, ready, take=None):
        """``_wait_ready`` on the running event loop (bound it with ``asyncio.timeout``):
        returns None, or what ``take()`` returns once woken."""
        cdef object loop = _get_running_loop()
        cdef object future = loop.create_future()
        cdef AsyncWaiter waiter = AsyncWaiter(loop, future)
        cdef tuple cursors = self._register(waiter)
        try:
            if not self._any_pending(cursors) and not ready():
                await future
            return None if take is None else take()
        finally:
            self._unregister(waiter, cursors)

    cdef bint _any_pending(self, tuple cursors) except -1:
        cdef object cursor
        for cursor in cursors:
            if (<Cursor>cursor).pending_now():
                return True
        return False

    # -- receiving ------------------------------------------------------------------------------

    cdef object _nothing(self):
        """No message is ready: None while one may come, else raise (SubscriberCore's
        ``_nothing_ready`` decides, off the hot path)."""
        if self.broker._state == RUNNING:
            for cursor in self.cursors:
                if (<Cursor>cursor).attached and (<Cursor>cursor).log.accepting:
                    return None
        self._nothing_ready()
        return None

    cdef inline Message _take_one(self):
        cdef tuple cursors = self.cursors
        cdef Py_ssize_t count = len(cursors)
        cdef Cursor cursor
        cdef Message got
        if count == 1:  # the common case, inlined into the callers
            cursor = <Cursor>cursors[0]
            got = cursor.log.take_one(cursor)
            if got is not None:
                self.received += 1
                return got
        return self._take_round_robin(cursors, count)

    cdef Message _take_round_robin(self, tuple cursors, Py_ssize_t count):
        """Take from several topics in turn (one topic was tried by _take_one already)."""
        cdef Py_ssize_t i, start
        cdef Cursor cursor
        cdef Message got
        if count > 1:
            start = self.next_index
            self.next_index = (start + 1) % count
            for i in range(count):
                cursor = <Cursor>cursors[(start + i) % count]
                got = cursor.log.take_one(cursor)
                if got is not None:
                    self.received += 1
                    return got
        self._nothing()
        return None

    cdef list _take_many(self, Py_ssize_t limit):
        cdef tuple cursors = self.cursors
        cdef Py_ssize_t i, start, count = len(cursors)
        cdef Cursor cursor
        cdef list got
        if count == 1:
            cursor = <Cursor>cursors[0]
            got = cursor.log.take_many(cursor, limit)
            if got:
                self.received += len(got)
                return got
        elif count:
            start = self.next_index
            self.next_index = (start + 1) % count
            for i in range(count):
                cursor = <Cursor>cursors[(start + i) % count]
                got = cursor.log.take_many(cursor, limit)
                if got:
                    self.received += len(got)
                    return got
        self._nothing()
        return []

    def _received_count(self):
        """Messages this subscriber's receives handed to the caller."""
        return self.received

    def try_receive(self):
        """The next message if one is ready, else None."""
        return self._take_one()

    def try_receive_batch(self, max_messages):
        """Up to ``max_messages`` ready messages (possibly none; none at once for 0)."""
        cdef Py_ssize_t limit = _check_batch_size(max_messages, "max_messages")
        return self._take_many(limit) if limit else []

    cdef tuple _register(self, Waiter waiter):
        """Wait on every subscribed topic; returns the cursors to unregister from."""
        cdef tuple cursors = self.cursors
        if self.waiting_one is None:
            self.waiting_one = waiter
        else:
            self.waiting.append(waiter)
        if self._patterned:  # may have no topic to wake it at shutdown
            self.broker.add_shutdown_waiter(waiter)
        for cursor in cursors:
            _add_waiter((<Cursor>cursor).log, waiter, <Cursor>cursor)
        return cursors

    cdef int _unregister(self, Waiter waiter, tuple cursors) except -1:
        cdef Py_ssize_t i
        cdef list waiting = self.waiting
        for cursor in cursors:
            _remove_waiter((<Cursor>cursor).log, waiter, <Cursor>cursor)
        if self.broker.shutdown_waiters:
            self.broker.remove_shutdown_waiter(waiter)
        if self.waiting_one is waiter:
            self.waiting_one = None
            return 0
        # a scan, not list.remove: that method call costs more than the rest of the unregister
        for i in range(len(waiting) - 1, -1, -1):
            if waiting[i] is waiter:
                del waiting[i]
                break
        return 0

    cdef void _subscriptions_changed(self) noexcept:
        """Wake this subscriber's waiting receives so they wait on the new set of topics."""
        cdef Waiter one
        self._refresh()
        one = self.waiting_one
        if one is not None:
            one.wake()
        _wake_all(list(self.waiting))

    cdef object _receive_blocking(self, Py_ssize_t limit, object timeout):
        """Wait for messages: with ``limit`` 0, the next one, which the caller just failed to
        take (nothing is tried before registering, and no list is made); else a list of up to
        ``limit``."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef double deadline = -1.0
        cdef object got
        cdef SyncWaiter waiter
        cdef tuple cursors
        cdef int woken
        if limit:
            got = self._take_many(limit)
            if got:
                return got
        if seconds >= 0:
            deadline = _monotonic() + seconds
        # reuse the subscriber's waiter: allocating an OS lock per wait costs more than the wait
        kincir_mutex_lock(&self.lock)
        waiter = self.spare_waiter
        self.spare_waiter = None
        kincir_mutex_unlock(&self.lock)
        if waiter is None:
            waiter = SyncWaiter()
        try:
            while True:
                waiter.rearm()
                waiter.want = limit if limit else 1
                cursors = self._register(waiter)
                try:
                    got = self._take_one() if limit == 0 else self._take_many(limit) or None
                    if got is not None:
                        return got
                    woken = waiter.wait(deadline)
                    # before unregistering: a member hands on after
                    got = self._take_one() if limit == 0 else self._take_many(limit) or None
                    if got is not None:
                        return got
                finally:
                    self._unregister(waiter, cursors)
                if not woken:
                    raise TimeoutError(f"no message arrived within {seconds} seconds")
        finally:
            self.spare_waiter = waiter

    def receive(self, timeout=None):
        """Wait for the next message (TimeoutError after ``timeout`` seconds).

        Returns a coroutine (as asyncio sees it) that takes the message when awaited, so a
        receive that is never awaited, or cancelled, consumes nothing.
        """
        cdef ReceiveOp op
        if timeout is not None:
            return self._receive_within(timeout)
        op = ReceiveOp.__new__(ReceiveOp)
        op.subscriber = self
        return op

    async def _receive_within(self, timeout):
        cdef double seconds = _check_timeout_c(timeout)  # bad input is refused before any take
        cdef Message got = self._take_one()
        if got is not None:
            return got
        async with _asyncio_timeout(seconds):
            return await self._wait_async(0)

    async def _wait_async(self, Py_ssize_t limit):
        """Wait on the running loop until a message is ready; return it (``limit`` 0) or a
        batch of up to ``limit``."""
        cdef object loop = _get_running_loop()
        cdef object future
        cdef AsyncWaiter waiter
        cdef tuple cursors
        cdef object got
        while True:
            future = loop.create_future()
            waiter = AsyncWaiter(loop, future)
            waiter.want = limit if limit else 1
            cursors = self._register(waiter)
            try:
                got = self._take_one() if limit == 0 else self._take_many(limit)
                if got:
                    return got
                await future
                # before unregistering: a group member hands the wake on after taking
                got = self._take_one() if limit == 0 else self._take_many(limit)
                if got:
                    return got
            finally:
                self._unregister(waiter, cursors)

    def receive_sync(self, timeout=None):
        """Block the calling thread until a message arrives (TimeoutError after ``timeout``)."""
        if timeout is not None:
            _check_timeout_c(timeout)  # bad input is refused before anything is taken
        cdef Message got = self._take_one()
        if got is not None:
            return got
        return self._receive_blocking(0, timeout)

    def __iter__(self):
        return self

    def __next__(self):
        """``for msg in subscriber``: the next message, waiting for it; the iteration ends when
        the broker shuts down, the subscriber is closed, or every topic it reads was closed for
        writing and is drained. (Here rather than in the Python layer: a Python ``__next__``
        cost as much as the receive it wraps.)"""
        cdef Message got
        try:
            if self.acking:  # the ack layer's receive_sync settles what it hands out
                return self.receive_sync()
            got = self._take_one()
            if got is not None:
                return got
            return self._receive_blocking(0, None)
        except (BrokerShutdown, TopicClosed):
            raise StopIteration
        except NotSubscribed:
            if self._closed:
                raise StopIteration
            raise

    def receive_batch_sync(self, max_messages, timeout=None):
        """Block until at least one message is ready, then return up to ``max_messages``
        (0: an empty batch at once)."""
        cdef Py_ssize_t limit = _check_batch_size(max_messages, "max_messages")
        if not limit:
            _check_timeout_c(timeout)
            return []
        return self._receive_blocking(limit, timeout)
