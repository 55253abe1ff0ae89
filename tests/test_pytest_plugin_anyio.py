"""kincir under anyio: on its asyncio backend everything works; on trio only the awaits that
finish at once do, and the waits go through threads (README, "Testing"). Each case in a child
pytest with anyio's plugin, which runs these tests: the kincir plugin leaves them to it."""

from __future__ import annotations

import pytest
from test_pytest_plugin import run

pytest_plugins = ["pytester"]

pytest.importorskip("anyio")

ON_ASYNCIO = """
import asyncio
import anyio
import pytest
from kincir.memory import InMemoryPublisher, InMemorySubscriber

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

async def test_waits_in_a_task_group(kincir_broker):
    assert asyncio.current_task() is not None
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    got = []

    async def consume():
        got.append((await sub.receive()).payload)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.01)
        assert got == []
        await InMemoryPublisher(kincir_broker).publish("t", [1])
    assert got == [1]

async def test_cancelled_receive_takes_nothing(kincir_broker):
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    with anyio.move_on_after(0.02) as scope:
        await sub.receive()
    assert scope.cancelled_caught
    InMemoryPublisher(kincir_broker).publish_nowait("t", [2])
    assert (await sub.receive(timeout=5)).payload == 2

async def test_receive_timeout(kincir_broker):
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    with pytest.raises(TimeoutError):
        await sub.receive(timeout=0.01)
"""

ON_TRIO = """
import threading
import warnings
import anyio
import pytest
import trio
from kincir import Router
from kincir.memory import (
    InMemoryAckSubscriber, InMemoryBroker, InMemoryPublisher, InMemorySubscriber
)

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "trio"

@pytest.fixture
def sub(kincir_broker):
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    return sub

async def test_runs_on_trio(kincir_broker):
    trio.lowlevel.current_task()  # raises outside trio

async def test_awaits_that_finish_at_once(kincir_broker, sub):
    pub = InMemoryPublisher(kincir_broker)
    await pub.publish("t", [1, 2, 3])
    assert (await sub.receive()).payload == 1
    assert (await sub.receive(timeout=1)).payload == 2
    assert [m.payload for m in await sub.receive_batch(5)] == [3]
    acker = InMemoryAckSubscriber(kincir_broker)
    await acker.subscribe("jobs")
    await pub.publish("jobs", ["job"])
    msg, handle = await acker.receive_with_ack()
    await acker.ack(handle)

async def test_a_receive_that_waits_needs_an_asyncio_loop(kincir_broker, sub):
    with pytest.raises(RuntimeError, match="no running event loop"):
        await sub.receive()
    with pytest.raises(RuntimeError, match="no running event loop"):
        await sub.receive(timeout=1)
    with pytest.raises(RuntimeError, match="no running event loop"):
        await sub.receive_batch(5)
    with pytest.raises(RuntimeError, match="no running event loop"):
        async for msg in sub:
            pass
    acker = InMemoryAckSubscriber(kincir_broker)
    acker.subscribe("jobs")
    with pytest.raises(RuntimeError, match="no running event loop"):
        await acker.receive_with_ack()

async def test_a_publish_that_may_wait_needs_an_asyncio_loop(kincir_broker, sub):
    pub = InMemoryPublisher(kincir_broker)
    # with a timeout the compiled engine enters asyncio.timeout before it looks for room (and
    # leaves the publish it wraps unawaited: RuntimeWarning); the twin publishes first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            await pub.publish("t", [0], timeout=1)
        except RuntimeError as exc:
            assert "no running event loop" in str(exc)
            assert sub.try_receive() is None  # nothing published
        else:
            assert sub.try_receive().payload == 0
    kincir_broker.configure_topic("t", max_queue_size=1, overflow="block")
    await pub.publish("t", [1])
    with pytest.raises(RuntimeError, match="no running event loop"):
        await pub.publish("t", [2])  # full: waits for room
    assert [m.payload for m in sub.try_receive_batch(5)] == [1]  # nothing of it published

async def test_a_draining_shutdown_needs_an_asyncio_loop():
    broker = InMemoryBroker()
    sub = InMemorySubscriber(broker)
    sub.subscribe("t")
    InMemoryPublisher(broker).publish_nowait("t", [1])
    with pytest.raises(RuntimeError, match="no running event loop"):
        await broker.shutdown_async(1)  # sleeps on asyncio between its looks
    broker.force_shutdown()

async def test_a_router_runs_asyncio_tasks(kincir_broker):
    async def handle(msg):
        return msg.payload

    router = Router(kincir_broker, "in", "out", handle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((RuntimeError, TypeError)):  # trio refuses the asyncio future
            await router.run()

async def test_waits_through_a_thread(kincir_broker, sub):
    pub = InMemoryPublisher(kincir_broker)
    kincir_broker.configure_topic("t", max_queue_size=1, overflow="block")

    async def produce():
        for n in range(3):
            await anyio.to_thread.run_sync(pub.publish_sync, "t", [n], 5)

    got = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        for _ in range(3):
            got.append((await anyio.to_thread.run_sync(sub.receive_sync, 5)).payload)
    assert got == [0, 1, 2]

async def test_a_cancelled_thread_wait_hands_the_message_back(kincir_broker, sub):
    pub = InMemoryPublisher(kincir_broker)
    threading.Timer(0.1, pub.publish_nowait, ("t", [1])).start()
    got = None
    with anyio.move_on_after(0.01):
        got = await anyio.to_thread.run_sync(sub.receive_sync, 5)  # the thread is not abandoned
    assert got.payload == 1
"""


def test_on_anyio_asyncio_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_on_asyncio=ON_ASYNCIO)
    run(pytester, "-p", "anyio", "-p", "no:asyncio").assert_outcomes(passed=3)


def test_on_trio(pytester: pytest.Pytester) -> None:
    pytest.importorskip("trio")
    pytester.makepyfile(test_on_trio=ON_TRIO)
    run(pytester, "-p", "anyio", "-p", "no:asyncio").assert_outcomes(passed=8)
