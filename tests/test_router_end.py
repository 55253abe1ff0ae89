"""End of stream through a pipeline: a router whose input topic was closed (``close_topic``) and
whose workers settled everything closes its output topic, so the end flows down; ``join`` and
``wait_closed`` return when it did (True), or when the router was stopped first (False)."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytestmark = pytest.mark.usefixtures("quiet_router_log")

N = 300


def read_to_the_end(sub):
    """Every payload ``sub`` receives, until its input ends (iteration stops)."""
    return [msg.payload for msg in sub]


def numbers(n=N):
    return [str(i).encode() for i in range(n)]


def test_the_end_flows_down_a_three_stage_pipeline(k):
    # source -> A (3 workers, per message) -> B (2 workers, batches of 8) -> sink
    broker = k.new_broker()
    sink = k.subscriber(broker, "out")
    a = k.Router(broker, "src", "mid", lambda m: [m.payload + b"a"], concurrency=3)
    b = k.Router(
        broker, "mid", "out", lambda ms: [m.payload + b"b" for m in ms], concurrency=2, batch_size=8
    )
    with b, a:
        reader = k.spawn(read_to_the_end, sink)
        pub = k.InMemoryPublisher(broker)
        pub.publish_nowait("src", numbers())
        pub.close_topic("src")
        assert a.join(timeout=10) is True
        assert b.join(timeout=10) is True
        got = reader.join(10)
    assert sorted(got) == sorted(p + b"ab" for p in numbers())
    assert (a.stats().acked, b.stats().acked) == (N, N)
    with pytest.raises(k.TopicClosed):
        pub.publish_nowait("out", [b"late"])  # B closed its output
    assert a.join() is True  # the ended run answers at once, after the stop too


def test_the_end_waits_for_retries_and_the_batches_in_hand(k):
    failed_once = set()
    lock = threading.Lock()

    def flaky(msgs):
        with lock:
            fresh = [m.payload for m in msgs if m.payload not in failed_once]
            if fresh:
                failed_once.update(fresh)
                raise RuntimeError("first delivery fails")
        return [m.payload for m in msgs]

    broker = k.new_broker()
    sink = k.subscriber(broker, "out")
    router = k.Router(broker, "in", "out", flaky, batch_size=4, concurrency=2)
    pub = k.InMemoryPublisher(broker)
    with router:
        pub.publish_nowait("in", numbers(40))
        pub.close_topic("in")
        assert router.join(timeout=10) is True
    assert sorted(read_to_the_end(sink)) == sorted(numbers(40))  # ends: the output is closed
    stats = router.stats()
    assert stats.retried >= 1 and stats.acked == 40


def test_a_never_ack_router_ends_too(k):
    broker = k.new_broker()
    sink = k.subscriber(broker, "out")
    router = k.Router(
        broker, "in", "out", lambda m: m, concurrency=2, ack_strategy=k.AckStrategy.NEVER_ACK
    )
    pub = k.InMemoryPublisher(broker)
    with router:
        pub.publish_nowait("in", numbers(50))
        pub.close_topic("in")
        assert router.join(timeout=10) is True
    assert sorted(read_to_the_end(sink)) == sorted(numbers(50))


def test_a_sink_router_without_output_ends(k):
    broker = k.new_broker()
    seen = []
    router = k.Router(broker, "in", None, lambda m: seen.append(m.payload))
    with router:
        pub = k.InMemoryPublisher(broker)
        pub.publish_nowait("in", [b"1", b"2"])
        pub.close_topic("in")
        assert router.join(timeout=10) is True
    assert seen == [b"1", b"2"]


def test_join_is_false_when_the_router_is_stopped_first(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    router = k.Router(broker, "in", "out", lambda m: m).start()
    done = k.spawn(router.join, 10)
    router.stop()
    assert done.join(5) is False
    assert router.join() is False  # the stopped run answers at once
    k.InMemoryPublisher(broker).publish_nowait("out", [b"open"])  # the output was not closed
    assert out.receive_sync(timeout=5).payload == b"open"


def test_join_times_out_while_the_input_is_open(k):
    broker = k.new_broker()
    router = k.Router(broker, "in", None, lambda m: None)
    with router, pytest.raises(TimeoutError):
        router.join(timeout=0.05)


def test_a_restarted_router_waits_for_its_new_run(k):
    broker = k.new_broker()
    router = k.Router(broker, "in", None, lambda m: None)
    router.start()
    router.stop()
    assert router.join() is False
    with router:
        waiter = k.spawn(router.join, 10)
        k.InMemoryPublisher(broker).close_topic("in")
        assert waiter.join(10) is True


def test_the_end_flows_through_coroutine_routers_and_run_returns(k):
    broker = k.new_broker()
    sink = k.subscriber(broker, "out")

    async def double(m):
        await asyncio.sleep(0)
        return [m.payload * 2]

    async def upper(ms):
        return [m.payload.upper() for m in ms]

    a = k.Router(broker, "src", "mid", double, concurrency=3)
    b = k.Router(broker, "mid", "out", upper, concurrency=2, batch_size=5)

    async def main():
        runs = [asyncio.create_task(b.run()), asyncio.create_task(a.run())]
        pub = k.InMemoryPublisher(broker)
        while not (a.is_running() and b.is_running()):
            await asyncio.sleep(0.005)
        await pub.publish("src", [b"x", b"y", b"z"])
        await pub.close_topic("src")
        assert await a.wait_closed(timeout=10) is True
        assert await b.wait_closed(timeout=10) is True
        await asyncio.wait_for(asyncio.gather(*runs), 5)  # run() returns at the end
        return [m.payload async for m in sink]

    assert sorted(k.run(main())) == [b"XX", b"YY", b"ZZ"]
    assert not a.is_running() and not b.is_running()


def test_wait_closed_is_false_when_run_is_stopped(k):
    broker = k.new_broker()

    async def handler(m):
        return None

    router = k.Router(broker, "in", None, handler)

    async def main():
        task = asyncio.create_task(router.run())
        waiting = asyncio.create_task(router.wait_closed())
        while not router.is_running():
            await asyncio.sleep(0.005)
        router.stop()
        await asyncio.wait_for(task, 5)
        result = await asyncio.wait_for(waiting, 5)
        with pytest.raises(TimeoutError):
            await k.Router(broker, "other", None, handler).wait_closed(timeout=0.01)
        return result

    assert k.run(main()) is False


def test_the_end_reaches_a_reader_of_an_output_that_did_not_exist_yet(k):
    broker = k.new_broker()
    router = k.Router(broker, "src", "out", lambda m: m.payload)
    with router:
        broker.close_topic("src")  # the router's subscription made it
        assert router.join(timeout=10) is True
    assert "out" in broker.list_topics()  # made to carry the end
    late = k.subscriber(broker, "out")
    assert list(late) == []
