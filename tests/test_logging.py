"""Logging: what kincir reports under the ``kincir`` logger hierarchy, and that the hot path
reports nothing at INFO or above."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

MEMORY = "kincir.memory"
ACK = "kincir.memory.ack"
ROUTER = "kincir.router"


@pytest.fixture
def logs(caplog):
    """Every kincir record from DEBUG up; ``logs.of(name, level)`` filters them."""
    caplog.set_level(logging.DEBUG, logger="kincir")

    class Logs:
        @staticmethod
        def of(name=None, level=None, contains=None):
            return [
                r
                for r in caplog.records
                if r.name.startswith("kincir")
                and (name is None or r.name == name)
                and (level is None or r.levelno == level)
                and (contains is None or contains in r.getMessage())
            ]

        @staticmethod
        def clear():
            caplog.clear()

    return Logs


def one(records):
    assert len(records) == 1, [r.getMessage() for r in records]
    return records[0]


# -- the hot path ---------------------------------------------------------------------------------


def test_a_normal_publish_receive_loop_logs_nothing_at_info_or_above(k, logs, capsys):
    broker = k.new_broker(max_queue_size=1000)
    pub = k.InMemoryPublisher(broker)
    plain = k.subscriber(broker, "orders")
    members = k.members(broker, "orders")
    acker = k.ack_subscriber(broker, "jobs")
    pattern = k.subscriber(broker, "events.*")
    for i in range(200):
        pub.publish_nowait("orders", [b"%d" % i])
        pub.publish_nowait("jobs", [b"%d" % i])
        pub.publish_nowait("events.a", [b"%d" % i])
        assert plain.receive_sync(timeout=1).payload == b"%d" % i
        assert members[i % 2].try_receive() is not None
        _, handle = acker.receive_with_ack_sync(timeout=1)
        acker.ack(handle)
        assert pattern.try_receive() is not None

    async def loop():
        for i in range(50):
            await pub.publish("orders", [b"%d" % i])
            await plain.receive(timeout=1)

    k.run(loop())
    assert not [r for r in logs.of() if r.levelno >= logging.INFO]
    # per message, not even DEBUG: only the three topics' creation was reported
    assert sorted(r.getMessage() for r in logs.of()) == [
        "topic 'events.a' created",
        "topic 'jobs' created",
        "topic 'orders' created",
    ]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # never print


# -- the broker's lifecycle -----------------------------------------------------------------------


def test_shutdown_logs_its_beginning_and_end_with_the_undelivered_count(k, logs):
    broker, pub, _sub = k.setup(subscribe="a")
    acker = k.ack_subscriber(broker, "b")
    pub.publish_nowait("a", [b"1", b"2", b"3"])
    pub.publish_nowait("b", [b"x"])
    acker.try_receive_with_ack()  # in flight
    logs.clear()
    assert broker.shutdown() is False
    begun, finished = logs.of(MEMORY)
    assert begun.levelno == finished.levelno == logging.INFO
    assert begun.getMessage() == (
        "broker shutdown begun: 4 messages undelivered on 2 topics (1 in flight)"
    )
    assert finished.getMessage() == (
        "broker shutdown finished: drained=False, 4 messages undelivered on 2 topics (1 in flight)"
    )
    assert finished.args[0] is False


def test_a_repeated_shutdown_reports_at_info_only_when_it_waited(k, logs):
    broker, pub, sub = k.setup(subscribe="a")
    pub.publish_nowait("a", [b"1", b"2"])
    broker.shutdown()
    logs.clear()
    broker.shutdown()  # idempotent: nothing new at INFO
    assert [r.levelno for r in logs.of(MEMORY)] == [logging.DEBUG]
    logs.clear()
    worker = k.spawn(lambda: list(sub))  # drains, then iteration ends
    assert broker.shutdown(timeout=5) is True
    worker.join()
    record = one(logs.of(MEMORY))
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "broker shutdown finished: drained=True, 0 messages undelivered on 1 topics (0 in flight)"
    )


def test_force_shutdown_warns_about_the_messages_it_drops(k, logs):
    broker, pub, _sub = k.setup(subscribe="a")
    pub.publish_nowait("a", [b"1", b"2"])
    logs.clear()
    broker.force_shutdown()
    record = one(logs.of(MEMORY))
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "broker force_shutdown: 2 messages dropped on 1 topics (0 in flight)"
    )
    logs.clear()
    broker.force_shutdown()  # already stopped
    assert [r.levelno for r in logs.of(MEMORY)] == [logging.DEBUG]


def test_force_shutdown_of_an_empty_broker_is_info(k, logs):
    broker = k.new_broker()
    _sub = k.subscriber(broker, "a")
    logs.clear()
    broker.force_shutdown()
    record = one(logs.of(MEMORY))
    assert record.levelno == logging.INFO
    assert "0 messages dropped" in record.getMessage()


def test_force_shutdown_during_a_drain_still_warns(k, logs):
    broker, pub, _sub = k.setup(subscribe="a")
    pub.publish_nowait("a", [b"1"])
    broker.shutdown()
    logs.clear()
    broker.force_shutdown()
    assert one(logs.of(MEMORY)).levelno == logging.WARNING


# -- topics ---------------------------------------------------------------------------------------


def test_topic_creation_deletion_and_idle_cleanup_are_debug(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    pub.publish_nowait("made.by.publish", [b"x"])
    k.InMemorySubscriber(broker).subscribe("made.by.subscribe")
    broker.configure_topic("made.by.configure", overflow="drop_oldest")
    broker.delete_topic("made.by.publish")
    member = k.subscriber(broker, "grouped", group="g")
    member.close()
    broker.delete_group("grouped", "g")
    time.sleep(0.01)
    removed = broker.cleanup_idle_topics(0)
    assert sorted(removed) == ["grouped", "made.by.configure", "made.by.subscribe"]
    records = logs.of(MEMORY)
    assert {r.levelno for r in records} == {logging.DEBUG}
    messages = [r.getMessage() for r in records]
    assert messages[:4] == [
        "topic 'made.by.publish' created",
        "topic 'made.by.subscribe' created",
        "topic 'made.by.configure' created",
        "topic 'made.by.publish' deleted",
    ]
    assert "consumer group 'g' of topic 'grouped' deleted" in messages
    cleanup = one(logs.of(MEMORY, contains="idle-topic cleanup"))
    assert cleanup.args[0] == 3
    assert sorted(cleanup.args[1]) == sorted(removed)
    logs.clear()
    assert broker.cleanup_idle_topics(0) == []
    assert not logs.of(MEMORY)  # nothing removed, nothing said


def test_the_ttl_cleanup_thread_reports_what_it_expired(k, logs):
    broker = k.new_broker(default_message_ttl=0.05, cleanup_interval=0.02)
    _sub = k.subscriber(broker, "t")
    k.InMemoryPublisher(broker).publish_nowait("t", [b"1", b"2"])
    k.wait_for(lambda: logs.of(MEMORY, contains="TTL cleanup"))
    record = logs.of(MEMORY, contains="TTL cleanup")[0]
    assert record.levelno == logging.DEBUG
    assert record.args == (2,)


# -- acknowledgement ------------------------------------------------------------------------------


def test_a_dead_lettered_message_is_a_warning(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "jobs", max_deliveries=2, dead_letter_topic="jobs.dlq")
    pub.publish_nowait("jobs", [b"poison"])
    msg, handle = sub.try_receive_with_ack()
    sub.nack(handle)
    assert not logs.of(ACK, logging.WARNING)  # a retry is not worth a warning
    _, handle = sub.try_receive_with_ack()
    sub.nack(handle)
    record = one(logs.of(ACK, logging.WARNING))
    assert record.getMessage() == (
        f"message {msg.uuid} (topic 'jobs', sequence 1) dead-lettered to 'jobs.dlq' after "
        "2 deliveries (max_deliveries_exceeded)"
    )
    assert record.args == (msg.uuid, "jobs", 1, "jobs.dlq", 2, "max_deliveries_exceeded")


def test_a_rejected_message_dead_lettered_as_asked_is_only_debug(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "jobs", dead_letter_topic="jobs.dlq")
    pub.publish_nowait("jobs", [b"invalid"])
    msg, handle = sub.try_receive_with_ack()
    sub.nack(handle, requeue=False)
    assert not logs.of(level=logging.WARNING)
    record = one(logs.of(ACK, contains="dead-lettered"))
    assert record.levelno == logging.DEBUG
    assert record.args == (msg.uuid, "jobs", 1, "jobs.dlq", 1, "rejected")


def test_an_exhausted_message_without_dead_letter_topic_is_dropped_with_a_warning(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "jobs", max_deliveries=1)
    pub.publish_nowait("jobs", [b"a", b"b"])
    first, handle = sub.try_receive_with_ack()
    sub.nack(handle)
    second, handle = sub.try_receive_with_ack()
    sub.nack(handle, requeue=False)
    exhausted, rejected = logs.of(ACK, logging.WARNING)
    assert exhausted.getMessage() == (
        f"message {first.uuid} (topic 'jobs', sequence 1) dropped after 1 deliveries "
        "(max_deliveries_exceeded): no dead-letter topic"
    )
    assert rejected.getMessage() == (
        f"message {second.uuid} (topic 'jobs', sequence 2) dropped after 1 deliveries "
        "(rejected): no dead-letter topic"
    )


def test_a_dead_letter_topic_refusing_the_message_is_reported(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    broker.configure_topic("dlq", max_queue_size=1)
    _keeper = k.subscriber(broker, "dlq")
    pub.publish_nowait("dlq", [b"full"])
    sub = k.ack_subscriber(broker, "jobs", dead_letter_topic="dlq")
    pub.publish_nowait("jobs", [b"x"])
    msg, handle = sub.try_receive_with_ack()
    sub.nack(handle, requeue=False)
    record = one(logs.of(ACK, logging.WARNING))
    assert record.getMessage() == (
        f"message {msg.uuid} (topic 'jobs', sequence 1) dropped after 1 deliveries "
        "(rejected): dead-letter topic 'dlq' refused it"
    )


def test_a_missed_ack_deadline_is_debug(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "jobs", ack_timeout=1.0, max_deliveries=2)
    pub.publish_nowait("jobs", [b"slow"])
    msg, _ = sub.try_receive_with_ack()
    k.core._advance_clock(1.5)
    again, handle = sub.try_receive_with_ack()
    assert again.uuid == msg.uuid and handle.delivery_count == 2
    record = one(logs.of(ACK, contains="ack deadline missed"))
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        f"ack deadline missed: message {msg.uuid} (topic 'jobs', sequence 1) not settled "
        "within 1 s of delivery 1; it goes back for redelivery"
    )
    assert not logs.of(level=logging.WARNING)
    k.core._advance_clock(1.5)  # the second deadline: max_deliveries reached
    assert sub.try_receive_with_ack() is None
    assert len(logs.of(ACK, contains="ack deadline missed")) == 1
    record = one(logs.of(ACK, logging.WARNING))
    assert "dropped after 2 deliveries (max_deliveries_exceeded)" in record.getMessage()


# -- the router -----------------------------------------------------------------------------------


def test_router_lifecycle_failures_and_timeouts(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)

    def handler(message):
        if message.payload == b"boom":
            raise ValueError("cannot handle")
        if message.payload == b"slow":
            time.sleep(0.3)

    router = k.Router(broker, "in", None, handler, processing_timeout=0.05, max_deliveries=1)
    with router:
        pub.publish_nowait("in", [b"boom", b"slow"])
        k.wait_for(lambda: router.stats().failed == 1 and router.stats().timed_out == 1)
    started = one(logs.of(ROUTER, contains="router started"))
    assert started.levelno == logging.INFO
    assert started.getMessage() == (
        "router started: 'in' -> None, group 'router:in', 1 workers, AUTO_ACK_ON_SUCCESS"
    )
    stopped = one(logs.of(ROUTER, contains="router stopped"))
    assert stopped.levelno == logging.INFO
    failed = one(logs.of(ROUTER, logging.ERROR))
    assert "handler failed on message" in failed.getMessage()
    assert "(topic 'in', sequence 1)" in failed.getMessage()
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    timed_out = one(logs.of(ROUTER, logging.WARNING))
    assert timed_out.getMessage().startswith("router handler timed out after 0.05 s on message ")
    assert "(topic 'in', sequence 2)" in timed_out.getMessage()
    # both messages went past max_deliveries=1 and were dropped, each with its warning
    assert len(logs.of(ACK, logging.WARNING)) == 2


def test_async_router_logs_the_same_way(k, logs):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)

    async def handler(message):
        raise ValueError("cannot handle")

    router = k.Router(broker, "in", None, handler, max_deliveries=1)

    async def main():
        task = asyncio.ensure_future(router.run())
        await pub.publish("in", [b"x"])
        while router.stats().failed < 1:
            await asyncio.sleep(0.005)
        router.stop()
        await task

    k.run(main())
    assert [r.getMessage().split(":")[0] for r in logs.of(ROUTER, logging.INFO)] == [
        "router started",
        "router stopped",
    ]
    failed = one(logs.of(ROUTER, logging.ERROR))
    assert failed.exc_info[0] is ValueError


def test_every_record_is_under_the_kincir_hierarchy(k, logs, caplog):
    caplog.set_level(logging.DEBUG)
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", max_deliveries=1)
    pub.publish_nowait("t", [b"x"])
    _, handle = sub.try_receive_with_ack()
    sub.nack(handle)
    broker.delete_topic("t")
    broker.shutdown()
    broker.force_shutdown()
    ours = [r for r in caplog.records if r.name.startswith("kincir")]
    assert ours
    assert {r.name for r in ours} <= {MEMORY, ACK, ROUTER}
    assert not [r for r in caplog.records if r.name.startswith("kincir_core")]
