"""The pytest plugin runs ``async def`` tests that use kincir on an asyncio event loop of its
own, with no async plugin installed, and leaves the tests that pytest-asyncio or anyio run to
them (each case in a child pytest)."""

from __future__ import annotations

import importlib.util

import pytest
from test_pytest_plugin import run

pytest_plugins = ["pytester"]

ASYNC_TESTS = """
import asyncio
import pytest
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber

async def test_waits_for_a_message(kincir_broker):
    sub = InMemorySubscriber(kincir_broker)
    await sub.subscribe("t")
    waiting = asyncio.create_task(sub.receive())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await InMemoryPublisher(kincir_broker).publish("t", [b"x"])
    assert (await asyncio.wait_for(waiting, 5)).payload == b"x"

@pytest.mark.kincir
async def test_marked_without_the_fixture():
    async with InMemoryBroker() as broker:
        sub = InMemorySubscriber(broker)
        sub.subscribe("t")
        await InMemoryPublisher(broker).publish("t", [1])
        assert (await sub.receive(timeout=5)).payload == 1

@pytest.fixture
def orders(kincir_broker):  # uses kincir_broker: tests that ask for it are run too
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("orders")
    return sub

async def test_through_a_fixture_of_the_project(orders):
    InMemoryPublisher(orders.broker).publish_nowait("orders", [1, 2])
    assert [m.payload for m in await orders.receive_batch(5)] == [1, 2]

async def test_leaves_a_receive_waiting(kincir_broker):
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("idle")
    asyncio.get_running_loop().create_task(sub.receive())  # cancelled when the test ends
    await asyncio.sleep(0)

async def test_fails(kincir_broker):
    await asyncio.sleep(0)
    assert False, "an async failure"

async def test_leaves_a_message(kincir_broker):
    await InMemoryPublisher(kincir_broker).publish("orders", [b"x"])

@pytest.mark.parametrize("n", [1, 2])
async def test_parametrized(kincir_broker, n):
    assert asyncio.get_running_loop().is_running()

def test_sync_tests_stay_sync(kincir_broker):
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
"""

NOT_OURS = """
async def test_without_kincir():
    pass
"""


def test_runs_async_tests_without_an_async_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_async_app=ASYNC_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=8, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*an async failure*"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_a_message*"])
    result.stdout.fnmatch_lines(["*messages left undelivered*'orders': 1*"])


def test_leaves_other_async_tests_to_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_not_ours=NOT_OURS)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
    assert result.parseoutcomes().get("passed", 0) == 0


def test_each_test_has_a_fresh_loop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_loops="""
        import asyncio
        seen = []

        async def test_one(kincir_broker):
            seen.append(asyncio.get_running_loop())

        async def test_two(kincir_broker):
            seen.append(asyncio.get_running_loop())
            assert seen[0] is not seen[1]
            assert seen[0].is_closed()
        """
    )
    run(pytester).assert_outcomes(passed=2)


needs_pytest_asyncio = pytest.mark.skipif(
    importlib.util.find_spec("pytest_asyncio") is None, reason="pytest-asyncio is not installed"
)

# Under pytest-asyncio with a module-scoped loop both tests see one loop; the kincir plugin
# would give each its own.
PYTEST_ASYNCIO = """
import asyncio
import pytest
from kincir.memory import InMemoryPublisher, InMemorySubscriber

seen = []

@pytest.mark.asyncio(loop_scope="module")
async def test_one(kincir_broker):
    seen.append(asyncio.get_running_loop())

@pytest.mark.asyncio(loop_scope="module")
async def test_two(kincir_broker):
    seen.append(asyncio.get_running_loop())
    assert seen[0] is seen[1]
    sub = InMemorySubscriber(kincir_broker)
    sub.subscribe("t")
    waiting = asyncio.create_task(sub.receive())
    await InMemoryPublisher(kincir_broker).publish("t", [1])
    assert (await waiting).payload == 1

async def test_unmarked_is_run_by_kincir(kincir_broker):
    assert asyncio.get_running_loop() is not seen[0]
"""


@needs_pytest_asyncio
def test_leaves_marked_tests_to_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_with_pytest_asyncio=PYTEST_ASYNCIO)
    run(pytester, "-p", "asyncio", "-p", "no:anyio").assert_outcomes(passed=3)


@needs_pytest_asyncio
def test_leaves_every_async_test_to_pytest_asyncio_in_auto_mode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "asyncio_default_test_loop_scope = module\n"
    )
    pytester.makepyfile(
        test_auto="""
        import asyncio
        seen = []

        async def test_one(kincir_broker):
            seen.append(asyncio.get_running_loop())

        async def test_two(kincir_broker):
            seen.append(asyncio.get_running_loop())
            assert seen[0] is seen[1]
        """
    )
    run(pytester, "-p", "asyncio", "-p", "no:anyio").assert_outcomes(passed=2)
