"""The engine's status codes, by name: shared by both engines and the Python layer above them.

The compiled engine works with C enums of the same names and values, declared in
``_broker.pxd`` (``broker_state``, ``append_outcome``, ``attach_outcome``); ``_broker.pyx`` checks
when it loads that they match these, so a code changed on one side only fails at import. Python
code compares against these members by name (``state == BrokerState.STOPPED``), never against a
bare number.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["AppendOutcome", "AttachOutcome", "BrokerState"]


class BrokerState(IntEnum):
    """The broker's life cycle (``BrokerCore`` state, first field of its snapshot)."""

    #: Publishing, subscribing and receiving work.
    RUNNING = 0
    #: ``shutdown`` began: no new publishes or subscriptions; receives drain what is held (and
    #: dead letters still reach their topics).
    DRAINING = 1
    #: Shut down: nothing is accepted, receives have ended.
    STOPPED = 2


class AppendOutcome(IntEnum):
    """What became of a batch appended to a topic log (``TopicLog.append`` in the compiled
    engine; the twin raises or returns at the same points)."""

    #: Written (under ``drop_oldest`` / ``drop_newest``, maybe only in part).
    WRITTEN = 0
    #: Dropped on arrival: no reader and persistence off, or ``drop_newest`` kept none of it.
    DROPPED = 1
    #: No room under the ``error`` policy: ``QueueFull``.
    QUEUE_FULL = 2
    #: The topic was deleted: ``TopicNotFound``.
    TOPIC_DELETED = 3
    #: The broker is shutting down: ``BrokerShutdown``.
    SHUTTING_DOWN = 4
    #: The ring could not grow: ``MemoryError``.
    NO_MEMORY = 5
    #: No room under the ``block`` policy: the publisher waits for room and retries.
    MUST_WAIT = 6
    #: The topic was closed for writing (``close_topic``): ``TopicClosed``.
    TOPIC_CLOSED = 7


class AttachOutcome(IntEnum):
    """What ``TopicLog.attach`` / ``TopicLog.join`` did with a reader (nothing changed unless
    ``ATTACHED``)."""

    #: The reader is attached (or the group has one more member).
    ATTACHED = 0
    #: The topic already has ``max_subscribers`` subscribers.
    FULL = 1
    #: No memory for the reader's position (compiled engine only; raised as ``MemoryError``).
    NO_MEMORY = 2
    #: The topic (or the group) is gone: the caller looks the topic up again.
    GONE = 3
