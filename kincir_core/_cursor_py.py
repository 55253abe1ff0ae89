"""The twin's cursors: one reader's position in a topic log (part of the pure-Python kernel;
see ``_broker_py.py``; the compiled engine's ``_cursor.pxi``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._rows import CursorCounts

if TYPE_CHECKING:
    from ._message_py import Message
    from ._topic_log_py import TopicLog


class Cursor:
    """One reader's position in a topic log: the sequence number it reads next.

    An acknowledging reader also has a ``floor``, its oldest unsettled sequence: the log holds
    slots from there, so in-flight messages keep their slot; ``unsettled`` counts its messages
    in flight, which (not the span from the floor) count against the topic's capacity.
    Before such a reader detaches, the acknowledgement layer tells it (``keep``) which of its
    delivered messages are still unsettled: if it is the last reader, the log holds only those
    of the span [floor, pos) for the next one, and drops the settled ones (tombstones).
    """

    __slots__ = (
        "ack",
        "acking",
        "attached",
        "called",
        "covered",
        "delivered",
        "dropped",
        "expired",
        "floor",
        "group",
        "kept",
        "kept_end",
        "lagged",
        "log",
        "members",
        "pos",
        "unsettled",
        "waiters",
    )

    def __init__(
        self, log: TopicLog, members: int, group: str | None = None, acking: bool = False
    ) -> None:
        self.log = log
        # a group's waiting members, in line (publishes wake them in turn: TopicLog.add_waiter)
        self.waiters: list[Any] | None = [] if group is not None else None
        # the members the line woke that have not come back, in order, and the messages they
        # will take (their wants, summed)
        self.called: list[Any] = []
        self.covered = 0
        self.pos = 0
        self.floor = 0
        self.members = members
        self.group = group
        self.acking = acking
        self.ack: Any = None
        self.delivered = 0
        self.expired = 0
        self.dropped = 0
        self.lagged = 0
        self.unsettled = 0
        self.attached = False
        # set by ``keep``: the sequences still unsettled (ascending), below ``kept_end``
        self.kept: list[int] | None = None
        self.kept_end = 0

    def tracked(self) -> int:
        """The position that holds this reader's slots."""
        return self.floor if self.acking else self.pos

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages for this reader (the acknowledgement layer's read)."""
        return self.log.take(self, limit)

    def settle(self, floor: int, count: int, consumed: int = 0) -> int:
        """An acknowledging reader settled ``count`` messages, ``consumed`` of them acked:
        ``floor`` is its oldest unsettled sequence whose slot the log holds (0: none is left).
        Returns the floor the log holds from (it may have dropped slots meanwhile), or -1 when
        the topic was deleted: nothing is counted (the caller counts on the broker's totals)."""
        return self.log.settle(self, floor, count, consumed)

    def keep(self, unsettled: list[int]) -> None:
        """This acknowledging reader is about to detach: ``unsettled`` (ascending) are the
        sequences it delivered and has not settled. If it is the last reader to leave, the log
        keeps only those of its delivered messages for the next reader."""
        log = self.log
        with log.lock:
            if self.attached:
                self.kept = unsettled
                self.kept_end = self.pos

    def counts(self) -> CursorCounts:
        """This reader's own counters (a CursorCounts)."""
        return CursorCounts(self.delivered, self.expired, self.dropped, self.lagged)

    def floor_now(self) -> int:
        """The oldest sequence the log still holds for this reader (its settled floor)."""
        with self.log.lock:
            return self.floor if self.acking else self.pos

    def pending(self) -> int:
        """Messages this reader has not read yet (0 once detached)."""
        if not self.attached:
            return 0
        log = self.log
        with log.lock:
            return log.head - self.pos - log._holes_in(self.pos, log.head) if self.attached else 0
