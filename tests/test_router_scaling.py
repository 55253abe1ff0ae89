"""Router at scale: the processing timeout without a thread per call (one watchdog thread), the
batch handler (``batch_size``), the failure counters (retried, dead-lettered) and workers that
detach from the input when the router stops."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytestmark = pytest.mark.usefixtures("quiet_router_log")


def stage(k, handler, **kwargs):
    broker = k.new_broker(enable_stats=True)
    out = k.subscriber(broker, "out")
    router = k.Router(broker, "in", "out", handler, **kwargs)
    return broker, k.InMemoryPublisher(broker), out, router


class Blocking:
    """A handler whose first call blocks until ``release`` (then returns ``late``); the others
    echo their payload. Records the thread of every call."""

    def __init__(self, late=(b"late",)):
        self.release = threading.Event()
        self.first_started = threading.Event()
        self.first_returned = threading.Event()
        self.threads = []
        self.calls = 0
        self.late = list(late)
        self._lock = threading.Lock()

    def __call__(self, msg):
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            self.threads.append(threading.current_thread().name)
        if first:
            self.first_started.set()
            self.release.wait(10)
            self.first_returned.set()
            return self.late
        return [msg.payload]


# -- 1. the processing timeout: the handler runs on its worker thread -----------------------------


def test_a_timed_handler_runs_on_its_worker_thread(k):
    names = []

    def handler(msg):
        names.append(threading.current_thread().name)
        return [msg.payload]

    _broker, pub, out, router = stage(k, handler, processing_timeout=5.0)
    with router:
        pub.publish_nowait("in", [b"1", b"2", b"3"])
        assert k.receive_payloads(out, 3) == [b"1", b"2", b"3"]
    assert names == ["kincir-router-0"] * 3
    stats = router.stats()
    assert (stats.processed, stats.succeeded, stats.timed_out, stats.acked) == (3, 3, 0, 3)


def test_a_timed_out_call_is_retried_by_another_worker_and_its_late_result_discarded(k):
    handler = Blocking()
    broker, pub, out, router = stage(k, handler, processing_timeout=0.05, concurrency=2)
    with router:
        pub.publish_nowait("in", [b"x"])
        # the watchdog nacks x while its first call still runs; the other worker takes it again
        assert out.receive_sync(timeout=5).payload == b"x"
        stats = router.stats()
        assert (stats.timed_out, stats.nacked, stats.retried, stats.acked) == (1, 1, 1, 1)
        handler.release.set()
        assert handler.first_returned.wait(5)
    assert k.receive_payloads(out, 0) == []  # b"late" was discarded
    assert len(set(handler.threads)) == 2
    stats = router.stats()
    assert (stats.processed, stats.succeeded, stats.failed) == (1, 1, 0)
    assert broker.topic_info("in").in_flight == 0


def test_a_timed_out_call_that_raises_late_is_not_counted_again(k):
    release = threading.Event()
    done = threading.Event()

    def handler(msg):
        release.wait(10)
        done.set()
        raise RuntimeError("late")

    _broker, pub, _out, router = stage(k, handler, processing_timeout=0.05, max_deliveries=1)
    with router:
        pub.publish_nowait("in", [b"x"])
        k.wait_for(lambda: router.stats().timed_out == 1)
        release.set()
        assert done.wait(5)
    stats = router.stats()
    assert (stats.timed_out, stats.failed, stats.processed, stats.nacked) == (1, 0, 0, 1)
    assert stats.retries_exhausted == 1


def test_stop_does_not_wait_for_a_handler_past_its_timeout(k):
    handler = Blocking()
    broker, pub, out, router = stage(k, handler, processing_timeout=0.05)
    router.start()
    pub.publish_nowait("in", [b"x"])
    k.wait_for(lambda: router.stats().timed_out == 1)
    assert router.stop(timeout=5) is True  # the handler still runs: its call was timed out
    assert handler.calls == 1 and not handler.first_returned.is_set()
    # the router starts again while the abandoned call runs; that thread ends when it returns
    with router:
        assert out.receive_sync(timeout=5).payload == b"x"  # x again, from the new worker
        handler.release.set()
        assert handler.first_returned.wait(5)
        k.wait_for(lambda: router.stats().acked == 1)
        pub.publish_nowait("in", [b"y"])
        assert k.receive_payloads(out, 1) == [b"y"]
    assert handler.calls == 3
    assert broker.topic_info("in").in_flight == 0


def test_stop_still_waits_for_a_handler_within_its_time(k):
    handler = Blocking()
    _broker, pub, out, router = stage(k, handler, processing_timeout=60)
    router.start()
    pub.publish_nowait("in", [b"x"])
    assert handler.first_started.wait(5)
    assert router.stop(timeout=0.1) is False
    handler.release.set()
    assert router.stop(timeout=5) is True
    assert k.receive_payloads(out, 1) == [b"late"]


def test_a_timed_out_call_under_always_ack_is_acked(k):
    handler = Blocking()
    broker, pub, _out, router = stage(
        k, handler, processing_timeout=0.05, ack_strategy=k.AckStrategy.ALWAYS_ACK
    )
    with router:
        pub.publish_nowait("in", [b"x"])
        k.wait_for(lambda: router.stats().timed_out == 1)
        handler.release.set()
    stats = router.stats()
    assert (stats.acked, stats.nacked, stats.retried) == (1, 0, 0)
    assert broker.topic_info("in").in_flight == 0


# -- 2. the batch handler -----------------------------------------------------------------------


def test_a_batch_handler_receives_lists_and_its_outputs_keep_order(k):
    batches = []

    def handler(msgs):
        batches.append([m.payload for m in msgs])
        return [m.payload.upper() for m in msgs]

    broker, pub, out, router = stage(k, handler, batch_size=4)
    pub.publish_nowait("in", [bytes([c]) for c in b"abcdefghij"])  # ready before the start
    with router:
        assert k.receive_payloads(out, 10) == [bytes([c]) for c in b"ABCDEFGHIJ"]
    assert [b for batch in batches for b in batch] == [bytes([c]) for c in b"abcdefghij"]
    assert all(1 <= len(batch) <= 4 for batch in batches)
    assert len(batches[0]) == 4  # the messages were ready: a full batch
    stats = router.stats()
    assert (stats.processed, stats.succeeded, stats.acked, stats.published) == (10, 10, 10, 10)
    assert broker.topic_info("in").in_flight == 0


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (lambda: None, []),
        (lambda: b"one", [b"one"]),
        (lambda: (b"x", b"y"), [b"x", b"y"]),
        (lambda: iter([b"z"]), [b"z"]),
    ],
)
def test_a_batch_handler_result_follows_the_output_rules(k, result, expected):
    _broker, pub, out, router = stage(k, lambda msgs: result(), batch_size=8)
    pub.publish_nowait("in", [b"1", b"2", b"3"])
    with router:
        k.wait_for(lambda: router.stats().acked == 3)
    assert k.receive_payloads(out, 0) == expected


def test_a_failed_batch_is_retried_whole_and_dead_lettered_per_message(k):
    seen = []

    def handler(msgs):
        seen.append([m.payload for m in msgs])
        raise ValueError("the whole batch fails")

    broker, pub, _out, router = stage(
        k, handler, batch_size=3, max_deliveries=2, dead_letter_topic="dlq"
    )
    dlq = k.subscriber(broker, "dlq")
    pub.publish_nowait("in", [b"a", b"b", b"c"])
    with router:
        letters = k.receive_payloads(dlq, 3)
    assert sorted(letters) == [b"a", b"b", b"c"]
    assert sorted(p for batch in seen for p in batch) == [b"a", b"a", b"b", b"b", b"c", b"c"]
    stats = router.stats()
    assert (stats.failed, stats.nacked, stats.retried) == (6, 6, 3)
    assert (stats.dead_lettered, stats.retries_exhausted, stats.acked) == (3, 3, 0)


def test_a_batch_handler_that_times_out_nacks_its_whole_batch(k):
    calls = []
    release = threading.Event()

    def handler(msgs):
        calls.append(len(msgs))
        if len(calls) == 1:
            release.wait(10)
        return [m.payload for m in msgs]

    _broker, pub, out, router = stage(k, handler, batch_size=2, processing_timeout=0.05)
    pub.publish_nowait("in", [b"a", b"b"])
    with router:
        k.wait_for(lambda: router.stats().timed_out == 2)
        assert router.stats().retried == 2
        release.set()
        assert sorted(k.receive_payloads(out, 2)) == [b"a", b"b"]
    assert router.stats().acked == 2


def test_a_batch_handler_under_manual_settles_each_delivery(k):
    def handler(msgs, deliveries):
        assert [d.message for d in deliveries] == msgs
        for d in deliveries:
            if d.message.payload == b"bad" and d.handle.delivery_count == 1:
                d.nack()
            else:
                d.ack()
        return [m.payload for m in msgs if m.payload != b"bad"]

    broker, pub, out, router = stage(k, handler, batch_size=4, ack_strategy=k.AckStrategy.MANUAL)
    pub.publish_nowait("in", [b"ok", b"bad"])
    with router:
        k.wait_for(lambda: router.stats().acked == 2)
    assert k.receive_payloads(out, 1) == [b"ok"]
    stats = router.stats()
    assert (stats.nacked, stats.retried) == (1, 1)
    assert broker.topic_info("in").in_flight == 0


def test_a_coroutine_batch_handler_under_run(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    sizes = []

    async def handler(msgs):
        sizes.append(len(msgs))
        await asyncio.sleep(0)
        return [m.payload * 2 for m in msgs]

    router = k.Router(broker, "in", "out", handler, batch_size=5, concurrency=2)

    async def main():
        await k.InMemoryPublisher(broker).publish("in", [bytes([c]) for c in b"abcdefg"])
        task = asyncio.create_task(router.run())
        got = [(await out.receive(timeout=5)).payload for _ in range(7)]
        router.stop()
        await asyncio.wait_for(task, 5)
        return got

    assert sorted(k.run(main())) == sorted(bytes([c]) * 2 for c in b"abcdefg")
    assert sum(sizes) == 7 and max(sizes) <= 5
    assert router.stats().acked == 7


def test_a_batch_handler_with_several_workers_and_never_ack(k):
    seen = []
    lock = threading.Lock()

    def handler(msgs):
        with lock:
            seen.extend(m.payload for m in msgs)
        return msgs

    _broker, pub, out, router = stage(
        k, handler, batch_size=16, concurrency=3, ack_strategy=k.AckStrategy.NEVER_ACK
    )
    payloads = [str(i).encode() for i in range(200)]
    with router:
        pub.publish_nowait("in", payloads)
        got = k.receive_payloads(out, 200)
    assert sorted(got) == sorted(payloads)
    assert sorted(seen) == sorted(payloads)
    assert router.stats().processed == 200


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_batch_size_must_be_a_positive_int(k, bad):
    with pytest.raises(ValueError, match="batch_size"):
        k.Router(k.new_broker(), "in", "out", print, batch_size=bad)


def test_batch_size_shows_in_the_repr(k):
    router = k.Router(k.new_broker(), "in", "out", print, batch_size=8)
    assert router.batch_size == 8
    assert "batch_size=8" in repr(router)


# -- 3. processed, retried, failed, dead-lettered ----------------------------------------------


def failing(payloads):
    def handler(msg):
        if msg.payload in payloads:
            raise ValueError("cannot handle")
        return [msg.payload]

    return handler


def test_stats_separate_retried_and_dead_lettered(k):
    _broker, pub, out, router = stage(
        k, failing({b"bad"}), max_deliveries=3, dead_letter_topic="dlq"
    )
    with router:
        pub.publish_nowait("in", [b"ok", b"bad"])
        k.wait_for(lambda: router.stats().retries_exhausted == 1)
    assert k.receive_payloads(out, 1) == [b"ok"]
    stats = router.stats()
    assert (stats.processed, stats.succeeded, stats.failed) == (4, 1, 3)
    assert (stats.acked, stats.nacked, stats.retried) == (1, 3, 2)
    assert (stats.dead_lettered, stats.retries_exhausted, stats.timed_out) == (1, 1, 0)


def test_without_a_dead_letter_topic_a_last_failure_is_dropped_not_dead_lettered(k):
    broker, pub, _out, router = stage(k, failing({b"bad"}), max_deliveries=2)
    with router:
        pub.publish_nowait("in", [b"bad"])
        k.wait_for(lambda: router.stats().retries_exhausted == 1)
    stats = router.stats()
    assert (stats.failed, stats.nacked, stats.retried, stats.dead_lettered) == (2, 2, 1, 0)
    assert broker.topic_info("in").in_flight == 0


def test_a_manual_rejection_is_dead_lettered_not_retried(k):
    def handler(msg, delivery):
        delivery.nack(requeue=False)

    broker, pub, _out, router = stage(
        k, handler, ack_strategy=k.AckStrategy.MANUAL, dead_letter_topic="dlq"
    )
    dlq = k.subscriber(broker, "dlq")
    with router:
        pub.publish_nowait("in", [b"x"])
        assert dlq.receive_sync(timeout=5).payload == b"x"
    stats = router.stats()
    assert (stats.nacked, stats.retried, stats.dead_lettered, stats.retries_exhausted) == (
        1,
        0,
        1,
        0,
    )


def test_failures_under_always_ack_are_neither_retried_nor_dead_lettered(k):
    _broker, pub, _out, router = stage(
        k, failing({b"bad"}), ack_strategy=k.AckStrategy.ALWAYS_ACK, dead_letter_topic="dlq"
    )
    with router:
        pub.publish_nowait("in", [b"bad"])
        k.wait_for(lambda: router.stats().acked == 1)
    stats = router.stats()
    assert (stats.failed, stats.retried, stats.dead_lettered, stats.nacked) == (1, 0, 0, 0)


# -- 4. leaving ``with router:`` detaches the workers; the group keeps the messages ---------------


@pytest.mark.parametrize("strategy", ["AUTO_ACK_ON_SUCCESS", "NEVER_ACK"])
def test_stopped_workers_leave_the_input_and_the_group_keeps_what_follows(k, strategy):
    broker, pub, out, router = stage(
        k, lambda m: [m.payload], concurrency=3, ack_strategy=k.AckStrategy[strategy]
    )
    with router:
        assert broker.topic_info("in").subscriber_count == 3
        pub.publish_nowait("in", [b"1"])
        assert k.receive_payloads(out, 1) == [b"1"]
    assert broker.topic_info("in").subscriber_count == 0
    assert broker.list_groups("in") == ["router:in"]
    pub.publish_nowait("in", [b"2", b"3"])  # kept by the group while no worker reads
    assert broker.topic_info("in").queue_size == 2
    with router:
        assert sorted(k.receive_payloads(out, 2)) == [b"2", b"3"]
    assert broker.topic_info("in").subscriber_count == 0


def test_a_stopped_router_gives_back_unsettled_manual_messages_at_once(k):
    # a MANUAL handler that never settles: its messages go back to the group when the workers
    # leave, not after the ack timeout
    calls = []

    def handler(msg, delivery):
        calls.append(delivery.handle.delivery_count)

    broker, pub, _out, router = stage(k, handler, ack_strategy=k.AckStrategy.MANUAL)
    with router:
        pub.publish_nowait("in", [b"x"])
        k.wait_for(lambda: len(calls) == 1)
    assert broker.topic_info("in").subscriber_count == 0
    with router:  # redelivered at once (the ack timeout is 30 s)
        k.wait_for(lambda: len(calls) == 2)
    assert calls == [1, 2]


def test_run_detaches_its_workers_when_it_ends(k):
    broker = k.new_broker()
    router = k.Router(broker, "in", None, lambda m: None, concurrency=2)

    async def main():
        task = asyncio.create_task(router.run())
        while not router.is_running() or broker.topic_info("in").subscriber_count < 2:
            await asyncio.sleep(0.005)
        router.stop()
        await asyncio.wait_for(task, 5)

    k.run(main())
    assert broker.topic_info("in").subscriber_count == 0
    assert broker.list_groups("in") == ["router:in"]


# -- workers overlap when the handler waits -------------------------------------------------------


@pytest.mark.parametrize("concurrency", [2, 4])
def test_workers_handle_as_many_messages_at_once_as_there_are_workers(k, concurrency):
    # every call waits at a barrier for as many calls as there are workers: it is passed only
    # if that many handlers run at once (one worker per message, each woken for its message)
    barrier = threading.Barrier(concurrency)

    def handler(msg):
        barrier.wait(10)
        return [msg.payload]

    broker, pub, out, router = stage(k, handler, concurrency=concurrency)
    payloads = [b"%d" % i for i in range(concurrency * 3)]
    with router:
        for payload in payloads:
            pub.send_nowait("in", payload)
        assert sorted(k.receive_payloads(out, len(payloads))) == sorted(payloads)
    stats = router.stats()
    assert (stats.processed, stats.failed, stats.acked) == (len(payloads), 0, len(payloads))
    assert not barrier.broken
    assert broker.health_check().is_healthy
