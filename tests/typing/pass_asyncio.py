"""asyncio: the README's quick start, producer and consumer tasks, batches and iteration."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, assert_type

from kincir import Completed, Message, Publisher, Subscriber
from kincir.memory import (
    InMemoryBroker,
    InMemoryConfig,
    InMemoryPublisher,
    InMemorySubscriber,
    StatsSnapshot,
)


async def produce(publisher: Publisher, count: int) -> None:
    """Any Publisher will do: a producer needs nothing more than the protocol."""
    for n in range(count - 1):
        await publisher.publish("orders", [Message.new(f"order {n}".encode())])
    await publisher.send("orders", f"order {count - 1}".encode(), metadata={"last": "yes"})


async def consume(subscriber: Subscriber, count: int) -> list[bytes]:
    payloads = []
    for _ in range(count):
        message = await subscriber.receive(timeout=5.0)
        assert_type(message, Message)
        payloads.append(message.payload)
    return payloads


async def main() -> None:
    async with InMemoryBroker(InMemoryConfig.new().with_stats(True)) as broker:
        assert_type(broker, InMemoryBroker)
        publisher = InMemoryPublisher(broker)
        subscriber = InMemorySubscriber(broker)
        subscribed = subscriber.subscribe("orders")
        assert_type(subscribed, Completed[None])
        await subscribed

        message = (
            Message.new(b"Order #1234")
            .with_metadata("customer", "Alice")
            .with_metadata("priority", "high")
        )
        assert_type(message, Message[bytes])
        await publisher.publish("orders", [message, {"id": 1234}])

        received = await subscriber.receive()
        assert_type(received, Message)
        assert_type(received.payload, Any)  # any object in memory
        assert_type(received.metadata, Mapping[str, str])
        assert_type(received.uuid, str)
        assert_type(received.topic, str | None)
        assert_type(received.sequence, int | None)
        assert_type(received.enqueued_at, int | None)
        assert received.payload == b"Order #1234"
        assert received.metadata["customer"] == "Alice"
        assert (received.topic, received.sequence, received.uuid) == ("orders", 1, message.uuid)
        assert (await subscriber.receive()).payload == {"id": 1234}  # any object, as it was

        # a producer task and a consumer task, typed by the protocols alone
        _, payloads = await asyncio.gather(produce(publisher, 3), consume(subscriber, 3))
        assert_type(payloads, list[bytes])
        assert payloads == [b"order 0", b"order 1", b"order 2"]

        # any bytes-like payload; a batch waits for one message, then takes what is there
        await publisher.publish("orders", [b"a", bytearray(b"b"), memoryview(b"c")])
        batch = await subscriber.receive_batch(10, timeout=1.0)
        assert_type(batch, list[Message])
        assert [m.payload for m in batch] == [b"a", b"b", b"c"]

        # a timed-out receive raises the built-in TimeoutError and loses nothing
        try:
            await subscriber.receive(timeout=0.01)
        except TimeoutError:
            pass
        else:
            raise AssertionError("nothing was published, yet a message arrived")

        # iteration ends once the broker is shut down and the subscriber has drained
        await publisher.publish("orders", (b"last",))
        drained = broker.shutdown()
        assert_type(drained, bool)
        tail = [m.payload async for m in subscriber]
        assert tail == [b"last"]

        stats = broker.stats()
        assert_type(stats, StatsSnapshot | None)
        assert stats is not None
        assert_type(stats.messages_published(), int)
        assert stats.messages_published() == stats.messages_consumed() == 9


if __name__ == "__main__":
    asyncio.run(main())
