"""Acknowledgement: handles, retries, dead letters, and the AckSubscriber protocol."""

from __future__ import annotations

import asyncio
from typing import assert_type

from kincir import AckSubscriber, Completed, Message
from kincir.memory import (
    AckError,
    AckHandle,
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryPublisher,
    InMemorySubscriber,
)


async def handle_one(subscriber: AckSubscriber) -> bytes:
    """Written against the protocol: any acknowledging subscriber will do."""
    message, handle = await subscriber.receive_with_ack(timeout=1.0)
    assert_type(message, Message)
    await subscriber.ack(handle)
    payload: bytes = message.payload  # in memory a payload is any object: Any
    return payload


def main() -> None:
    broker = InMemoryBroker.with_default_config()
    publisher = InMemoryPublisher(broker)
    worker = InMemoryAckSubscriber(
        broker, "workers", ack_timeout=30.0, max_deliveries=2, dead_letter_topic="jobs.dead"
    )
    assert isinstance(worker, AckSubscriber)
    assert_type(worker.max_deliveries, int | None)
    assert_type(worker.dead_letter_topic, str | None)
    dead = InMemorySubscriber(broker)
    worker.subscribe("jobs")
    dead.subscribe("jobs.dead")
    publisher.publish_nowait("jobs", [b"ok", b"poison", b"async"])

    message, handle = worker.receive_with_ack_sync(timeout=1.0)
    assert_type(message, Message)
    assert_type(handle, AckHandle)
    assert_type(handle.delivery_count, int)
    assert_type(handle.is_retry, bool)
    assert_type(handle.sequence, int)
    assert_type(handle.message_id, str)
    settled = worker.ack(handle)
    assert_type(settled, Completed[None])
    try:
        worker.ack(handle)
    except AckError:
        pass  # settled twice
    else:
        raise AssertionError("a handle was settled twice")

    # a failing message is retried, then dead-lettered after max_deliveries
    pair = worker.try_receive_with_ack()
    assert_type(pair, tuple[Message, AckHandle] | None)
    assert pair is not None and pair[0].payload == b"poison"
    assert_type(worker.in_flight(), int)
    assert_type(worker.stats().acked, int)
    worker.nack(pair[1])
    retry = worker.receive_with_ack_sync(timeout=1.0)
    assert retry[1].is_retry and retry[1].delivery_count == 2
    worker.nack_batch([retry[1]], requeue=True)
    letter = dead.receive_sync(timeout=1.0)
    assert letter.payload == b"poison"
    assert letter.metadata["_dead_letter_reason"] == "max_deliveries_exceeded"

    assert asyncio.run(handle_one(worker)) == b"async"
    assert worker.in_flight() == 0
    worker.close()
    broker.shutdown()


if __name__ == "__main__":
    main()
