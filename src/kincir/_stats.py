"""``PublisherStats`` and ``SubscriberStats``: what one publisher or subscriber counted itself.

Every backend's publishers and subscribers return these from ``stats()`` (the in-memory ones
and the server backends' alike). The counts are the object's own, kept whether or not the
in-memory broker's ``enable_stats`` is on: each costs one integer increment per call. The
broker-wide counters are ``InMemoryBroker.stats()``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["PublisherStats", "SubscriberStats"]


@dataclasses.dataclass(frozen=True, slots=True)
class PublisherStats:
    """One publisher's counts since it was created, at the moment they were read."""

    #: Messages of the publishes the broker accepted. A topic may still drop some of them on
    #: arrival (no reader and persistence off, or a full topic under ``drop_newest``): its
    #: ``dropped`` counter in ``InMemoryBroker.stats()`` counts those.
    published: int = 0
    #: Messages of the publishes that raised (QueueFull, TopicNotFound, BrokerShutdown,
    #: MaxTopicsReached, a server error ...): a refused batch counts all its messages. A
    #: publish refused for a bad argument (TypeError, InvalidTopicName) or cancelled is not
    #: counted.
    refused: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriberStats:
    """One subscriber's counts since it was created, at the moment they were read.

    A plain subscriber reports 0 for the acknowledgement counts (``acked`` to
    ``dead_lettered``); an acknowledging subscriber's plain receives ack each message they hand
    out, so they count in ``acked`` too.
    """

    #: Messages handed to this subscriber's caller (receives, batches, iteration).
    received: int = 0
    #: Messages this subscriber acked.
    acked: int = 0
    #: Messages this subscriber nacked (redelivered, rejected or dead-lettered as a result).
    nacked: int = 0
    #: Deliveries to this subscriber that were redeliveries (``delivery_count`` > 1).
    redelivered: int = 0
    #: Messages this subscriber's nacks sent to the dead-letter topic (rejected, or past
    #: ``max_deliveries``); those dead-lettered after a missed ack deadline are counted by the
    #: broker only.
    dead_lettered: int = 0
    #: Messages its live subscriptions lost to the ``drop_oldest`` policy while it was behind
    #: (in memory; a consumer group's count is shared by its members). 0 on the server
    #: backends.
    lagged: int = 0


for _cls in (PublisherStats, SubscriberStats):
    _cls.__module__ = "kincir"
