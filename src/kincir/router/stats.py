"""A router's counters: ``RouterStats`` (the snapshot users read) and ``_Ledger`` (the live
counts behind it, and how each settlement of a failure counts)."""

from __future__ import annotations

import dataclasses
import threading

from ..memory.ack import AckHandle

__all__ = ["RouterStats"]

_FIELDS = (
    "processed",
    "succeeded",
    "failed",
    "timed_out",
    "acked",
    "nacked",
    "retried",
    "dead_lettered",
    "retries_exhausted",
    "published",
)


@dataclasses.dataclass(frozen=True, slots=True)
class RouterStats:
    """A router's counters at the moment they were read.

    Every count is of input messages (a batch handler's call counts each message of its batch),
    except ``published``, which counts outputs. A failure is a handler that raised (``failed``)
    or ran past ``processing_timeout`` (``timed_out``); each is settled by the ack strategy, and
    a nack then either sends the message back (``retried``) or ends its life: to the dead-letter
    topic (``dead_lettered``), or dropped when no dead-letter topic is configured.
    """

    #: Messages whose handler call ended, returning or raising (timed-out calls excluded).
    processed: int
    #: Messages whose handler returned and whose outputs were published.
    succeeded: int
    #: Messages whose handler raised, or whose outputs could not be published.
    failed: int
    #: Messages whose handler ran past ``processing_timeout`` (its late result is discarded).
    timed_out: int
    #: Messages acked (by the router, or by the handler under MANUAL).
    acked: int
    #: Messages nacked (by the router, or by the handler under MANUAL): retried + dead-lettered +
    #: dropped.
    nacked: int
    #: Nacked messages sent back for redelivery (a delivery left before ``max_deliveries``).
    retried: int
    #: Nacked messages sent to the dead-letter topic: on their last allowed delivery, or
    #: rejected (``delivery.nack(requeue=False)``).
    dead_lettered: int
    #: Nacked messages on their last allowed delivery: dead-lettered, or dropped without a
    #: dead-letter topic.
    retries_exhausted: int
    #: Outputs published to the output topic.
    published: int
    #: Mean handler time per processed message, in seconds (0.0 before the first).
    mean_processing_time: float


class _Ledger:
    """The live counters of one router; every thread and task of the router counts here."""

    __slots__ = ("_busy", "_counts", "_dead_letters", "_lock", "_max_deliveries")

    def __init__(self, max_deliveries: int | None, dead_letter_topic: str | None) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_FIELDS, 0)
        self._busy = 0.0
        self._max_deliveries = max_deliveries
        self._dead_letters = dead_letter_topic is not None

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def handled(self, n: int, ok: bool, elapsed: float, published: int = 0, acked: int = 0) -> None:
        """``n`` messages went through one handler call that returned (``ok``) or raised; its
        ``published`` outputs and the ``acked`` inputs counted with it, under one lock."""
        with self._lock:
            counts = self._counts
            counts["processed"] += n
            counts["succeeded" if ok else "failed"] += n
            counts["published"] += published
            counts["acked"] += acked
            self._busy += elapsed

    def nacked(self, handle: AckHandle, requeue: bool) -> None:
        """``handle`` was nacked: count where the ack layer sent it."""
        limit = self._max_deliveries
        last = limit is not None and handle.delivery_count >= limit
        with self._lock:
            counts = self._counts
            counts["nacked"] += 1
            if last:
                counts["retries_exhausted"] += 1
            if requeue and not last:
                counts["retried"] += 1
            elif self._dead_letters:
                counts["dead_lettered"] += 1

    def snapshot(self) -> RouterStats:
        with self._lock:
            counts = dict(self._counts)
            busy = self._busy
        done = counts["processed"]
        return RouterStats(**counts, mean_processing_time=busy / done if done else 0.0)
