"""The asyncio API: awaitable subscribe, receive, batches, iteration, cancellation, wake-ups."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
import warnings
from datetime import timedelta

import pytest


def test_publish_is_a_coroutine_and_receive_gets_the_message(k):
    _, pub, sub = k.setup()

    async def main():
        await sub.subscribe("orders")
        result = pub.publish("orders", [k.Message(b"hi")])
        # a coroutine as asyncio sees it (the compiled engine's is not a types.CoroutineType)
        assert asyncio.iscoroutine(result)
        assert inspect.isawaitable(result)
        assert await result is None
        # so create_task accepts it, as it would a coroutine function's result
        assert await asyncio.create_task(pub.publish("other", [b"x"])) is None
        got = await sub.receive()
        return got

    got = k.run(main())
    assert (got.payload, got.topic, got.sequence) == (b"hi", "orders", 1)


def test_publish_with_timeout_arguments(k):
    _, pub, sub = k.setup()

    async def main():
        sub.subscribe("t")
        await pub.publish("t", [b"1"], timeout=1)
        await pub.publish("t", [b"2"], timeout=timedelta(seconds=1))
        await pub.publish("t", [b"3"], None)
        return [m.payload for m in await sub.receive_batch(10, timeout=1)]

    assert k.run(main()) == [b"1", b"2", b"3"]


def test_subscribe_awaited_and_plain_both_work_without_warnings(k):
    broker, pub, _ = k.setup()
    plain = k.InMemorySubscriber(broker)
    awaited = k.InMemorySubscriber(broker)

    async def main():
        plain.subscribe("t")  # not awaited: must still take effect, with no warning
        await awaited.subscribe("t")
        assert await awaited.subscribe("t") is None  # twice: a no-op
        await pub.publish("t", [b"x"])
        a = await plain.receive(timeout=1)
        b = await awaited.receive(timeout=1)
        plain.unsubscribe("t")
        await awaited.unsubscribe("t")
        await plain.close()
        awaited.close()
        return a, b

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b = k.run(main())
        gc.collect()
    assert a.payload == b.payload == b"x"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [
        str(w.message) for w in caught
    ]
    assert broker.topic_info("t").subscriber_count == 0


@pytest.mark.parametrize("method", ["subscribe", "unsubscribe", "close"])
def test_non_waiting_calls_return_completed_awaitables(k, method):
    _, _, sub = k.setup(subscribe="t")
    args = ("t",) if method != "close" else ()
    result = getattr(sub, method)(*args)
    assert not inspect.iscoroutine(result)
    assert inspect.isawaitable(result)

    async def main():
        return await result

    assert k.run(main()) is None
    # Awaiting a completed result again is harmless.
    assert k.run(main()) is None


def test_receive_timeout_raises_builtin_timeout_error(k):
    _, _, sub = k.setup(subscribe="t")

    async def main():
        with pytest.raises(TimeoutError) as first:
            await sub.receive(timeout=0.05)
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=timedelta(milliseconds=20))
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=0)
        with pytest.raises(TimeoutError):
            await sub.receive_batch(5, timeout=0.05)
        return first.value

    error = k.run(main())
    assert isinstance(error, TimeoutError)


def test_receive_timeout_loses_no_message_and_keeps_the_subscription(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        with pytest.raises(TimeoutError):
            await sub.receive(timeout=0.02)
        assert sub.is_subscribed()
        await pub.publish("t", [b"after timeout"])
        return await sub.receive(timeout=1)

    got = k.run(main())
    assert (got.payload, got.sequence) == (b"after timeout", 1)


def test_cancelled_receive_loses_no_message(k):
    broker, pub, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sub.is_subscribed()
        assert sub.subscribed_topics() == ["t"]
        await pub.publish("t", [b"kept"])
        await asyncio.sleep(0)
        return await sub.receive(timeout=1)

    got = k.run(main())
    assert (got.payload, got.sequence) == (b"kept", 1)
    assert broker.topic_info("t").subscriber_count == 1


def test_cancelled_receive_batch_loses_no_message(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive_batch(10))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pub.publish("t", [b"1", b"2"])
        return await sub.receive_batch(10, timeout=1)

    assert [m.payload for m in k.run(main())] == [b"1", b"2"]


def test_cancel_racing_a_publish_loses_no_message(k):
    """Publish and cancel in the same loop iteration: the message is still there afterwards."""
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        received = []
        for i in range(50):
            task = asyncio.ensure_future(sub.receive())
            await asyncio.sleep(0)
            pub.publish_nowait("t", [str(i).encode()])
            task.cancel()
            try:
                received.append(await task)
            except asyncio.CancelledError:
                pass
            while (m := sub.try_receive()) is not None:
                received.append(m)
        return received

    got = k.run(main())
    assert [m.sequence for m in got] == list(range(1, 51))


def test_wait_for_timeout_around_receive_loses_no_message(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.receive(), 0.02)
        await pub.publish("t", [b"x"])
        return await sub.receive(timeout=1)

    assert k.run(main()).payload == b"x"


def receive_while_a_thread_publishes(k, pub, payloads, receive):
    """Await ``receive()`` on a loop while a thread publishes ``payloads`` to 't' 50 ms later."""

    def publish_later():
        time.sleep(0.05)
        pub.publish_sync("t", payloads)

    async def main():
        worker = k.spawn(publish_later)
        got = await receive()
        worker.join(2)
        return got

    return k.run(main())


def test_async_receive_woken_by_a_publish_from_another_thread(k):
    _, pub, sub = k.setup(subscribe="t")
    got = receive_while_a_thread_publishes(
        k, pub, [b"from a thread"], lambda: sub.receive(timeout=3)
    )
    assert got.payload == b"from a thread"


def test_async_receive_batch_woken_by_a_publish_from_another_thread(k):
    _, pub, sub = k.setup(subscribe="t")
    got = receive_while_a_thread_publishes(
        k, pub, [b"a", b"b"], lambda: sub.receive_batch(10, timeout=3)
    )
    assert [m.payload for m in got + sub.try_receive_batch(10)] == [b"a", b"b"]


def test_async_receive_woken_by_a_publish_on_the_same_loop(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive(timeout=3))
        await asyncio.sleep(0.02)
        await pub.publish("t", [b"same loop"])
        return await task

    assert k.run(main()).payload == b"same loop"


def test_receivers_on_several_event_loops_at_once(k):
    broker, pub, _ = k.setup()
    subs = [k.InMemorySubscriber(broker) for _ in range(3)]
    for s in subs:
        s.subscribe("t")
    ready = threading.Barrier(len(subs) + 1, timeout=5)

    def run_loop(sub):
        async def main():
            ready.wait()
            return [m.payload for m in [await sub.receive(timeout=3) for _ in range(3)]]

        return asyncio.run(main())

    workers = [k.spawn(run_loop, s) for s in subs]
    ready.wait()
    time.sleep(0.05)
    for i in range(3):
        pub.publish_nowait("t", [str(i).encode()])
    for w in workers:
        assert w.join(5) == [b"0", b"1", b"2"]


def test_receive_batch_waits_for_one_then_returns_without_waiting_further(k):
    _, pub, sub = k.setup(subscribe="t")

    def publish_late():
        time.sleep(0.3)
        pub.publish_sync("t", [b"late"])

    async def main():
        await pub.publish("t", [b"1", b"2", b"3"])
        worker = k.spawn(publish_late)
        got = await sub.receive_batch(10, timeout=2)
        worker.join(2)
        late = await sub.receive(timeout=1)
        return got, late

    got, late = k.run(main())
    assert [m.payload for m in got] == [b"1", b"2", b"3"]
    assert late.payload == b"late"


def test_receive_batch_respects_max(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        await pub.publish("t", [str(i).encode() for i in range(5)])
        first = await sub.receive_batch(2)
        second = await sub.receive_batch(2, timeout=1)
        third = await sub.receive_batch(2, timeout=1)
        return first, second, third

    first, second, third = k.run(main())
    assert [m.sequence for m in first] == [1, 2]
    assert [m.sequence for m in second] == [3, 4]
    assert [m.sequence for m in third] == [5]


def test_async_for_ends_when_the_broker_shuts_down(k):
    broker, pub, sub = k.setup(subscribe="t")

    async def main():
        async def consume():
            return [m.payload async for m in sub]

        task = asyncio.ensure_future(consume())
        await pub.publish("t", [b"1", b"2"])
        await asyncio.sleep(0.02)
        await pub.publish("t", [b"3"])
        broker.shutdown()
        return await task

    assert k.run(main()) == [b"1", b"2", b"3"]


def test_async_for_ends_when_shut_down_from_another_thread(k):
    broker, pub, sub = k.setup(subscribe="t")

    def stop_later():
        time.sleep(0.05)
        pub.publish_sync("t", [b"last"])
        broker.shutdown()

    async def main():
        worker = k.spawn(stop_later)
        got = [m.payload async for m in sub]
        worker.join(2)
        return got

    assert k.run(main()) == [b"last"]


def test_async_for_ends_when_closed(k):
    _, pub, sub = k.setup(subscribe="t")

    async def main():
        async def consume():
            return [m.payload async for m in sub]

        task = asyncio.ensure_future(consume())
        await pub.publish("t", [b"1"])
        await asyncio.sleep(0.02)
        await sub.close()
        return await task

    assert k.run(main()) == [b"1"]


def test_async_receive_on_a_never_subscribed_subscriber_raises_not_subscribed(k):
    _, _, sub = k.setup()

    async def main():
        with pytest.raises(k.NotSubscribed):
            await sub.receive()
        with pytest.raises(k.NotSubscribed):
            await sub.receive(timeout=0.05)
        with pytest.raises(k.NotSubscribed):
            await sub.receive_batch(5, timeout=0.05)

    k.run(main())


def test_async_receive_ends_with_not_subscribed_when_unsubscribed_meanwhile(k):
    _, _, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive(timeout=3))
        await asyncio.sleep(0.02)
        sub.unsubscribe("t")
        with pytest.raises(k.NotSubscribed):
            await task

    k.run(main())


def test_async_receive_from_several_topics(k):
    _, pub, sub = k.setup()

    async def main():
        await sub.subscribe("a")
        await sub.subscribe("b")
        task = asyncio.ensure_future(sub.receive(timeout=3))
        await asyncio.sleep(0.02)
        await pub.publish("b", [b"on b"])
        return await task

    got = k.run(main())
    assert (got.topic, got.payload) == ("b", b"on b")


def test_publish_sync_from_a_thread_while_a_loop_receives_many(k):
    _, pub, sub = k.setup(subscribe="t")

    def produce():
        for i in range(300):
            pub.publish_sync("t", [str(i).encode()])

    async def main():
        worker = k.spawn(produce)
        got = []
        while len(got) < 300:
            got.extend(await sub.receive_batch(50, timeout=3))
        worker.join(3)
        return got

    got = k.run(main())
    assert [m.sequence for m in got] == list(range(1, 301))
