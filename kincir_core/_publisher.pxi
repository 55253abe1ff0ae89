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

    def publish_sync(self, topic, messages, timeout=None):
        """Publish a batch from a thread (same rules as ``publish``); under the ``block``
        policy waits for room, up to ``timeout`` seconds, then raises QueueFull."""
        cdef double seconds = _check_timeout_c(timeout)
        cdef object blocked = self._publish(topic, messages)
        if blocked is not None:
            self._publish_waiting(topic, messages,
                                  -1.0 if seconds < 0 else _monotonic() + seconds)

    cdef int _publish_waiting(self, object topic, object messages, double deadline) except -1:
        """Wait for room and retry until the batch is published or ``deadline`` passes."""
        cdef SyncWaiter waiter = SyncWaiter()
        cdef object blocked = None
        cdef int woken
        while True:
            blocked = self._publish(topic, messages, blocked)
            if blocked is None:
                return 0
            waiter.rearm()
            if (<TopicLog>blocked).wait_room(waiter, len(messages)):
                try:
                    woken = waiter.wait(deadline)
                finally:
                    (<TopicLog>blocked).remove_room_waiter(waiter)
                if not woken:
                    self.refused += len(messages)
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
            return self._publish_within(topic, messages, timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        return op

    async def _publish_within(self, topic, messages, timeout):
        cdef double seconds = _check_timeout_c(timeout)
        cdef PublishOp op = PublishOp.__new__(PublishOp)
        op.publisher = self
        op.topic = topic
        op.messages = messages
        try:
            async with _asyncio_timeout(seconds):
                await op
        except TimeoutError:
            if op.blocked is None:
                raise
            self.refused += len(messages)
            _refuse_full(op.blocked)

    cdef object _publish(self, object topic, object messages, TopicLog target=None):
        """Publish, or return the topic's log when it is full under the block policy (nothing
        written: the caller waits for room and calls again with it as ``target``, so a topic
        deleted meanwhile raises TopicNotFound); None once published."""
        cdef BrokerKernel broker = self.broker
        cdef object log = target
        cdef Slot one
        cdef Slot* batch
        cdef Py_ssize_t i, count, filled = 0
        cdef int64_t now_ms
        cdef int outcome = -1
        if broker._state != RUNNING:
            if type(messages) is list or type(messages) is tuple:
                self.refused += len(messages)
            raise BrokerShutdown()
        if log is None:
            log = broker._topics.get(topic) if type(topic) is str else None
            if log is None:
                validate_topic_name(topic)
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
                _fill_slot(&batch[i], messages[i])
                batch[i].enqueued_at = now_ms
                filled += 1
            if log is None:
                log = broker._topic(topic)
        except BaseException:
            if filled == count:  # the broker refused it (a bad item is not counted)
                self.refused += count
            _clear_slots(batch, filled)
            if batch != &one:
                free(batch)
            raise
        try:
            # takes over the references, whatever happens
            outcome = (<TopicLog>log).append(batch, count)
        finally:
            if batch != &one:
                free(batch)
            if outcome < 0:  # it raised: the whole batch is refused
                self.refused += count
        if outcome:
            return log
        self.published += count
        return None


cdef int _refuse_full(TopicLog log) except -1:
    log.note_queue_full()
    raise QueueFull(log.name, None if log.capacity < 0 else log.capacity)
