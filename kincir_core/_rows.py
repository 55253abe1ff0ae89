"""The rows the engine hands to the Python layer, by field name: shared by both engines.

Snapshots are read by ``kincir.memory.health`` (``TopicInfo``, ``BrokerHealth``,
``StatsSnapshot``, metrics) and are not on the hot path: a NamedTuple costs a little more to build
than a bare tuple and reads by name (``row.queued``, never ``row[1]``).
"""

from __future__ import annotations

from typing import NamedTuple

from ._codes import BrokerState

__all__ = ["BrokerSnapshot", "CursorCounts", "RetiredCounts", "TopicRow"]


class TopicRow(NamedTuple):
    """One consistent read of a topic's gauges and counters (``TopicLog.snapshot``)."""

    #: The topic's name.
    name: str
    #: Messages not yet read by the reader furthest behind (in-flight ones are ``in_flight``).
    queued: int
    #: Subscribers attached to the topic.
    subscribers: int
    #: Messages written to the log since the topic was created.
    published: int
    #: Deliveries (an acknowledging reader's once settled as consumed).
    delivered: int
    #: (reader, message) pairs that expired before they were read.
    expired: int
    #: Messages dropped (on arrival, by a drop policy, clear or leave).
    dropped: int
    #: Publishes refused for want of room.
    queue_full: int
    #: Unix time (seconds) of the topic's creation.
    created_at: float
    #: Unix time (seconds) of the last publish, subscribe, unsubscribe, pull or clear.
    last_activity: float
    #: The sequence number the next published message gets (the log's head).
    next_sequence: int
    #: Estimated bytes the held messages and the allocated ring occupy.
    held_bytes: int
    #: Seconds since ``last_activity`` (never negative).
    idle: float
    #: (reader, message) pairs lost to the drop_oldest policy.
    lagged: int
    #: Redeliveries by acknowledgement.
    redelivered: int
    #: Messages sent to a dead-letter topic.
    dead_lettered: int
    #: Messages delivered to acknowledging readers and not settled yet.
    in_flight: int
    #: The overflow policy's name (one of ``OVERFLOW_POLICIES``).
    overflow: str
    #: The topic's capacity (``max_queue_size``); None: unbounded.
    capacity: int | None


class RetiredCounts(NamedTuple):
    """The counters of topics that no longer exist (deleted, cleaned up or shut down), kept by
    the broker so its totals never go back."""

    published: int
    delivered: int
    expired: int
    dropped: int
    queue_full: int
    lagged: int
    redelivered: int
    dead_lettered: int


class BrokerSnapshot(NamedTuple):
    """One read of the whole broker for health, stats and metrics (``BrokerCore._snapshot``)."""

    #: The broker's life-cycle state.
    state: BrokerState
    #: Seconds since the broker was created (engine clock).
    uptime: float
    #: The counters of topics gone.
    retired: RetiredCounts
    #: One row per existing topic.
    topics: list[TopicRow]


class CursorCounts(NamedTuple):
    """One reader's own counters (``Cursor.counts``)."""

    delivered: int
    expired: int
    dropped: int
    lagged: int
