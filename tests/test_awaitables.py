"""``publish()`` and ``receive()`` behave as coroutines do, on both engines: they act only when
awaited, asyncio accepts them anywhere it takes a coroutine, and cancelling one loses nothing."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest


def setup(k):
    broker = k.new_broker()
    pub, sub = k.InMemoryPublisher(broker), k.InMemorySubscriber(broker)
    sub.subscribe("t")
    return broker, pub, sub


def test_a_publish_acts_only_when_awaited(k):
    broker, pub, sub = setup(k)
    pending = pub.publish("t", [b"never"])
    assert asyncio.iscoroutine(pending)
    pending.close()  # dropped without being awaited
    assert sub.try_receive() is None
    assert broker.topic_info("t").total_published == 0


def test_a_receive_acts_only_when_awaited(k):
    _, pub, sub = setup(k)
    pub.publish_nowait("t", [b"kept"])
    pending = sub.receive()
    assert asyncio.iscoroutine(pending)
    pending.close()
    assert sub.try_receive().payload == b"kept"


def _dropped_unawaited(make):
    """Make an awaitable, drop it unawaited, and return the warnings that raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pending = make()
        del pending
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_publish_never_awaited_warns_as_a_coroutine_does(k):
    # A forgotten ``await`` publishes nothing: both engines must say so, the way CPython does
    # for a coroutine that never ran, instead of losing the message silently.
    broker, pub, sub = setup(k)
    said = _dropped_unawaited(lambda: pub.publish("t", [b"lost"]))
    assert said == ["coroutine 'PublisherCore.publish' was never awaited"]
    assert sub.try_receive() is None
    assert broker.topic_info("t").total_published == 0


def test_a_receive_never_awaited_warns_as_a_coroutine_does(k):
    _, pub, sub = setup(k)
    pub.publish_nowait("t", [b"kept"])
    said = _dropped_unawaited(sub.receive)
    assert said == ["coroutine 'SubscriberCore.receive' was never awaited"]
    assert sub.try_receive().payload == b"kept"


def test_an_awaited_or_closed_publish_does_not_warn(k):
    _, pub, sub = setup(k)

    async def main():
        await pub.publish("t", [b"sent"])
        await sub.receive()

    assert _dropped_unawaited(lambda: asyncio.run(main())) == []
    assert _dropped_unawaited(lambda: pub.publish("t", [b"x"]).close()) == []
    assert _dropped_unawaited(lambda: sub.receive().close()) == []


def test_create_task_and_gather_take_them(k):
    _, pub, sub = setup(k)

    async def main():
        receiving = asyncio.create_task(sub.receive())
        await asyncio.sleep(0)
        await asyncio.gather(pub.publish("t", [b"a"]), pub.publish("t", [b"b"]))
        first = await receiving
        second = await asyncio.ensure_future(sub.receive())
        return first.payload, second.payload

    assert k.run(main()) == (b"a", b"b")


def test_a_receive_task_cancelled_while_waiting_loses_nothing(k):
    broker, pub, sub = setup(k)

    async def main():
        for _ in range(50):  # many cancelled waits must not leave waiters behind
            task = asyncio.create_task(sub.receive())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await pub.publish("t", [b"after"])
        return await sub.receive()

    assert k.run(main()).payload == b"after"
    assert broker.topic_info("t").total_consumed == 1


def test_a_receive_task_cancelled_before_it_ran_consumes_nothing(k):
    _, pub, sub = setup(k)
    pub.publish_nowait("t", [b"still here"])

    async def main():
        task = asyncio.create_task(sub.receive())
        task.cancel()  # before its first step
        with pytest.raises(asyncio.CancelledError):
            await task
        return sub.try_receive()

    assert k.run(main()).payload == b"still here"


def test_awaiting_the_same_receive_twice_is_an_error(k):
    _, pub, sub = setup(k)
    pub.publish_nowait("t", [b"x"])

    async def main():
        pending = sub.receive()
        await pending
        with pytest.raises(RuntimeError):
            await pending

    k.run(main())


def test_wait_for_times_out_and_the_next_receive_works(k):
    _, pub, sub = setup(k)

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.receive(), 0.05)
        await pub.publish("t", [b"late"])
        return await asyncio.wait_for(sub.receive(), 1.0)

    assert k.run(main()).payload == b"late"


def test_a_failing_publish_raises_when_awaited(k):
    _, pub, _ = setup(k)

    async def main():
        pending = pub.publish("t", 123)
        with pytest.raises(TypeError, match="messages must be a list"):
            await pending

    k.run(main())


def test_throw_normalises_its_arguments_like_a_coroutine(k):
    _, _, sub = setup(k)

    async def main():
        for args, expected in (
            ((ValueError, "boom"), ValueError("boom")),
            ((ValueError,), ValueError()),
            ((KeyError("k"),), KeyError("k")),
        ):
            pending = sub.receive()
            pending.send(None)  # now waiting: nothing is queued
            with pytest.raises(type(expected)) as raised, warnings.catch_warnings():
                # throw(type, value) is deprecated from 3.12 on; it still has to work
                warnings.simplefilter("ignore", DeprecationWarning)
                pending.throw(*args)
            assert raised.value.args == expected.args

    k.run(main())


def test_a_bad_receive_timeout_raises_when_awaited(k):
    _, pub, sub = setup(k)
    pub.publish_nowait("t", [b"kept"])

    async def main():
        pending = sub.receive(timeout=-1)
        with pytest.raises(ValueError):
            await pending
        return await sub.receive(timeout=1)

    assert k.run(main()).payload == b"kept"
