# PublisherCore: publish_nowait, publish_sync and publish, and their waits for room.
# Included by _broker.pyx (one module: its cdef classes and functions see each other).

cdef class PublisherCore:
    """The engine behind ``InMemoryPublisher``."""

    def __init__(self, broker):
        if not isinstance(broker, BrokerKernel):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        self.broker = broker

    def publish_nowait(self, topic, messages):
        """Publish a batch now; never waits. Raises QueueFull when the topic has no room."""
        cdef object blocked = self._publish(topic, messages)
        if blocked is not None:
            self.refused += len(messages)
            _refuse_full(<TopicLog>blocked)

    def send_nowait(self, topic, payload, *, metadata=None):
        """Publish one message now, built from ``payload`` and ``metadata``; never waits.
        Raises QueueFull when the topic has no room."""
        cdef object blocked = self._send(topic, payload, metadata)
        if blocked is not None:
            self.refused += 1
            _refuse_full(<TopicLog>blocked)

    def publish_sync(self, topic, messages, timeout=None):
        """Publish a batch from a thread (same rules as ``publish``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef object blocked = self._publish(topic, messages)
        if blocked is not None:
            self._publish_waiting(topic, messages, None, None,
                                  -1.0 if seconds < 0 else _monotonic() + seconds)

    def send_sync(self, topic, payload, *, metadata=None, timeout=None):
        """Publish one message from a thread (same rules as ``send``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef object blocked = self._send(topic, payload, metadata)
        if blocked is not None:
            self._publish_waiting(topic, None, payload, metadata,
                                  -1.0 if seconds < 0 else _monotonic() + seconds)

    cdef int _publish_waiting(self, object topic, object messages, object payload,
                              object metadata, double deadline) except -1:
        """Wait for room and retry until the batch (``messages``; None: the one message of
        ``payload`` and ``metadata``) is published or ``deadline`` passes."""
        cdef SyncWaiter waiter = SyncWaiter()
        cdef object blocked = None
        cdef Py_ssize_t count = 1 if messages is None else len(messages)
        cdef int woken
        while True:
            blocked = self._offer(topic, messages, payload, metadata, blocked)
            if blocked is None:
                return 0
            waiter.rearm()
            if (<TopicLog>blocked).wait_room(waiter, count):
                try:
                    woken = waiter.wait(deadline)
                finally:
                    (<TopicLog>blocked).remove_room_waiter(waiter)
                if not woken:
                    self.refused += count
                    _refuse_full(<TopicLog>blocked)

    def _own_counts(self):
        """(published, refused): the messages of this publisher's accepted and refused
        publishes."""
        return self.published, self.refused

    def publish(self, topic, messages, timeout=None):
        """Publish a batch: all of it, with consecutive sequence numbers, or none of it.

        Returns a coroutine (as asyncio sees it) that publishes when awaited. Under the
        ``block`` overflow policy it waits for room, up to ``timeout`` seconds (then
        QueueFull); other policies never wait.
        """
        if timeout is not None:
            return self._publish_within(topic, messages, None, None, timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        return op

    def send(self, topic, payload, *, metadata=None, timeout=None):
        """Publish one message, built from ``payload`` and ``metadata``: ``publish`` of a
        batch of one without the list and the Message (the engine builds the message a
        reader receives, once, when the first reader takes it).

        Returns a coroutine (as asyncio sees it) that publishes when awaited; waits for room
        as ``publish`` does.
        """
        if timeout is not None:
            return self._publish_within(topic, None, payload, metadata, timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.payload = payload
        op.metadata = metadata
        return op

    async def _publish_within(self, topic, messages, payload, metadata, timeout):
        cdef double seconds = _check_timeout_c(timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        op.payload = payload
        op.metadata = metadata
        try:
            async with _asyncio_timeout(seconds):
                await op
        except TimeoutError:
            if op.blocked is None:
                raise
            self.refused += 1 if messages is None else len(messages)
            _refuse_full(op.blocked)

    cdef object _offer(self, object topic, object messages, object payload, object metadata,
                       TopicLog target):
        """``_publish`` of ``messages``, or ``_send`` of ``payload`` when it is None."""
        if messages is None:
            return self._send(topic, payload, metadata, target)
        return self._publish(topic, messages, target)

    cdef object _log_of(self, object topic, Py_ssize_t count):
        """The topic's log, None while the topic does not exist (the name checked); raises
        BrokerShutdown, counting the ``count`` messages refused, once the broker stopped."""
        cdef BrokerKernel broker = self.broker
        cdef object log = self.last_log
        if broker._state != RUNNING:
            self.refused += count
            raise BrokerShutdown()
        # a loop publishes to one topic: the same name object finds the log it found last
        # time, without hashing into the topic table, for as long as the topic lives (a
        # deleted log is closed before it leaves the table; append checks again, locked)
        if topic is self.last_name and log is not None and not (<TopicLog>log).closed:
            return log
        log = broker._topics.get(topic) if type(topic) is str else None
        if log is None:
            validate_topic_name(topic)
        else:
            self.last_name = topic
            self.last_log = log
        return log

    cdef object _append(self, TopicLog log, Slot* batch, Py_ssize_t count):
        """Append filled slots (``TopicLog.append`` takes over their references, whatever
        happens) and count them: the log when it is full under the block policy, else None."""
        cdef int outcome = -1
        try:
            outcome = log.append(batch, count)
        finally:
            if outcome < 0:  # it raised: the whole batch is refused
                self.refused += count
        if outcome:
            return log
        self.published += count
        return None

    cdef object _send(self, object topic, object payload, object metadata,
                      TopicLog target=None):
        """``_publish`` of one message, written into its slot from its parts: no list, no
        Message."""
        cdef object log = target
        cdef Slot one
        # checked first, as ``Message(payload, metadata)`` would be: a bad mapping is the
        # caller's error, not a refusal
        cdef dict meta = _NO_METADATA if metadata is None else copy_metadata(metadata)
        if log is None:
            log = self._log_of(topic, 1)
            if log is None:
                try:
                    log = self.broker._topic(topic)
                except BaseException:
                    self.refused += 1  # the broker refused it
                    raise
        elif self.broker._state != RUNNING:
            self.refused += 1
            raise BrokerShutdown()
        payload = to_payload(payload)
        Py_INCREF(payload)
        Py_INCREF(meta)
        one.payload = <PyObject*>payload
        one.meta = <PyObject*>meta
        one.message = NULL
        one.id_hi = one.id_lo = 0  # drawn when first read
        one.enqueued_at = _now_ms()
        return self._append(<TopicLog>log, &one, 1)

    cdef object _publish(self, object topic, object messages, TopicLog target=None):
        """Publish, or return the topic's log when it is full under the block policy (nothing
        written: the caller waits for room and calls again with it as ``target``, so a topic
        deleted meanwhile raises TopicNotFound); None once published."""
        cdef object log = target
        cdef object blocked = None
        cdef Slot one
        cdef Slot* batch
        cdef Py_ssize_t i, count, filled = 0
        cdef bint creating = False
        cdef int64_t now_ms
        if log is None:
            log = self._log_of(
                topic, len(messages) if type(messages) is list or type(messages) is tuple else 0
            )
        elif self.broker._state != RUNNING:
            self.refused += len(messages)
            raise BrokerShutdown()
        # every item is checked before the topic is created or anything is written
        check_batch(messages)
        count = len(messages)
        if count == 0:
            return None
        now_ms = _now_ms()
        if count == 1:  # the common case needs no buffer
            batch = &one
        else:
            batch = <Slot*>malloc(count * sizeof(Slot))
            if batch == NULL:
                raise MemoryError("cannot allocate a publish buffer")
        try:
            for i in range(count):
                # an item's conversion (a bytearray subclass's __bytes__) may run code that
                # changes the list: refused whole, as the twin does
                if i >= Py_SIZE(messages):
                    _batch_changed()
                _fill_slot(&batch[i], <object>PySequence_Fast_GET_ITEM(messages, i))
                batch[i].enqueued_at = now_ms
                filled += 1
            if Py_SIZE(messages) != count:
                _batch_changed()
            if log is None:
                creating = True
                log = self.broker._topic(topic)
        except BaseException:
            if creating:  # the broker refused it (a bad item or batch is not counted)
                self.refused += count
            _clear_slots(batch, filled)
            if batch != &one:
                free(batch)
            raise
        try:
            blocked = self._append(<TopicLog>log, batch, count)
        finally:
            if batch != &one:
                free(batch)
        return blocked


cdef int _batch_changed() except -1:
    raise RuntimeError("the batch changed size while it was being published")


cdef int _refuse_full(TopicLog log) except -1:
    log.note_queue_full()
    raise QueueFull(log.name, None if log.capacity < 0 else log.capacity)
