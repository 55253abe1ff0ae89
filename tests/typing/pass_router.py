"""Router: pipeline stages with a plain handler on threads, a manual one, and a coroutine one."""

from __future__ import annotations

import asyncio
import time
from typing import assert_type

from kincir import AckStrategy, Delivery, Message, Router, RouterStats
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber


def enrich(message: Message) -> list[bytes]:
    return [message.payload.upper()]


def settle_by_hand(message: Message, delivery: Delivery) -> None:
    if message.payload.startswith(b"keep"):
        delivery.ack()
    else:
        delivery.nack(requeue=False)


async def shout(message: Message[bytes]) -> bytes:
    await asyncio.sleep(0)
    return message.payload + b"!"


def collect(subscriber: InMemorySubscriber, count: int) -> list[bytes]:
    return [subscriber.receive_sync(timeout=5.0).payload for _ in range(count)]


def main() -> None:
    with InMemoryBroker.with_default_config() as broker:
        publisher = InMemoryPublisher(broker)
        output = InMemorySubscriber(broker)
        output.subscribe("orders.enriched")

        router = Router(
            broker,
            "orders.raw",
            "orders.enriched",
            enrich,
            concurrency=2,
            processing_timeout=5.0,
            max_deliveries=3,
            dead_letter_topic="orders.dead",
        )
        with router:
            assert router.is_running()
            publisher.publish_sync("orders.raw", [b"a", b"b", b"c"])
            assert sorted(collect(output, 3)) == [b"A", b"B", b"C"]
        stats = router.stats()
        assert_type(stats, RouterStats)
        assert_type(stats.mean_processing_time, float)
        assert (stats.processed, stats.acked, stats.published) == (3, 3, 3)

        manual = Router(broker, "notes", None, settle_by_hand, ack_strategy=AckStrategy.MANUAL)
        assert_type(manual.start(), Router)
        publisher.publish_sync("notes", [b"keep me", b"drop me"])
        for _ in range(500):
            if manual.stats().acked + manual.stats().nacked == 2:
                break
            time.sleep(0.01)
        assert_type(manual.stop(timeout=5.0), bool)
        assert (manual.stats().acked, manual.stats().nacked) == (1, 1)

        async def run_async_stage() -> list[bytes]:
            stage = Router(broker, "words", "words.loud", shout)
            loud = InMemorySubscriber(broker)
            loud.subscribe("words.loud")
            task = asyncio.create_task(stage.run())
            await publisher.publish("words", [b"hi", b"there"])
            got = [(await loud.receive(timeout=5.0)).payload for _ in range(2)]
            stage.stop()
            await task
            return got

        assert asyncio.run(run_async_stage()) == [b"hi!", b"there!"]


if __name__ == "__main__":
    main()
