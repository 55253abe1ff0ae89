"""Graceful shutdown (drain, then BrokerShutdown) and force_shutdown (drop, wake everyone)."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest


def test_shutdown_stops_publishes_and_subscribes(k):
    broker, pub, sub = k.setup(subscribe="t")
    broker.shutdown()
    assert broker.is_shutdown() is True
    with pytest.raises(k.BrokerShutdown):
        pub.publish_nowait("t", [b"x"])
    with pytest.raises(k.BrokerShutdown):
        pub.publish_nowait("new", [b"x"])
    with pytest.raises(k.BrokerShutdown):
        pub.publish_sync("t", [b"x"])
    with pytest.raises(k.BrokerShutdown):
        k.run(pub.publish("t", [b"x"]))
    with pytest.raises(k.BrokerShutdown):
        sub.subscribe("other")
    with pytest.raises(k.BrokerShutdown):
        k.InMemorySubscriber(broker).subscribe("t")
    assert broker.list_topics() == ["t"]


def test_shutdown_error_is_an_in_memory_error_with_advice(k):
    broker, pub, _ = k.setup()
    broker.shutdown()
    with pytest.raises(k.InMemoryError) as info:
        pub.publish_nowait("t", [b"x"])
    assert type(info.value) is k.BrokerShutdown
    assert isinstance(info.value, k.KincirError)
    assert str(info.value)


def test_subscribers_drain_queued_messages_then_get_broker_shutdown(k):
    broker, pub, sub = k.setup()
    other = k.InMemorySubscriber(broker)
    sub.subscribe("t")
    other.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.shutdown()
    assert sub.receive_sync(timeout=1).payload == b"1"
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"2", b"3"]
    with pytest.raises(k.BrokerShutdown):
        sub.receive_sync(timeout=1)
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()
    with pytest.raises(k.BrokerShutdown):
        sub.receive_batch_sync(5, timeout=1)

    async def drain_other():
        got = [await other.receive(timeout=1) for _ in range(3)]
        with pytest.raises(k.BrokerShutdown):
            await other.receive(timeout=1)
        with pytest.raises(k.BrokerShutdown):
            await other.receive_batch(3)
        return got

    assert [m.payload for m in k.run(drain_other())] == [b"1", b"2", b"3"]


def test_blocked_receive_sync_wakes_with_broker_shutdown(k):
    broker, _, sub = k.setup(subscribe="t")
    worker = k.spawn(sub.receive_sync)  # no timeout: only the shutdown can end it
    worker.started.wait(1)
    time.sleep(0.05)
    assert worker.is_alive()
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        worker.join(3)


def test_blocked_receive_batch_sync_wakes_with_broker_shutdown(k):
    broker, _, sub = k.setup(subscribe="t")
    worker = k.spawn(sub.receive_batch_sync, 10)
    worker.started.wait(1)
    time.sleep(0.05)
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        worker.join(3)


def test_blocked_async_receive_wakes_with_broker_shutdown(k):
    broker, _, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0.02)
        assert not task.done()
        broker.shutdown()
        with pytest.raises(k.BrokerShutdown):
            await task

    k.run(main())


def test_blocked_async_receive_wakes_when_shut_down_from_a_thread(k):
    broker, _, sub = k.setup(subscribe="t")

    def stop_later():
        time.sleep(0.05)
        broker.shutdown()

    async def main():
        worker = k.spawn(stop_later)
        with pytest.raises(k.BrokerShutdown):
            await sub.receive()
        worker.join(2)

    k.run(main())


def test_shutdown_with_timeout_returns_true_when_a_consumer_drains(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [str(i).encode() for i in range(200)])

    def consume():
        return [m.sequence for m in sub]

    worker = k.spawn(consume)
    assert broker.shutdown(timeout=3) is True
    assert worker.join(3) == list(range(1, 201))


def test_shutdown_with_timeout_returns_false_when_nobody_reads(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    assert broker.shutdown(timeout=0.05) is False
    # The messages are still there for the subscriber to drain.
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"1", b"2"]
    assert broker.shutdown(timeout=0.05) is True


def test_shutdown_async_drains_tasks_on_its_own_loop(k):
    # The async drain must not block the loop its own subscriber tasks run on.
    broker, pub, sub = k.setup(subscribe="t")

    async def main():
        async def worker():
            return [m.sequence async for m in sub]

        task = asyncio.ensure_future(worker())
        await pub.publish("t", [b"x"] * 1000)
        started = time.monotonic()
        assert await broker.shutdown_async(timeout=5) is True
        assert time.monotonic() - started < 4
        assert await task == list(range(1, 1001))

    k.run(main())


def test_shutdown_async_returns_false_when_nobody_reads_and_is_idempotent(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])

    async def main():
        assert await broker.shutdown_async(timeout=0.05) is False
        assert await broker.shutdown_async() is False  # no timeout: checks once
        assert sub.try_receive().payload == b"1"
        assert await broker.shutdown_async(timeout=0.05) is True

    k.run(main())
    with pytest.raises(k.BrokerShutdown):
        pub.publish_nowait("t", [b"late"])


def test_shutdown_async_refuses_a_bad_timeout_before_shutting_down(k):
    broker, _, _ = k.setup()
    with pytest.raises(ValueError):
        k.run(broker.shutdown_async(timeout=-1))
    assert not broker.is_shutdown()


def test_shutdown_with_timeout_on_a_running_loop_warns(k):
    broker, _, _ = k.setup()

    async def main():
        with pytest.warns(RuntimeWarning, match="shutdown_async"):
            assert broker.shutdown(timeout=0.01) is True

    k.run(main())
    # without a timeout it never waits, so on a loop it is fine
    other, _, _ = k.setup()

    async def plain():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            other.shutdown()

    k.run(plain())


def test_shutdown_without_timeout_returns_at_once(k):
    broker, pub, _sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    result = broker.shutdown()
    assert result is False  # a subscriber still has to drain
    empty, _, _ = k.setup()
    assert empty.shutdown() is True


def test_shutdown_ignores_messages_held_for_nobody(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("orphan", [b"1"])
    assert broker.shutdown(timeout=0.5) is True


def test_shutdown_is_idempotent(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    broker.shutdown()
    broker.shutdown()
    broker.shutdown(timeout=0.01)
    assert sub.try_receive().payload == b"1"
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()


def test_force_shutdown_drops_everything(k):
    broker, pub, sub = k.setup(enable_stats=True, subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    pub.publish_nowait("orphan", [b"4"])
    assert broker.force_shutdown() is None
    assert broker.is_shutdown() is True
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()
    with pytest.raises(k.BrokerShutdown):
        sub.receive_sync(timeout=1)
    with pytest.raises(k.BrokerShutdown):
        pub.publish_nowait("t", [b"x"])
    health = broker.health_check()
    assert health.is_healthy is False
    assert health.total_queued_messages == 0
    assert broker.stats().messages_dropped() == 4


def test_force_shutdown_wakes_blocked_receivers_at_once(k):
    broker, _, sub = k.setup(subscribe="t")
    others = [k.InMemorySubscriber(broker) for _ in range(3)]
    for s in others:
        s.subscribe("t")
    workers = [k.spawn(s.receive_sync) for s in [sub, *others]]
    for w in workers:
        w.started.wait(1)
    time.sleep(0.05)

    async def waiter():
        s = k.subscriber(broker, "t")
        task = asyncio.ensure_future(s.receive())
        await asyncio.sleep(0.02)
        broker.force_shutdown()
        with pytest.raises(k.BrokerShutdown):
            await task

    k.run(waiter())
    for w in workers:
        with pytest.raises(k.BrokerShutdown):
            w.join(3)


def test_force_shutdown_after_shutdown_drops_the_backlog(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    broker.shutdown()
    broker.force_shutdown()
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()
    assert broker.shutdown(timeout=0.5) is True


def test_force_shutdown_is_idempotent(k):
    broker, _, sub = k.setup(subscribe="t")
    broker.force_shutdown()
    broker.force_shutdown()
    broker.shutdown()
    assert broker.is_shutdown() is True
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()


def test_is_connected_is_false_after_shutdown(k):
    broker, pub, sub = k.setup(subscribe="t")
    assert pub.is_connected() and sub.is_connected()
    broker.shutdown()
    assert pub.is_connected() is False
    assert sub.is_connected() is False


def test_is_connected_is_false_after_force_shutdown(k):
    broker, pub, sub = k.setup()
    broker.force_shutdown()
    assert pub.is_connected() is False
    assert sub.is_connected() is False


def test_iteration_ends_after_force_shutdown(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    broker.force_shutdown()
    assert list(sub) == []


def test_new_publishers_and_subscribers_on_a_shut_down_broker(k):
    broker, _, _ = k.setup()
    broker.shutdown()
    pub = k.InMemoryPublisher(broker)
    sub = k.InMemorySubscriber(broker)
    assert pub.is_connected() is False
    with pytest.raises(k.BrokerShutdown):
        sub.subscribe("t")
    with pytest.raises(k.BrokerShutdown):
        sub.try_receive()


def test_shutdown_stops_the_ttl_cleanup(k):
    broker, pub, sub = k.setup(default_message_ttl=30, cleanup_interval=0.01, subscribe="t")
    pub.publish_nowait("t", [b"1"])
    broker.shutdown()
    time.sleep(0.05)
    assert sub.try_receive().payload == b"1"


def test_consume_drains_then_raises_broker_shutdown(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("jobs", [b"1"])
    assert broker.consume("jobs").payload == b"1"  # the pull group now exists
    pub.publish_nowait("jobs", [b"2"])
    broker.shutdown()
    assert broker.consume("jobs").payload == b"2"
    with pytest.raises(k.BrokerShutdown):
        broker.consume("jobs")


def test_consume_after_force_shutdown_raises_broker_shutdown(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("jobs", [b"1", b"2"])
    broker.consume("jobs")
    broker.force_shutdown()
    with pytest.raises(k.BrokerShutdown):
        broker.consume("jobs")


def test_shutdown_does_not_wait_for_the_pull_group(k):
    broker, pub, sub = k.setup(subscribe="jobs")
    broker.consume("jobs")
    pub.publish_nowait("jobs", [b"1", b"2"])
    assert len(sub.try_receive_batch(10)) == 2
    # The pull group still holds both messages, but it is not a subscriber to wait for.
    assert broker.topic_info("jobs").queue_size == 2
    assert broker.shutdown(timeout=0.5) is True


def test_publish_racing_force_shutdown_leaves_nothing_queued(k):
    """force_shutdown drops everything: a publish racing it must not leave messages behind."""
    for _ in range(20):
        broker = k.new_broker()
        sub = k.subscriber(broker, "t")

        def produce(broker, sub):
            pub = k.InMemoryPublisher(broker)
            try:
                while True:
                    pub.publish_sync("t", [b"x"])
                    sub.try_receive_batch(100)
            except k.BrokerShutdown:
                pass

        producers = [k.spawn(produce, broker, sub) for _ in range(2)]
        time.sleep(0.002)
        broker.force_shutdown()
        for w in producers:
            w.join(5)
        health = broker.health_check()
        assert health.total_queued_messages == 0, "messages were queued after force_shutdown"
        with pytest.raises(k.BrokerShutdown):
            sub.try_receive()
