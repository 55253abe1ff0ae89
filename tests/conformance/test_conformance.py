"""The behaviour every backend shares (see conftest.py for how backends are chosen)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import kincir

from .conftest import Backend, Scene, collect, drain, receive_from_any


def user_metadata(msg: Any) -> dict[str, str]:
    return {k: v for k, v in msg.metadata.items() if not k.startswith("_")}


def test_objects_satisfy_the_protocols(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        assert isinstance(s.pub, kincir.Publisher)
        assert isinstance(await s.subscriber(topics=()), kincir.Subscriber)
        if "ack" not in backend.lacks:
            assert isinstance(await s.ack_subscriber(topics=()), kincir.AckSubscriber)

    backend.play(body)


def test_publish_then_receive_in_order(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish([b"one", kincir.Message(b"two"), b"three"])
        got = await collect(sub, 3)
        assert [m.payload for m in got] == [b"one", b"two", b"three"]
        assert all(m.topic == s.topic for m in got)

    backend.play(body)


def test_metadata_and_uuid_round_trip(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        sent = (
            kincir.Message.new(b"\x00binary\xff")
            .with_metadata("customer", "Alice")
            .with_metadata("unicode", "h\u00e9llo \u2603")
            .with_metadata("empty", "")
        )
        await s.publish([sent])
        got = await sub.receive(timeout=10)
        assert got.payload == sent.payload
        assert got.uuid == sent.uuid
        assert user_metadata(got) == dict(sent.metadata)
        assert got.enqueued_at is not None and got.enqueued_at > 0

    backend.play(body)


def test_fan_out_to_every_plain_subscriber(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        subs = [await s.subscriber() for _ in range(3)]
        payloads = [f"m{i}".encode() for i in range(20)]
        await s.publish(payloads)
        for sub in subs:
            assert [m.payload for m in await collect(sub, 20)] == payloads

    backend.play(body)


def test_topics_are_separate(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.pub.publish(backend.topic(), [b"other topic"])
        await s.publish([b"mine"])
        assert (await sub.receive(timeout=10)).payload == b"mine"
        assert await drain(sub) == []

    backend.play(body)


def test_group_members_share_and_groups_each_get_everything(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        members = [await s.subscriber(group="workers") for _ in range(2)]
        audit = await s.subscriber(group="audit")
        payloads = [f"job{i}".encode() for i in range(40)]
        await s.publish(payloads)
        got: list[list[bytes]] = [[], []]

        async def take(i: int) -> None:
            got[i] = [m.payload for m in await drain(members[i], quiet=1.5)]

        await asyncio.gather(take(0), take(1))
        assert sorted(got[0] + got[1]) == sorted(payloads), "each message to exactly one member"
        assert [m.payload for m in await collect(audit, 40)] == payloads

    backend.play(body)


def test_order_and_sequence_per_topic(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        for batch in range(5):
            await s.publish([f"{batch}-{i}".encode() for i in range(30)])
        got = await collect(sub, 150)
        expected = [f"{b}-{i}".encode() for b in range(5) for i in range(30)]
        assert [m.payload for m in got] == expected
        return got

    got = backend.play(body)
    backend.requires("gapless_sequence")
    sequences = [m.sequence for m in got]
    assert sequences == list(range(sequences[0], sequences[0] + 150)), "gapless and increasing"


def test_receive_batch(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish([b"a", b"b", b"c"])
        seen: list[bytes] = []
        while len(seen) < 3:
            batch = await sub.receive_batch(10, timeout=10)
            assert 1 <= len(batch) <= 10
            seen += [m.payload for m in batch]
        assert seen == [b"a", b"b", b"c"]

    backend.play(body)


def test_receive_timeout_and_errors(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber(topics=())
        with pytest.raises(kincir.NotSubscribed):
            await sub.receive(timeout=0.1)
        await sub.subscribe(backend.topic())
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=0.2)
        if "codecs" not in backend.lacks:  # in memory, any object is a payload
            with pytest.raises(TypeError):  # the default codec sends bytes only
                await s.pub.publish(backend.topic(), ["text is not bytes"])
        with pytest.raises(ValueError):
            await s.pub.publish("", [b"x"])
        with pytest.raises(TypeError):
            await sub.receive(timeout="soon")
        # the refusals left everything working
        await sub.subscribe(s.topic)
        await s.publish([b"still fine"])
        assert (await sub.receive(timeout=10)).payload == b"still fine"

    backend.play(body)


def test_ack_settles_for_good(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=1.0)
        await s.publish([b"a", b"b"])
        for expected in (b"a", b"b"):
            msg, handle = await sub.receive_with_ack(timeout=10)
            assert msg.payload == expected
            assert handle.delivery_count == 1 and not handle.is_retry
            assert handle.message_id == msg.uuid
            await sub.ack(handle)
        await asyncio.sleep(1.5)  # past the ack timeout: nothing comes back
        with pytest.raises(TimeoutError):
            await sub.receive_with_ack(timeout=1.0)
        with pytest.raises(kincir.AckError):
            await sub.ack(handle)

    backend.play(body)


def test_nack_redelivers_with_a_delivery_count(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=30.0, max_deliveries=5)
        await s.publish([b"retry me"])
        msg, handle = await sub.receive_with_ack(timeout=10)
        await sub.nack(handle)
        again, handle2 = await sub.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.payload == b"retry me" and again.uuid == msg.uuid
        assert handle2.delivery_count == 2 and handle2.is_retry
        await sub.ack(handle2)

    backend.play(body)


def test_missed_ack_deadline_redelivers(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=0.5)
        await s.publish([b"slow"])
        _, late = await sub.receive_with_ack(timeout=10)
        again, handle = await sub.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.payload == b"slow" and handle.delivery_count == 2
        await sub.ack(handle)
        with pytest.raises(kincir.AckError):
            await sub.ack(late)  # its deadline passed: the handle is stale

    backend.play(body)


def test_dead_letters_past_max_deliveries_and_on_reject(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        dead = backend.topic()
        letters = await s.subscriber(topics=(dead,))
        sub = await s.ack_subscriber(
            group="g", ack_timeout=30.0, max_deliveries=2, dead_letter_topic=dead
        )
        await s.publish([kincir.Message(b"poison").with_metadata("k", "v")])
        for _ in range(2):
            _, handle = await sub.receive_with_ack(timeout=backend.redelivery_wait)
            await sub.nack(handle)
        letter = await letters.receive(timeout=10)
        assert letter.payload == b"poison"
        assert letter.metadata["_dead_letter_reason"] == "max_deliveries_exceeded"
        assert letter.metadata["_delivery_count"] == "2"
        assert letter.metadata["_original_topic"] == s.topic
        assert letter.metadata["k"] == "v"
        await s.publish([b"bad input"])
        _, handle = await sub.receive_with_ack(timeout=10)
        await sub.nack(handle, requeue=False)
        letter = await letters.receive(timeout=10)
        assert letter.payload == b"bad input"
        assert letter.metadata["_dead_letter_reason"] == "rejected"
        with pytest.raises(TimeoutError):
            await sub.receive_with_ack(timeout=1.0)

    backend.play(body)


def test_ack_batch_checks_every_handle_first(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=30.0, prefetch=4)
        other = await s.ack_subscriber(group="g2", ack_timeout=30.0)
        await s.publish([b"1", b"2", b"3"])
        handles = [(await sub.receive_with_ack(timeout=10))[1] for _ in range(3)]
        _, foreign = await other.receive_with_ack(timeout=10)
        with pytest.raises(kincir.AckError):
            await sub.ack_batch([handles[0], foreign])
        with pytest.raises(kincir.AckError):
            await sub.ack_batch([handles[0], handles[0]])
        await sub.ack_batch(handles)  # none was settled by the refused batches
        await other.ack(foreign)

    backend.play(body)


def test_a_closing_member_hands_its_messages_to_the_group(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        first, second = [await s.ack_subscriber(group="g", ack_timeout=30.0) for _ in range(2)]
        await s.publish([b"held"])
        msg, _, holder = await receive_from_any([first, second], timeout=backend.redelivery_wait)
        other = second if holder is first else first
        await holder.close()
        again, handle = await other.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.uuid == msg.uuid and handle.delivery_count == 2
        await other.ack(handle)

    backend.play(body)


def test_plain_receive_on_an_ack_subscriber_acks(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="g", ack_timeout=0.5)
        await s.publish([b"x"])
        assert (await sub.receive(timeout=10)).payload == b"x"
        await asyncio.sleep(1.0)
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=1.0)

    backend.play(body)


def test_shutdown_refuses_new_work(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await backend.shutdown(s.broker)
        with pytest.raises(kincir.BrokerShutdown):
            await s.publish([b"late"])
        with pytest.raises(kincir.BrokerShutdown):
            await sub.subscribe(backend.topic())
        with pytest.raises(kincir.BrokerShutdown):
            await sub.receive(timeout=5)
        await backend.shutdown(s.broker)  # idempotent

    backend.play(body)


def test_receive_with_timeout_zero_asks_the_server(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.publish([b"ready"])
        for _ in range(200):  # a poll loop: each call may wait 0 s, but must look
            try:
                got = await sub.receive(timeout=0)
                break
            except TimeoutError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("receive(timeout=0) never returned the published message")
        assert got.payload == b"ready"

    backend.play(body)


def test_cancelled_receives_lose_nothing(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber(group="cancel", prefetch=1)
        payloads = [f"m{i}".encode() for i in range(300)]
        rng = random.Random(7)

        async def produce() -> None:
            for payload in payloads:
                await s.publish([payload])
                await asyncio.sleep(rng.random() * 0.002)

        producing = asyncio.ensure_future(produce())
        got: list[bytes] = []
        cancelled = 0
        while not producing.done():
            try:  # timeouts short enough to cancel receives in the middle of their fetch
                got.append((await asyncio.wait_for(sub.receive(), rng.random() * 0.003)).payload)
            except TimeoutError:
                cancelled += 1
        await producing
        got += [m.payload for m in await drain(sub, quiet=2.0)]
        assert sorted(got) == sorted(payloads), f"{cancelled} cancelled receives"

    backend.play(body, timeout=120)


def test_two_tasks_receiving_on_one_subscriber_share_the_messages(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        payloads = [f"m{i}".encode() for i in range(50)]
        await s.publish(payloads)
        first, second = await asyncio.gather(drain(sub, quiet=1.5), drain(sub, quiet=1.5))
        got = [m.payload for m in first + second]
        assert sorted(got) == sorted(payloads), "each message once, to one of the two tasks"

    backend.play(body)


def test_unsubscribe_during_a_receive_stops_the_topic(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        a, b = backend.topic(), backend.topic()
        sub = await s.subscriber(topics=(a, b))
        waiting = asyncio.ensure_future(sub.receive(timeout=3))
        await asyncio.sleep(0.2)  # the receive is waiting on the server
        await sub.unsubscribe(a)
        await s.pub.publish(a, [b"after unsubscribe"])
        await s.pub.publish(b, [b"still subscribed"])
        first = await waiting
        rest = await drain(sub, quiet=1.0)
        assert [m.payload for m in [first, *rest]] == [b"still subscribed"]
        assert sub.subscribed_topics() == [b]

    backend.play(body)


def test_a_closing_plain_group_member_leaves_the_rest_to_the_group(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        first, second = [await s.subscriber(group="handover") for _ in range(2)]
        payloads = [f"m{i}".encode() for i in range(20)]
        await s.publish(payloads)
        taken: list[bytes] = []
        # one receive from whichever member is served, then that member leaves
        try:
            taken.append((await first.receive(timeout=2)).payload)
            leaving, staying = first, second
        except TimeoutError:
            taken.append((await second.receive(timeout=backend.redelivery_wait)).payload)
            leaving, staying = second, first
        await leaving.close()
        rest = [m.payload for m in await drain(staying, quiet=backend.redelivery_wait / 2)]
        assert sorted(taken + rest) == sorted(payloads), "nothing lost when a member leaves"

    backend.play(body, timeout=120)


def test_unsubscribing_gives_back_what_is_in_flight(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        first, second = [await s.ack_subscriber(group="g", ack_timeout=30.0) for _ in range(2)]
        await s.publish([b"held"])
        msg, handle, holder = await receive_from_any([first, second], backend.redelivery_wait)
        other = second if holder is first else first
        await holder.unsubscribe(s.topic)
        with pytest.raises(kincir.AckError):
            await holder.ack(handle)  # the handle went stale with the subscription
        again, handle2 = await other.receive_with_ack(timeout=backend.redelivery_wait)
        assert again.uuid == msg.uuid and handle2.delivery_count == 2
        await other.ack(handle2)

    backend.play(body, timeout=120)
