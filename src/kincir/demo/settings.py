"""The demo's settings and its verdict type."""

from __future__ import annotations

import dataclasses

__all__ = ["Check", "DemoSettings", "Topics"]


@dataclasses.dataclass(frozen=True, slots=True)
class Topics:
    """The topics of the demo pipeline, in the order messages flow through them."""

    #: The producers publish orders here (bounded, ``block`` overflow policy).
    orders: str = "orders"
    #: The Router stage prices each order into this topic.
    priced: str = "orders.priced"
    #: The ack stage forwards every order it could ship here.
    shipped: str = "orders.shipped"
    #: The ack stage's dead-letter topic: the poisoned order ends here.
    dead: str = "orders.dead"


TOPICS = Topics()


@dataclasses.dataclass(frozen=True, slots=True)
class DemoSettings:
    """The shape of one demo run; invalid values raise ``ValueError`` naming the option."""

    #: Producer threads publishing at once.
    producers: int = 4
    #: Orders published in total, split as evenly as possible among the producers.
    messages: int = 50_000
    #: Orders per ``publish_sync`` call.
    batch: int = 100
    #: ``max_queue_size`` of every topic: how far a stage may run ahead of the next one (the
    #: ``block`` policy makes a publisher wait for room beyond it).
    queue_size: int = 2_000
    #: Worker threads of the Router stage.
    workers: int = 2
    #: Most messages a subscriber takes per receive.
    receive_batch: int = 500
    #: Seconds each stage may take to see the end of its input, and shutdown to drain.
    drain_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("producers", "messages", "batch", "queue_size", "workers", "receive_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.batch > self.queue_size:
            raise ValueError(
                f"--batch ({self.batch}) must not exceed --queue-size ({self.queue_size}): "
                "a batch larger than the topic could never be published"
            )
        if not self.drain_timeout > 0:
            raise ValueError("--drain-timeout must be a positive number of seconds")

    def plan(self) -> list[int]:
        """How many orders each producer publishes (the first ones take the remainder)."""
        share, extra = divmod(self.messages, self.producers)
        return [share + (1 if i < extra else 0) for i in range(self.producers)]

    def poisoned(self) -> tuple[int, int]:
        """The (producer, index) of the one order the ack stage cannot ship."""
        return (0, min(7, self.plan()[0] - 1))


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One verified property of the run."""

    #: What was checked.
    name: str
    #: Whether it held.
    ok: bool
    #: The evidence, or what went wrong.
    detail: str
