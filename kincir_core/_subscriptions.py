"""A subscriber's subscriptions above the kernel: subscribe, unsubscribe, close and queries.

Written once for both engines. ``SubscriberCore`` extends the kernel's ``SubscriberKernel``,
which keeps the cursors the receives read, the subscriber's lock and its waiting receives;
joining and leaving topics is plain Python here.
"""

from __future__ import annotations

from ._codes import AttachOutcome, BrokerState
from ._engine import kernel
from ._errors import BrokerShutdown, MaxSubscribersReached, NotSubscribed, TopicClosed
from ._validate import validate_group_name, validate_topic_name

Cursor = kernel.Cursor
TopicLog = kernel.TopicLog
leave = kernel.leave


class SubscriberCore(kernel.SubscriberKernel):
    """The engine behind ``InMemorySubscriber``: one cursor per subscribed topic."""

    __slots__ = ()

    def __init__(
        self, broker: kernel.BrokerKernel, group: str | None = None, acking: bool = False
    ) -> None:
        if not isinstance(broker, kernel.BrokerKernel):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        super().__init__(broker, validate_group_name(group), acking)

    def _subscribed(self, topic: str) -> bool:
        current = self._by_topic.get(topic)
        return current is not None and current.attached

    def _subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` (created if needed; joins the group with ``group``):
        NotSubscribed once closed, BrokerShutdown, MaxSubscribersReached, InvalidConfig."""
        broker = self.broker
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        if broker._state != BrokerState.RUNNING:
            raise BrokerShutdown()
        if self._subscribed(topic):
            return
        if self.group is not None:
            cursor = broker._join_group(validate_topic_name(topic), self.group, self.acking)
        else:
            refused = AttachOutcome.GONE
            while refused == AttachOutcome.GONE:  # the topic was deleted meanwhile: look again
                log = broker._topic(topic)
                cursor = Cursor(log, 1, None, self.acking)
                refused = log.attach(cursor, broker._max_subscribers)
            if refused:
                raise MaxSubscribersReached(topic, broker._max_subscribers)
        self._adopt(topic, cursor)

    def _join_created(self, log: TopicLog) -> None:
        """Subscribe to the topic of ``log`` while the broker creates it (from its
        ``_on_topic_creating`` hook: nothing is published to it yet)."""
        broker = self.broker
        topic = log.name
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        if self._subscribed(topic):
            return
        if self.group is not None:
            cursor = broker._join_group(topic, self.group, self.acking, log)
        else:
            cursor = Cursor(log, 1, None, self.acking)
            if log.attach(cursor, broker._max_subscribers):
                raise MaxSubscribersReached(topic, broker._max_subscribers)
        self._adopt(topic, cursor)

    def _unsubscribe(self, topic: str | None) -> None:
        """Leave ``topic`` (None: every topic); NotSubscribed if not subscribed to it."""
        if topic is not None and type(topic) is not str:
            raise TypeError(f"topic must be str or None, not {type(topic).__name__}")
        leaving = self._drop(topic)
        if leaving is None:
            raise NotSubscribed(f"this subscriber is not subscribed to {topic!r}")
        self._wake_receivers()
        for cursor in leaving:
            leave(cursor)

    def _close(self) -> None:
        """Leave every topic for good: later subscribes and receives raise NotSubscribed."""
        self._closed = True
        self._unsubscribe(None)

    def _nothing_ready(self) -> None:
        """No message is ready and the kernel cannot tell at once that one may come: return if
        one still may, else raise BrokerShutdown (drained), TopicClosed (every topic read was
        closed for writing and is drained) or NotSubscribed."""
        broker = self.broker
        cursors = [c for c in self._attached_cursors() if c.attached]
        if broker._state == BrokerState.STOPPED:
            raise BrokerShutdown()
        if broker._state == BrokerState.DRAINING:
            if any(self._may_deliver(c) for c in cursors):
                return
            raise BrokerShutdown()
        if cursors:
            ended = [c.log.name for c in cursors if not self._may_deliver(c)]
            if len(ended) < len(cursors):
                return
            # a pattern subscriber reads the topics created later too, but its receive ends
            # with the topics it reads now: it would otherwise never end
            raise TopicClosed(ended[0], reading=True)
        if self._patterned:
            return  # a pattern subscriber waits for a topic its patterns match
        if self._closed:
            raise NotSubscribed("this subscriber is closed")
        raise NotSubscribed("subscribe to a topic before receiving")

    def _may_deliver(self, cursor: Cursor) -> bool:
        """Whether ``cursor`` may still deliver: its topic takes publishes, or it has messages
        unread. A topic that refuses publishes (closed for writing, or the broker draining)
        has ended for this reader once nothing can come: an acknowledging reader also waits
        while its cursor holds unsettled messages (one may come back, to any member of its
        group), and a reader of a dead-letter topic while any message is in flight (it may be
        dead-lettered)."""
        broker = self.broker
        return bool(
            cursor.log.accepting
            or cursor.pending()
            or (cursor.acking and cursor.floor_now() < cursor.pos)
            or (cursor.log.name in broker._letter_topics and broker._letters_due())
        )

    def is_subscribed(self) -> bool:
        """True while at least one subscription is live."""
        return any(c.attached for c in self._attached_cursors())

    def subscribed_topics(self) -> list[str]:
        """The topics this subscriber reads, in subscription order."""
        return [c.log.name for c in self._attached_cursors() if c.attached]

    def subscribed_topic(self) -> str | None:
        """The first subscribed topic, or None (the seed's single-topic query)."""
        topics = self.subscribed_topics()
        return topics[0] if topics else None
