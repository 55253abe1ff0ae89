"""What the demo verifies as messages arrive: each stream's checks."""

from __future__ import annotations

from collections.abc import Sequence

from kincir import Message
from kincir.memory import StatsSnapshot

from .settings import Check

__all__ = ["AuditCheck", "ShippedCheck", "stats_checks"]

#: Problems recorded word for word per stream; the rest are only counted.
_MAX_PROBLEMS = 5


class _Problems:
    def __init__(self) -> None:
        self._problems: list[str] = []

    def _problem(self, text: str) -> None:
        if len(self._problems) < _MAX_PROBLEMS:
            self._problems.append(text)

    def problems(self) -> list[str]:
        """The first few problems seen, word for word."""
        return list(self._problems)


class AuditCheck(_Problems):
    """Verifies the orders topic as a plain subscriber reads it: sequence numbers run 1, 2, 3
    … with no gap or repeat; each producer's indexes run 0, 1, 2 … (its publish order); each
    payload is the very dict kind the producers publish, and the first message of each batch
    carries the ``_sequence`` metadata that ``maintain_order`` adds."""

    def __init__(self, label: str, topic: str, plan: Sequence[int]) -> None:
        super().__init__()
        self.label = label
        self.topic = topic
        self.plan = list(plan)
        #: Messages received.
        self.received = 0
        #: Receive calls that returned messages.
        self.batches = 0
        #: Seconds from the start of the run to the last message received.
        self.last_message_at = 0.0
        self._next_sequence = 1
        self._next_index = [0] * len(self.plan)
        self._sequence_problems = 0
        self._order_problems = 0
        self._payload_problems = 0

    def feed(self, batch: Sequence[Message]) -> None:
        """Check one received batch."""
        self.batches += 1
        first = batch[0]
        if first.topic != self.topic or first.metadata.get("_sequence") != str(first.sequence):
            self._payload_problems += 1
            self._problem(
                f"message {first.sequence} has topic {first.topic!r} and "
                f"_sequence metadata {first.metadata.get('_sequence')!r}"
            )
        expected = self._next_sequence
        next_index = self._next_index
        producers = len(next_index)
        for msg in batch:
            sequence = msg.sequence
            if sequence != expected:
                self._sequence_problems += 1
                self._problem(f"expected sequence {expected}, got {sequence}")
                expected = sequence if sequence is not None else expected
            expected += 1
            order = msg.payload
            if type(order) is not dict or "producer" not in order:
                self._payload_problems += 1
                self._problem(f"sequence {sequence}: payload {order!r} is not an order")
                continue
            producer, index = order["producer"], order["index"]
            if producer >= producers:
                self._order_problems += 1
                self._problem(f"sequence {sequence}: unknown producer {producer}")
            else:
                if index != next_index[producer]:
                    self._order_problems += 1
                    self._problem(
                        f"producer {producer}: expected index {next_index[producer]}, got {index}"
                    )
                next_index[producer] = index + 1
        self._next_sequence = expected
        self.received += len(batch)

    def checks(self, total: int) -> list[Check]:
        """The verdicts for this stream once it has ended."""
        label = self.label
        gapless = (
            self._sequence_problems == 0
            and self.received == total
            and self._next_sequence == total + 1
        )
        complete = self._next_index == self.plan
        return [
            Check(
                f"{label}: every message, sequences gapless",
                gapless,
                f"{self.received:,} of {total:,} received, sequences 1..{self._next_sequence - 1:,}"
                + (
                    f", {self._sequence_problems:,} out of place"
                    if self._sequence_problems
                    else ", in order"
                ),
            ),
            Check(
                f"{label}: per-producer order",
                self._order_problems == 0 and complete,
                f"{len(self.plan)} producers, each in publish order and complete"
                if self._order_problems == 0 and complete
                else f"{self._order_problems:,} out of order; per producer got up to index "
                f"{[i - 1 for i in self._next_index]} of {[n - 1 for n in self.plan]}",
            ),
            Check(
                f"{label}: payloads and metadata",
                self._payload_problems == 0,
                "dict payloads, topic and _sequence metadata as published"
                if self._payload_problems == 0
                else f"{self._payload_problems:,} bad messages",
            ),
        ]


class ShippedCheck(_Problems):
    """Verifies the end of the pipeline: every order but the poisoned one arrives exactly once,
    priced, whatever order the Router's workers finished them in."""

    def __init__(self, label: str, plan: Sequence[int], poisoned: tuple[int, int]) -> None:
        super().__init__()
        self.label = label
        self.plan = list(plan)
        self.poisoned = poisoned
        self.received = 0
        self.last_message_at = 0.0
        self._seen: set[tuple[int, int]] = set()
        self._repeats = 0
        self._price_problems = 0
        self._sequences: set[int] = set()

    def feed(self, msg: Message) -> None:
        """Check one shipped order."""
        self.received += 1
        order = msg.payload
        key = (order["producer"], order["index"])
        if key in self._seen:
            self._repeats += 1
            self._problem(f"order {key} shipped twice")
        self._seen.add(key)
        if order.get("price") != order["qty"] * order["unit_price"]:
            self._price_problems += 1
            self._problem(f"order {key} priced {order.get('price')!r}")
        if msg.sequence is not None:
            self._sequences.add(msg.sequence)

    def checks(self, total: int) -> list[Check]:
        """The verdicts once the stream has ended."""
        expected = total - 1
        missing = expected - len(self._seen - {self.poisoned})
        gapless = self._sequences == set(range(1, self.received + 1))
        return [
            Check(
                f"{self.label}: every order but the poisoned one, once",
                missing == 0 and self._repeats == 0 and self.poisoned not in self._seen,
                f"{self.received:,} of {expected:,} shipped, {self._repeats:,} twice, "
                f"poisoned order {self.poisoned} "
                + ("held back" if self.poisoned not in self._seen else "SHIPPED"),
            ),
            Check(
                f"{self.label}: priced, sequences gapless",
                self._price_problems == 0 and gapless,
                "every order priced by the Router stage, sequences 1..received"
                if self._price_problems == 0 and gapless
                else f"{self._price_problems:,} mispriced; sequences gapless: {gapless}",
            ),
        ]


def stats_checks(
    stats: StatsSnapshot | None, published: int, consumed: int, dead_lettered: int
) -> list[Check]:
    """The broker's own counters against what the stages counted."""
    if stats is None:
        return [Check("broker stats", False, "stats() returned None with enable_stats on")]
    counted = (
        stats.messages_published(),
        stats.messages_consumed(),
        stats.messages_dead_lettered(),
    )
    lost = stats.messages_dropped() + stats.messages_expired() + stats.messages_lagged()
    ok = counted == (published, consumed, dead_lettered) and lost == 0
    return [
        Check(
            "broker stats agree",
            ok,
            f"published {counted[0]:,}, consumed {counted[1]:,}, dead-lettered {counted[2]:,}, "
            f"lost {lost:,}"
            + ("" if ok else f" (expected {published:,}, {consumed:,}, {dead_lettered:,}, 0)"),
        )
    ]
