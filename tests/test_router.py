"""Router: consume -> handler -> publish, with concurrency, ack strategies, retries and stats."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest


def collect(sub, n, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out.append(sub.receive_sync(timeout=max(0.01, deadline - time.monotonic())))
    return out


pytestmark = pytest.mark.usefixtures("quiet_router_log")


def pipeline(k, handler, **kwargs):
    broker = k.new_broker(enable_stats=True)
    out = k.subscriber(broker, "out")
    router = k.Router(broker, "in", "out", handler, **kwargs)
    return broker, k.InMemoryPublisher(broker), out, router


def test_sync_handler_transforms_and_publishes(k):
    _broker, pub, out, router = pipeline(k, lambda m: [m.payload.upper(), m.payload])
    with router:
        pub.publish_nowait("in", [b"a", b"b"])
        got = collect(out, 4)
    assert [m.payload for m in got] == [b"A", b"a", b"B", b"b"]
    stats = router.stats()
    assert (stats.processed, stats.succeeded, stats.acked, stats.published) == (2, 2, 2, 4)
    assert stats.mean_processing_time >= 0.0
    assert not router.is_running()


@pytest.mark.parametrize("result", [None, [], ()])
def test_handler_returning_nothing_publishes_nothing(k, result):
    broker, pub, out, router = pipeline(k, lambda m: result)
    with router:
        pub.publish_nowait("in", [b"a"])
        k.wait_for(lambda: router.stats().acked == 1)
    assert out.try_receive() is None
    assert broker.topic_info("in").queue_size == 0


def test_handler_returning_one_message_or_payload(k):
    _broker, pub, out, router = pipeline(
        k, lambda m: k.Message(b"msg") if m.payload == b"1" else b"raw"
    )
    with router:
        pub.publish_nowait("in", [b"1", b"2"])
        assert [m.payload for m in collect(out, 2)] == [b"msg", b"raw"]


def test_a_failing_handler_is_retried_then_dead_lettered_and_the_router_lives(k):
    attempts: dict[bytes, int] = {}

    def handler(m):
        attempts[m.payload] = attempts.get(m.payload, 0) + 1
        if m.payload == b"poison":
            raise ValueError("cannot handle")
        return [m.payload]

    broker, pub, out, router = pipeline(k, handler, max_deliveries=3, dead_letter_topic="dlq")
    dlq = k.subscriber(broker, "dlq")
    with router:
        pub.publish_nowait("in", [b"ok1", b"poison", b"ok2"])
        assert sorted(m.payload for m in collect(out, 2)) == [b"ok1", b"ok2"]
        letter = dlq.receive_sync(timeout=5)
    assert letter.payload == b"poison"
    assert letter.metadata["_delivery_count"] == "3"
    assert attempts[b"poison"] == 3
    stats = router.stats()
    assert stats.failed == 3
    assert stats.nacked == 3
    assert stats.retries_exhausted == 1
    assert stats.acked == 2
    assert broker.stats().messages_dead_lettered() == 1


def test_bad_handler_result_counts_as_a_failure(k):
    # any object is an output; one the broker's codec cannot encode is a failure
    broker = k.new_broker(enable_stats=True, codec=k.modules["kincir.codecs"].JsonCodec())
    router = k.Router(broker, "in", "out", lambda m: object(), max_deliveries=1)
    pub = k.InMemoryPublisher(broker)
    with router:
        pub.publish_nowait("in", ["a"])
        k.wait_for(lambda: router.stats().failed == 1)
    assert router.stats().retries_exhausted == 1


def test_concurrency_runs_handlers_in_parallel_threads(k):
    active = 0
    peak = 0
    lock = threading.Lock()

    def handler(m):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return [m.payload]

    _broker, pub, out, router = pipeline(k, handler, concurrency=4)
    with router:
        pub.publish_nowait("in", [bytes([i]) for i in range(8)])
        got = collect(out, 8)
    assert sorted(m.payload for m in got) == [bytes([i]) for i in range(8)]
    assert peak > 1


def test_processing_timeout_nacks_and_counts(k):
    calls = []

    def handler(m):
        calls.append(m.payload)
        if len(calls) == 1:
            time.sleep(0.3)
        return [m.payload]

    _broker, pub, out, router = pipeline(k, handler, processing_timeout=0.05)
    with router:
        pub.publish_nowait("in", [b"slow"])
        assert out.receive_sync(timeout=5).payload == b"slow"  # the retry succeeds
    stats = router.stats()
    assert stats.timed_out == 1
    assert stats.nacked == 1
    assert stats.acked == 1


def run_failing_handler(k, ack_strategy, until):
    """Route one message to a handler that always raises, until ``router.stats().<until>`` is 1
    and a little longer (time for a retry that must not come)."""
    calls = []

    def handler(m):
        calls.append(m)
        raise RuntimeError("boom")

    broker, pub, _out, router = pipeline(k, handler, ack_strategy=ack_strategy)
    with router:
        pub.publish_nowait("in", [b"a"])
        k.wait_for(lambda: getattr(router.stats(), until) == 1)
        time.sleep(0.05)
    return broker, router, calls


def test_always_ack_never_retries(k):
    broker, _router, calls = run_failing_handler(k, k.AckStrategy.ALWAYS_ACK, "acked")
    assert len(calls) == 1
    assert broker.topic_info("in").queue_size == 0


def test_never_ack_reads_at_most_once(k):
    broker, router, calls = run_failing_handler(k, k.AckStrategy.NeverAck, "failed")
    assert len(calls) == 1
    stats = router.stats()
    assert (stats.acked, stats.nacked) == (0, 0)
    assert broker.topic_info("in").in_flight == 0


def test_manual_strategy_lets_the_handler_settle(k):
    def handler(m, delivery):
        assert delivery.message is m
        if delivery.handle.delivery_count == 1:
            delivery.nack()
            return None
        delivery.ack()
        return [m.payload + b"!"]

    _broker, pub, out, router = pipeline(k, handler, ack_strategy=k.AckStrategy.MANUAL)
    with router:
        pub.publish_nowait("in", [b"x"])
        assert out.receive_sync(timeout=5).payload == b"x!"
    stats = router.stats()
    assert (stats.acked, stats.nacked) == (1, 1)


def test_async_handler_under_run(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")

    async def handler(m):
        await asyncio.sleep(0)
        return [m.payload * 2]

    router = k.Router(broker, "in", "out", handler, concurrency=3)

    async def main():
        task = asyncio.create_task(router.run())
        await k.InMemoryPublisher(broker).publish("in", [b"a", b"b", b"c"])
        got = [await out.receive(timeout=5) for _ in range(3)]
        router.stop()
        await asyncio.wait_for(task, 5)
        return sorted(m.payload for m in got)

    assert k.run(main()) == [b"aa", b"bb", b"cc"]
    assert router.stats().processed == 3


def test_async_handler_timeout_and_failure(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    seen = []

    async def handler(m):
        seen.append(m.payload)
        if m.payload == b"slow" and seen.count(b"slow") == 1:
            await asyncio.sleep(1)
        if m.payload == b"bad":
            raise ValueError("bad")
        return [m.payload]

    router = k.Router(broker, "in", "out", handler, processing_timeout=0.05, max_deliveries=2)
    router.start()  # a coroutine handler on a loop of the router's own thread
    k.InMemoryPublisher(broker).publish_nowait("in", [b"slow", b"bad", b"fine"])
    got = collect(out, 2)
    k.wait_for(lambda: router.stats().retries_exhausted == 1)
    assert router.stop(timeout=5)
    assert sorted(m.payload for m in got) == [b"fine", b"slow"]
    stats = router.stats()
    assert stats.timed_out == 1
    assert stats.failed == 2


def test_sync_handler_under_run_uses_threads(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    threads = set()

    def handler(m):
        threads.add(threading.get_ident())
        return [m.payload]

    router = k.Router(broker, "in", "out", handler)

    async def main():
        task = asyncio.create_task(router.run())
        await k.InMemoryPublisher(broker).publish("in", [b"1"])
        msg = await out.receive(timeout=5)
        router.stop()
        await task
        return msg.payload

    assert k.run(main()) == b"1"
    assert threading.get_ident() not in threads


def test_stop_drains_the_message_in_hand_and_leaves_the_rest(k):
    started = threading.Event()
    release = threading.Event()

    def handler(m):
        started.set()
        release.wait(5)
        return [m.payload]

    broker, pub, out, router = pipeline(k, handler)
    router.start()
    pub.publish_nowait("in", [b"1", b"2", b"3"])
    assert started.wait(5)
    stopper = k.spawn(router.stop, 5)
    time.sleep(0.05)
    release.set()
    assert stopper.join() is True
    assert [m.payload for m in collect(out, 1)] == [b"1"]
    assert out.try_receive() is None
    assert broker.topic_info("in").queue_size == 2  # held for the group
    # a restart picks up where it stopped
    with router:
        assert [m.payload for m in collect(out, 2)] == [b"2", b"3"]


def test_two_routers_in_one_group_share_the_stream(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    r1 = k.Router(broker, "in", "out", lambda m: [b"r1"], group="workers")
    r2 = k.Router(broker, "in", "out", lambda m: [b"r2"], group="workers")
    with r1, r2:
        k.InMemoryPublisher(broker).publish_nowait("in", [b"x"] * 40)
        got = collect(out, 40)
    assert len(got) == 40
    assert r1.stats().processed + r2.stats().processed == 40


def test_router_ends_when_the_broker_shuts_down(k):
    broker, pub, _out, router = pipeline(k, lambda m: None)
    router.start()
    pub.publish_nowait("in", [b"1"])
    k.wait_for(lambda: router.stats().acked == 1)
    broker.shutdown()
    assert router.stop(timeout=5)


def test_invalid_arguments(k):
    broker = k.new_broker()
    with pytest.raises(TypeError):
        k.Router(broker, "in", "out", "not callable")
    with pytest.raises(ValueError):
        k.Router(broker, "in", "out", print, concurrency=0)
    with pytest.raises(TypeError):
        k.Router(broker, "in", "out", print, ack_strategy="manual")
    with pytest.raises(ValueError):
        k.Router(broker, "in", "out", print, processing_timeout=0)
    with pytest.raises(k.InvalidConfig):
        k.Router(broker, "in", "out", print, max_deliveries=0)
    with pytest.raises(TypeError):
        k.Router(object(), "in", "out", print)
    router = k.Router(broker, "in", "out", print)
    router.start()
    with pytest.raises(RuntimeError):
        router.start()
    router.stop()
    with pytest.raises(k.InvalidTopicName):
        k.Router(broker, "bad topic", "out", print)
    with pytest.raises(k.InvalidTopicName):
        k.Router(broker, "in", "a..b", print)
    with pytest.raises(k.InvalidTopicName):
        k.Router(broker, "a.>.b", "out", print)


def test_handler_returning_messages_without_output_topic_fails_the_message(k):
    broker = k.new_broker()
    router = k.Router(broker, "in", None, lambda m: [b"x"], max_deliveries=1)
    with router:
        k.InMemoryPublisher(broker).publish_nowait("in", [b"a"])
        k.wait_for(lambda: router.stats().failed == 1)
    sink = k.Router(broker, "in2", None, lambda m: None)
    with sink:
        k.InMemoryPublisher(broker).publish_nowait("in2", [b"a"])
        k.wait_for(lambda: sink.stats().acked == 1)
