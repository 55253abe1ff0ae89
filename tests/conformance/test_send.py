"""``send``: one message, a payload with optional metadata, on every backend."""

from __future__ import annotations

import pytest

import kincir

from .conftest import Backend, Scene, collect


def user_metadata(msg: object) -> dict[str, str]:
    return {k: v for k, v in msg.metadata.items() if not k.startswith("_")}  # type: ignore[attr-defined]


def test_send_delivers_in_order_with_publish(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.pub.send(s.topic, b"one")
        await s.publish([b"two"])
        await s.pub.send(s.topic, b"three", timeout=10)
        got = await collect(sub, 3)
        assert [m.payload for m in got] == [b"one", b"two", b"three"]
        assert all(m.topic == s.topic for m in got)
        assert len({m.uuid for m in got}) == 3
        assert s.pub.stats().published == 3

    backend.play(body)


def test_send_carries_metadata(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        await s.pub.send(s.topic, b"x", metadata={"customer": "Alice", "empty": ""})
        await s.pub.send(s.topic, b"y")
        first, second = await collect(sub, 2)
        assert user_metadata(first) == {"customer": "Alice", "empty": ""}
        assert user_metadata(second) == {}
        assert first.enqueued_at is not None and first.enqueued_at > 0

    backend.play(body)


def test_send_refuses_bad_metadata_and_publishes_nothing(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        sub = await s.subscriber()
        with pytest.raises(TypeError, match="metadata"):
            await s.pub.send(s.topic, b"bad", metadata={"n": 1})
        with pytest.raises(TypeError, match="metadata"):
            await s.pub.send(s.topic, b"bad", metadata=[("k", "v")])
        await s.pub.send(s.topic, b"good")
        assert (await sub.receive(timeout=10)).payload == b"good"
        assert s.pub.stats() == kincir.PublisherStats(published=1, refused=0)

    backend.play(body)


def test_send_after_shutdown_is_refused(backend: Backend) -> None:
    async def body(s: Scene) -> None:
        await backend.shutdown(s.broker)
        with pytest.raises(kincir.BrokerShutdown):
            await s.pub.send(s.topic, b"late")
        assert s.pub.stats().refused == 1

    backend.play(body)


def test_send_to_a_closed_topic_is_refused(backend: Backend) -> None:
    backend.requires("end_of_stream")

    async def body(s: Scene) -> None:
        await s.subscriber()  # the topic exists
        await s.pub.close_topic(s.topic)
        with pytest.raises(kincir.TopicClosed) as info:
            await s.pub.send(s.topic, b"late")
        assert info.value.topic == s.topic and info.value.reading is False

    backend.play(body)
