"""Router under backpressure: stopping a worker that waits for room on its output, and holding
the input message of a blocked output without redelivering it (issue 12, items 13 and 14)."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time

import pytest

pytestmark = pytest.mark.usefixtures("quiet_router_log")


class Recorder:
    """A router handler that echoes each payload and records the calls."""

    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, msg):
        with self._lock:
            self.calls.append(msg.payload)
        return [msg.payload]

    def count(self):
        with self._lock:
            return len(self.calls)

    async def handle_async(self, msg):
        """The same, as a coroutine handler."""
        await asyncio.sleep(0)
        return self(msg)


def full_output(k, capacity=1, **broker_fields):
    """A broker whose 'out' topic holds ``capacity`` messages under the block policy, and a
    reader of 'out' that does not read until the test says so."""
    broker = k.new_broker(enable_stats=True, **broker_fields)
    broker.configure_topic("out", max_queue_size=capacity, overflow="block")
    out = k.subscriber(broker, "out")
    return broker, out


# -- item 13: stop() wakes a worker blocked on its output ----------------------------------------


def test_stop_wakes_a_worker_blocked_on_a_full_output(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler).start()
    k.InMemoryPublisher(broker).publish_nowait("in", [b"a", b"b"])
    k.wait_for(lambda: handler.count() == 2)  # b's output waits for room
    assert k.spawn(router.stop, 5).join(2) is True
    assert not router.is_running()
    # b's output was not published; b itself went back to the router's group
    assert k.receive_payloads(out, 1) == [b"a"]
    stats = router.stats()
    assert (stats.acked, stats.published, stats.nacked, stats.failed) == (1, 1, 0, 0)
    with router:
        assert k.receive_payloads(out, 1) == [b"b"]
        k.wait_for(lambda: router.stats().acked == 2)
    assert handler.calls == [b"a", b"b", b"b"]
    assert broker.topic_info("in").in_flight == 0


def test_leaving_with_router_returns_while_the_output_is_full(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler)

    def run_stage():
        with router:
            k.InMemoryPublisher(broker).publish_nowait("in", [b"a", b"b", b"c"])
            k.wait_for(lambda: handler.count() == 2)
        return router.is_running()

    assert k.spawn(run_stage).join(2) is False
    assert k.receive_payloads(out, 1) == [b"a"]
    with router:
        assert k.receive_payloads(out, 2) == [b"b", b"c"]


async def run_until_handled_twice(k, broker, router, handler):
    """Start ``router.run()`` as a task and publish a and b to it; the task, once the handler
    has been called for both (b's output then waits for room on a full 'out')."""
    task = asyncio.create_task(router.run())
    await k.InMemoryPublisher(broker).publish("in", [b"a", b"b"])
    while handler.count() < 2:
        await asyncio.sleep(0.005)
    return task


def test_stop_under_run_wakes_a_task_blocked_on_a_full_output(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler.handle_async)

    async def stage():
        task = await run_until_handled_twice(k, broker, router, handler)
        assert router.stop() is True  # no threads to wait for under run()
        await asyncio.wait_for(task, 2)

    k.run(stage())
    assert not router.is_running()
    assert k.receive_payloads(out, 1) == [b"a"]
    with router:  # the coroutine handler on the router's own loop thread
        assert k.receive_payloads(out, 1) == [b"b"]
    assert handler.calls == [b"a", b"b", b"b"]


def test_a_sync_handler_under_run_is_woken_too(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler)

    async def stage():
        task = await run_until_handled_twice(k, broker, router, handler)
        router.stop()
        await asyncio.wait_for(task, 2)

    k.run(stage())
    assert k.receive_payloads(out, 1) == [b"a"]


def test_cancelling_run_while_the_output_is_full_still_cancels(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler.handle_async)

    async def stage():
        task = await run_until_handled_twice(k, broker, router, handler)
        await asyncio.sleep(0.1)  # a few ticks of the wait for room
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    k.run(stage())
    assert not router.is_running()
    assert k.receive_payloads(out, 1) == [b"a"]


def test_a_stop_never_counts_as_a_failed_delivery(k):
    # the message handed back by a stop is redelivered even on its last allowed delivery:
    # stopping is not a failure, so it is neither dead-lettered nor dropped
    broker, out = full_output(k)
    dlq = k.subscriber(broker, "dlq")
    handler = Recorder()
    router = k.Router(
        broker, "in", "out", handler, concurrency=2, max_deliveries=1, dead_letter_topic="dlq"
    )
    router.start()
    k.InMemoryPublisher(broker).publish_nowait("in", [b"a", b"b", b"c"])
    k.wait_for(lambda: handler.count() == 3)
    assert router.stop(timeout=2) is True
    assert k.receive_payloads(out, 1) == [b"a"]
    with router:
        assert sorted(k.receive_payloads(out, 2)) == [b"b", b"c"]
    assert dlq.try_receive() is None
    assert broker.stats().messages_dead_lettered() == 0
    assert router.stats().retries_exhausted == 0


def test_stop_under_never_ack_drops_the_waiting_outputs_with_a_warning(k, caplog):
    # a message read without acknowledgement cannot go back: its outputs are dropped, loudly
    caplog.set_level(logging.WARNING, logger="kincir.router")
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler, ack_strategy=k.AckStrategy.NEVER_ACK)
    router.start()
    k.InMemoryPublisher(broker).publish_nowait("in", [b"a", b"b"])
    k.wait_for(lambda: handler.count() == 2)
    assert router.stop(timeout=2) is True
    assert k.receive_payloads(out, 1) == [b"a"]
    assert any("dropped unpublished" in r.getMessage() for r in caplog.records)


def test_stop_timeout_is_honoured_while_a_handler_runs(k):
    broker, _out = full_output(k)
    release = threading.Event()
    started = threading.Event()

    def handler(msg):
        started.set()
        release.wait(5)
        return [msg.payload]

    router = k.Router(broker, "in", "out", handler).start()
    k.InMemoryPublisher(broker).publish_nowait("in", [b"a"])
    assert started.wait(5)
    begin = time.monotonic()
    assert router.stop(timeout=0.1) is False  # the handler is still running
    assert time.monotonic() - begin < 1.0
    assert router.is_running()
    release.set()
    assert router.stop(timeout=5) is True


# -- item 14: an input whose output waits for room is not redelivered ---------------------------

ACK_TIMEOUT = 0.3
STALL = 1.0  # the downstream stalls for more than three ack timeouts


def test_backpressure_longer_than_ack_timeout_does_not_redeliver(k):
    # worker 1 publishes a's output (the topic is full), worker 2 waits for room with b while
    # worker 1 keeps receiving: each of its receives would redeliver b once its deadline passed
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(broker, "in", "out", handler, concurrency=2, ack_timeout=ACK_TIMEOUT)
    with router:
        k.InMemoryPublisher(broker).publish_nowait("in", [b"a", b"b"])
        time.sleep(STALL)
        assert collections.Counter(k.receive_payloads(out, 2)) == {b"a": 1, b"b": 1}
        k.wait_for(lambda: router.stats().acked == 2)
    assert sorted(handler.calls) == [b"a", b"b"]
    assert broker.topic_info("in").total_redelivered == 0
    assert out.try_receive() is None


def test_backpressure_longer_than_ack_timeout_does_not_redeliver_under_run(k):
    broker, out = full_output(k)
    handler = Recorder()
    router = k.Router(
        broker, "in", "out", handler.handle_async, concurrency=2, ack_timeout=ACK_TIMEOUT
    )

    async def stage():
        task = asyncio.create_task(router.run())
        await k.InMemoryPublisher(broker).publish("in", [b"a", b"b"])
        await asyncio.sleep(STALL)
        got = []
        while router.stats().acked < 2:
            got.extend(m.payload for m in out.try_receive_batch(10))
            await asyncio.sleep(0.01)
        router.stop()
        await asyncio.wait_for(task, 2)
        return got + [m.payload for m in out.try_receive_batch(10)]

    got = k.run(stage())
    assert collections.Counter(got) == {b"a": 1, b"b": 1}
    assert sorted(handler.calls) == [b"a", b"b"]
    assert broker.topic_info("in").total_redelivered == 0


def test_a_slow_handler_is_still_redelivered_after_its_ack_deadline(k):
    # only the wait for room is covered: the handler's own time counts against the deadline
    broker = k.new_broker(enable_stats=True)
    out = k.subscriber(broker, "out")
    calls = []

    def handler(msg):
        calls.append(msg.payload)
        if len(calls) == 1:
            time.sleep(0.3)
        return [msg.payload]

    router = k.Router(broker, "in", "out", handler, concurrency=2, ack_timeout=0.1)
    with router:
        k.InMemoryPublisher(broker).publish_nowait("in", [b"a"])
        k.wait_for(lambda: len(calls) == 2)
        k.wait_for(lambda: router.stats().published == 2)
    assert k.receive_payloads(out, 2) == [b"a", b"a"]
    assert broker.topic_info("in").total_redelivered == 1


# -- the ack layer's extend_deadline, which the router's waiting workers use --------------------


def ack_pair(k, ack_timeout=10.0):
    broker = k.new_broker(enable_stats=True)
    a, b = k.ack_group(broker, {"ack_timeout": ack_timeout}, {"ack_timeout": ack_timeout})
    return broker, a, b


def test_extend_deadline_restarts_the_ack_deadline(k):
    broker, a, b = ack_pair(k)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    _, handle = a.try_receive_with_ack()
    k.core._advance_clock(8)
    assert a.extend_deadline(handle).done()
    k.core._advance_clock(8)  # 16 s after the delivery, 8 s after the extension
    assert b.try_receive_with_ack() is None
    a.extend_deadline(handle)
    k.core._advance_clock(10.5)  # past the extended deadline
    msg, again = b.try_receive_with_ack()
    assert msg.payload == b"x"
    assert again.delivery_count == 2
    with pytest.raises(k.AckError):
        a.extend_deadline(handle)  # redelivered: the old handle is stale
    b.ack(again)
    with pytest.raises(k.AckError):
        b.extend_deadline(again)  # settled
    assert broker.topic_info("t").total_redelivered == 1


def test_extend_deadline_keeps_other_deliveries_in_deadline_order(k):
    broker, a, b = ack_pair(k)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1", b"2", b"3"])
    handles = [a.try_receive_with_ack()[1] for _ in range(3)]
    k.core._advance_clock(5)
    a.extend_deadline(handles[0])  # now due last: 15 s
    k.core._advance_clock(5.5)  # 10.5 s: 2 and 3 are due, 1 is not
    got = [b.try_receive_with_ack() for _ in range(3)]
    assert [m.payload for m, _ in got[:2]] == [b"2", b"3"]
    assert got[2] is None
    a.ack(handles[0])
    b.ack_batch([h for _, h in got[:2]])
    assert broker.topic_info("t").in_flight == 0


async def _extend_awaited(sub, handle):
    await sub.extend_deadline(handle)


def test_extend_deadline_checks_its_handle(k):
    broker, a, b = ack_pair(k)
    k.InMemoryPublisher(broker).publish_nowait("t", [b"x"])
    _, handle = a.try_receive_with_ack()
    with pytest.raises(k.AckError):
        b.extend_deadline(handle)  # another member's delivery
    with pytest.raises(TypeError):
        a.extend_deadline("handle")
    k.run(_extend_awaited(a, handle))  # may be awaited, like ack
    a.ack(handle)
