"""End of stream (``close_topic``) and ``join_async`` on every backend: kept by those that can,
refused with ``kincir.Unsupported`` by those that cannot (their adapters list ``end_of_stream``
and ``join`` in ``lacks``; see conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kincir

from .conftest import Backend, Scene, collect


async def iterate(sub: Any) -> list[bytes]:
    """The payloads ``async for`` yields until the iteration ends."""
    return [m.payload async for m in sub]


async def ends(receive: Any) -> None:
    """``receive`` (a bound receive call) raises TopicClosed for a reader."""
    with pytest.raises(kincir.TopicClosed) as info:
        await receive(timeout=10)
    assert info.value.reading is True


def test_closing_is_refused_clearly_where_the_backend_cannot_keep_it(backend: Backend) -> None:
    if not backend.refuses("end_of_stream"):
        pytest.skip(f"{backend.name} keeps an end of stream")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        with pytest.raises(kincir.Unsupported) as info:
            await s.pub.close_topic(s.topic)
        assert info.value.backend == backend.name and "end of stream" in str(info.value)
        with pytest.raises(kincir.Unsupported):
            await s.broker.close_topic(s.topic)
        await s.publish([b"still open"])  # nothing was closed
        assert (await sub.receive(timeout=10)).payload == b"still open"

    backend.play(body)


def test_join_is_refused_clearly_where_the_backend_cannot_keep_it(backend: Backend) -> None:
    if not backend.refuses("join"):
        pytest.skip(f"{backend.name} can join")

    async def body(s: Scene) -> None:
        await s.publish([b"x"])
        with pytest.raises(kincir.Unsupported) as info:
            await s.broker.join_async(s.topic, timeout=5)
        assert info.value.backend == backend.name

    backend.play(body)


def test_readers_drain_then_end(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        plain = await s.subscriber()
        looping = await s.subscriber()
        members = [await s.subscriber(group="workers") for _ in range(2)]
        acking = await s.ack_subscriber(group="acking", ack_timeout=30.0)
        payloads = [f"m{i}".encode() for i in range(20)]
        await s.publish(payloads[:10])
        await s.publish(payloads[10:])
        await s.pub.close_topic(s.topic)
        await s.pub.close_topic(s.topic)  # idempotent

        assert [m.payload for m in await collect(plain, 20)] == payloads
        await ends(plain.receive)
        await ends(plain.receive)  # and stays ended

        assert await asyncio.wait_for(iterate(looping), 30) == payloads

        shares = await asyncio.wait_for(asyncio.gather(*(iterate(m) for m in members)), 30)
        assert sorted(shares[0] + shares[1]) == sorted(payloads), "each to one member, then end"
        for member in members:
            await ends(member.receive)

        for expected in payloads:
            msg, handle = await acking.receive_with_ack(timeout=10)
            assert msg.payload == expected
            await acking.ack(handle)
        await ends(acking.receive_with_ack)

    backend.play(body, timeout=120)


def test_publishing_to_a_closed_topic_is_refused(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish([b"before"])
        await s.pub.close_topic(s.topic)
        with pytest.raises(kincir.TopicClosed) as info:
            await s.publish([b"after", b"and after"])
        assert info.value.topic == s.topic and info.value.reading is False
        other = backend.topic()
        await s.pub.publish(other, [b"other topics go on"])
        assert (await sub.receive(timeout=10)).payload == b"before"
        await ends(sub.receive)

    backend.play(body)


def test_a_reader_joining_a_closed_topic_ends(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        await s.subscriber(group="early")  # the topic exists, with a group that holds its messages
        await s.publish([b"held"])
        await s.pub.close_topic(s.topic)
        late = await s.subscriber()
        await ends(late.receive)
        early = await s.subscriber(group="early")
        assert (await early.receive(timeout=10)).payload == b"held"
        await ends(early.receive)

    backend.play(body)


def test_an_ack_reader_ends_only_once_nothing_is_unsettled(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        first, second = [await s.ack_subscriber(group="g", ack_timeout=30.0) for _ in range(2)]
        await s.publish([b"job"])
        await s.pub.close_topic(s.topic)
        msg, handle = await first.receive_with_ack(timeout=10)
        # the job is in flight and could come back: neither member has ended
        for member in (first, second):
            with pytest.raises(TimeoutError):
                await member.receive_with_ack(timeout=1.0)
        await first.nack(handle)
        again, handle = await second.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.uuid == msg.uuid and handle.delivery_count == 2
        await second.ack(handle)
        await ends(first.receive_with_ack)
        await ends(second.receive_with_ack)

    backend.play(body, timeout=120)


def test_a_close_racing_publishes_loses_nothing(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        plain = await s.subscriber()
        group = await s.subscriber(group="g", prefetch=8)
        accepted: list[bytes] = []
        refused: list[bytes] = []

        async def produce(worker: int) -> None:
            for i in range(100_000):  # until the close refuses one
                payload = f"{worker}-{i}".encode()
                try:
                    await s.publish([payload])
                except kincir.TopicClosed:
                    refused.append(payload)
                    return
                accepted.append(payload)
                await asyncio.sleep(0)  # the in-memory publish never yields by itself

        producers = [asyncio.ensure_future(produce(w)) for w in range(4)]
        while len(accepted) < 40:
            await asyncio.sleep(0.005)
        await s.pub.close_topic(s.topic)
        await asyncio.gather(*producers)
        assert len(refused) == 4, "every producer ran into the close"
        for sub in (plain, group):
            got = await asyncio.wait_for(iterate(sub), 60)
            assert sorted(got) == sorted(accepted), "each accepted publish read, none refused"

    backend.play(body, timeout=120)


def test_join_waits_until_the_groups_settled(backend: Backend) -> None:
    backend.requires("join")

    async def body(s: Scene) -> None:
        workers = [await s.ack_subscriber(group="w", ack_timeout=30.0) for _ in range(2)]
        audit = await s.subscriber(group="audit")
        payloads = [f"m{i}".encode() for i in range(10)]
        await s.publish(payloads)
        with pytest.raises(TimeoutError):  # nobody read anything yet
            await s.broker.join_async(s.topic, timeout=0.5)
        joining = asyncio.ensure_future(s.broker.join_async(s.topic, timeout=60))
        acked: list[bytes] = []
        held = []

        async def work(sub: Any) -> None:
            while len(acked) + len(held) < len(payloads):
                try:
                    msg, handle = await sub.receive_with_ack(timeout=0.5)
                except TimeoutError:
                    continue
                if not held:
                    held.append((sub, handle, msg.payload))  # settled only after a pause
                    continue
                acked.append(msg.payload)
                await sub.ack(handle)

        await asyncio.gather(*(work(w) for w in workers))
        assert [m.payload for m in await collect(audit, 10)] == payloads
        await asyncio.sleep(0.5)
        assert not joining.done(), "one message is still in flight"
        sub, handle, payload = held[0]
        await sub.ack(handle)
        await joining
        assert sorted([*acked, payload]) == sorted(payloads)

    backend.play(body, timeout=120)


def test_a_closed_dead_letter_topic_still_takes_dead_letters(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        dead = backend.topic()
        letters = await s.subscriber(topics=(dead,))
        sub = await s.ack_subscriber(group="g", ack_timeout=30.0, dead_letter_topic=dead)
        await s.pub.close_topic(dead)
        with pytest.raises(kincir.TopicClosed):
            await s.pub.publish(dead, [b"a publisher's message"])
        await s.publish([b"poison"])
        _, handle = await sub.receive_with_ack(timeout=10)
        await sub.nack(handle, requeue=False)  # the broker's dead letter is taken
        letter = await letters.receive(timeout=10)
        assert letter.payload == b"poison"
        assert letter.metadata["_dead_letter_reason"] == "rejected"
        await ends(letters.receive)

    backend.play(body)


def test_join_waits_for_plain_readers(backend: Backend) -> None:
    backend.requires("join")
    backend.requires("join_plain_readers")

    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish([b"a", b"b", b"c"])
        with pytest.raises(TimeoutError):
            await s.broker.join_async(s.topic, timeout=0.3)
        await collect(sub, 3)
        await s.broker.join_async(s.topic, timeout=10)

    backend.play(body)
