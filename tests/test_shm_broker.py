"""kincir.shm in one process: the broker's API, its policies, shutdown and bad input.

What every backend shares runs in the conformance suite (tests/conformance, backend ``shm``);
several processes, kills and the history checker are in test_shm_processes.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("kincir.shm runs on Linux", allow_module_level=True)

if os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    pytest.skip("kincir.shm needs the compiled engine", allow_module_level=True)

import kincir
from kincir.codecs import PickleCodec
from kincir.shm import (
    SegmentExists,
    SegmentIncompatible,
    SegmentNotFound,
    SharedMemoryBroker,
    SharedMemoryPublisher,
    SharedMemorySubscriber,
)
from kincir_core._segment import segment_path


@pytest.fixture
def make() -> Iterator[Any]:
    """``make(**options)``: a new broker under a fresh name; every broker made is closed at
    teardown, and its segment must be gone."""
    made: list[SharedMemoryBroker] = []

    def new(**options: Any) -> SharedMemoryBroker:
        broker = SharedMemoryBroker(f"test-{uuid.uuid4().hex[:12]}", **options)
        made.append(broker)
        return broker

    yield new
    for broker in made:
        broker.close()
    for broker in made:
        assert not os.path.exists(segment_path(broker.name)), f"{broker.name} left behind"


def subscribed(broker: SharedMemoryBroker, *topics: str, group: str | None = None) -> Any:
    sub = SharedMemorySubscriber(broker, group)
    for topic in topics:
        sub.subscribe(topic)
    return sub


def payloads(messages: list[Any]) -> list[Any]:
    return [m.payload for m in messages]


def take(sub: Any, count: int) -> list[Any]:
    """The payloads of the next ``count`` messages (a plain subscriber reads ahead: a batch
    hands out what it holds)."""
    return [sub.receive_sync(timeout=5).payload for _ in range(count)]


# -- the basics ---------------------------------------------------------------------------------


def test_a_second_handle_by_name_sees_the_same_broker(make):
    broker = make()
    other = SharedMemoryBroker(broker.name, create=False)
    try:
        sub = subscribed(other, "t")
        SharedMemoryPublisher(broker).publish_sync("t", [b"one", b"two"])
        assert payloads(sub.receive_batch_sync(10, timeout=5)) == [b"one", b"two"]
        assert other.topics() == broker.topics() == ["t"]
        assert other.geometry == broker.geometry
    finally:
        other.close()


def test_a_pickled_broker_attaches_by_name(make):
    broker = make(codec=PickleCodec())
    copy = pickle.loads(pickle.dumps(broker))
    try:
        assert copy.name == broker.name and isinstance(copy.codec, PickleCodec)
        sub = subscribed(copy, "t")
        SharedMemoryPublisher(broker).send_sync("t", {"order": 1})
        assert sub.receive_sync(timeout=5).payload == {"order": 1}
    finally:
        copy.close()


def test_messages_keep_uuid_metadata_sequence_and_enqueue_time(make):
    broker = make()
    sub = subscribed(broker, "t")
    sent = kincir.Message.new(b"x").with_metadata("k", "v")
    before = time.time() * 1000
    SharedMemoryPublisher(broker).publish_sync("t", [b"first", sent])
    first, second = sub.receive_batch_sync(2, timeout=5)
    assert (first.sequence, second.sequence) == (1, 2)
    assert second.uuid == sent.uuid and second.metadata["k"] == "v"
    assert first.uuid != second.uuid
    assert before - 1000 <= second.enqueued_at <= time.time() * 1000 + 1000
    assert second.topic == "t"


def test_a_subscriber_of_several_topics_gets_each_in_order(make):
    broker = make()
    sub = subscribed(broker, "a", "b")
    pub = SharedMemoryPublisher(broker)
    for i in range(20):
        pub.send_sync("a" if i % 2 else "b", b"%d" % i)
    got = [sub.receive_sync(timeout=5) for _ in range(20)]
    for topic in ("a", "b"):
        assert [m.sequence for m in got if m.topic == topic] == list(range(1, 11))
    threading.Timer(0.1, lambda: pub.send_sync("b", b"late")).start()
    assert sub.receive_sync(timeout=5).payload == b"late"  # waits on a topic it does not sleep on


def test_iteration_ends_at_shutdown_after_the_rest_is_read(make):
    broker = make()
    sub = subscribed(broker, "t")
    SharedMemoryPublisher(broker).publish_sync("t", [b"1", b"2"])
    broker.shutdown()
    assert [m.payload for m in sub] == [b"1", b"2"]
    with pytest.raises(kincir.BrokerShutdown):
        sub.receive_sync(timeout=1)


def test_topic_info_counts(make):
    broker = make(slots=8)
    member = subscribed(broker, "t", group="g")  # takes only what it hands out
    SharedMemoryPublisher(broker).publish_sync("t", [b"a", b"b", b"c"])
    info = broker.topic_info("t")
    assert (info.published, info.held, info.readers, info.capacity) == (3, 3, 1, 8)
    member.receive_batch_sync(2, timeout=5)
    assert broker.topic_info("t").held == 1
    plain = subscribed(broker, "t")
    SharedMemoryPublisher(broker).publish_sync("t", [b"d"])
    plain.receive_sync(timeout=5)  # reads ahead: what it holds in its buffer is read
    assert broker.topic_info("t").held == 2
    with pytest.raises(kincir.memory.TopicNotFound):
        broker.topic_info("nobody.made.it")


# -- policies -----------------------------------------------------------------------------------


def test_error_refuses_a_publish_that_does_not_fit_and_keeps_the_rest(make):
    broker = make(slots=4, overflow="error")
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"1", b"2", b"3"])
    with pytest.raises(kincir.memory.QueueFull):
        pub.publish_sync("t", [b"4", b"5"], timeout=10)  # error: no wait at all
    pub.send_sync("t", b"4")
    assert payloads(sub.receive_batch_sync(10, timeout=5)) == [b"1", b"2", b"3", b"4"]
    assert pub.stats() == kincir.PublisherStats(published=4, refused=2)


def test_block_waits_for_room_then_times_out(make):
    broker = make(slots=4)
    assert broker.overflow == "block"
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"1", b"2", b"3", b"4"])
    start = time.monotonic()
    with pytest.raises(kincir.memory.QueueFull):
        pub.send_sync("t", b"5", timeout=0.2)
    assert time.monotonic() - start >= 0.19
    with pytest.raises(kincir.memory.QueueFull):
        pub.send_nowait("t", b"5")
    threading.Timer(0.1, lambda: take(sub, 2)).start()
    pub.send_sync("t", b"5", timeout=10)  # room made by the reader
    time.sleep(0.1)  # the timer's receives are done
    assert take(sub, 3) == [b"3", b"4", b"5"]


def test_async_publish_waits_for_room_without_blocking_the_loop(make):
    broker = make(slots=2)
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)

    async def main() -> list[bytes]:
        await pub.publish("t", [b"1", b"2"])
        blocked = asyncio.ensure_future(pub.send("t", b"3", timeout=10))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        first = await sub.receive(timeout=5)  # the loop still runs
        await blocked
        return [first.payload, *[(await sub.receive(timeout=5)).payload for _ in range(2)]]

    assert asyncio.run(main()) == [b"1", b"2", b"3"]


def test_drop_oldest_moves_slow_readers_on_and_counts_their_loss(make):
    broker = make(slots=4, overflow="drop_oldest")
    slow = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    for i in range(10):
        pub.send_sync("t", b"%d" % i)
    assert payloads(slow.receive_batch_sync(10, timeout=5)) == [b"6", b"7", b"8", b"9"]
    assert slow.messages_lagged() == 6 and slow.stats().lagged == 6


def test_drop_newest_keeps_what_fits_and_counts_the_rest(make):
    broker = make(slots=4, overflow="drop_newest")
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"0", b"1", b"2"])
    pub.publish_sync("t", [b"3", b"4", b"5"])  # one fits
    assert payloads(sub.receive_batch_sync(10, timeout=5)) == [b"0", b"1", b"2", b"3"]
    assert broker.topic_info("t").dropped == 2


def test_persistence_keeps_what_no_reader_took_for_the_first_to_join(make):
    kept, dropped = make(), make(persistence=False)
    for broker in (kept, dropped):
        SharedMemoryPublisher(broker).publish_sync("t", [b"early"])
    assert kept.topic_info("t").held == 1
    assert subscribed(kept, "t").receive_sync(timeout=5).payload == b"early"
    with pytest.raises(TimeoutError):
        subscribed(dropped, "t").receive_sync(timeout=0.1)
    late = subscribed(kept, "t")  # a reader is there: nothing is kept for this one
    with pytest.raises(TimeoutError):
        late.receive_sync(timeout=0.1)


def test_a_group_holds_its_messages_while_no_member_is_there(make):
    broker = make()
    member = subscribed(broker, "t", group="g")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"1", b"2"])
    assert member.receive_sync(timeout=5).payload == b"1"
    member.close()
    pub.publish_sync("t", [b"3"])
    again = subscribed(broker, "t", group="g")
    assert payloads(again.receive_batch_sync(10, timeout=5)) == [b"2", b"3"]


# -- ends ---------------------------------------------------------------------------------------


def test_close_topic_ends_readers_after_the_rest_and_refuses_publishes(make):
    broker = make()
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"last"])
    broker.close_topic("t")
    with pytest.raises(kincir.TopicClosed):
        pub.send_sync("t", b"late")
    assert broker.topic_info("t").closed
    assert sub.receive_sync(timeout=5).payload == b"last"
    with pytest.raises(kincir.TopicClosed) as info:
        sub.receive_sync(timeout=5)
    assert info.value.reading


def test_force_shutdown_wakes_a_waiting_receive_and_a_blocked_publish(make):
    broker = make(slots=2)
    sub = subscribed(broker, "t")
    waiting = subscribed(broker, "u")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"1", b"2"])
    errors: list[BaseException] = []

    def expect_shutdown(call: Any) -> None:
        try:
            call()
        except kincir.BrokerShutdown as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=expect_shutdown, args=(lambda: waiting.receive_sync(30),)),
        threading.Thread(
            target=expect_shutdown, args=(lambda: pub.send_sync("t", b"3", timeout=30),)
        ),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    start = time.monotonic()
    broker.force_shutdown()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 2 and time.monotonic() - start < 2
    with pytest.raises(kincir.BrokerShutdown):
        sub.receive_sync(timeout=1)  # forced: what is unread is not handed out


def test_shutdown_with_a_timeout_reports_whether_readers_drained(make):
    broker = make()
    sub = subscribed(broker, "t")
    SharedMemoryPublisher(broker).publish_sync("t", [b"1"])
    assert broker.shutdown(timeout=0.05) is False
    threading.Timer(0.05, lambda: sub.receive_sync(timeout=5)).start()
    assert broker.shutdown(timeout=5) is True
    assert broker.is_shutdown()
    with pytest.raises(kincir.BrokerShutdown):
        sub.subscribe("new")


def test_join_waits_for_every_reader(make):
    broker = make()
    sub = subscribed(broker, "t")
    SharedMemoryPublisher(broker).publish_sync("t", [b"1", b"2"])
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    threading.Timer(0.05, lambda: sub.receive_batch_sync(2, timeout=5)).start()
    broker.join("t", timeout=5)


def test_a_closed_handle_refuses_work_and_other_handles_go_on(make):
    broker = make()
    other = SharedMemoryBroker(broker.name, create=False)
    sub = subscribed(other, "t")
    pub = SharedMemoryPublisher(other)
    other.close()
    with pytest.raises(kincir.BrokerShutdown):
        pub.send_sync("t", b"x")
    with pytest.raises(kincir.BrokerShutdown):  # closing the handle closed its readers
        sub.receive_sync(timeout=0.1)
    assert broker.topic_info("t").readers == 0
    SharedMemoryPublisher(broker).send_sync("t", b"still fine")


# -- segments -----------------------------------------------------------------------------------


def test_segments_are_private_refused_when_taken_and_found_by_name(make):
    broker = make()
    assert os.stat(segment_path(broker.name)).st_mode & 0o777 == 0o600
    with pytest.raises(SegmentExists):
        SharedMemoryBroker(broker.name)
    with pytest.raises(SegmentNotFound):
        SharedMemoryBroker(f"test-{uuid.uuid4().hex[:12]}", create=False)


def test_a_foreign_file_is_refused(tmp_path):
    name = f"test-{uuid.uuid4().hex[:12]}"
    path = segment_path(name)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"not a kincir segment".ljust(8192, b"\0"))
        with pytest.raises(SegmentIncompatible):
            SharedMemoryBroker(name, create=False)
    finally:
        os.close(fd)
        os.unlink(path)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"slots": 1000}, ValueError, "power of two"),
        ({"slots": "many"}, TypeError, "slots must be int"),
        ({"slot_size": 60}, ValueError, "slot_size"),
        ({"slot_size": 100}, ValueError, "multiple of 8"),
        ({"topics": 0}, ValueError, "topics"),
        ({"overflow": "explode"}, ValueError, "overflow must be one of"),
        ({"codec": PickleCodec}, TypeError, "not a class"),
    ],
)
def test_a_bad_geometry_is_refused_and_leaves_nothing(options, error, match):
    name = f"test-{uuid.uuid4().hex[:12]}"
    with pytest.raises(error, match=match):
        SharedMemoryBroker(name, **options)
    assert not os.path.exists(segment_path(name))


def test_bad_input_is_refused_clearly_and_the_broker_stays_healthy(make):
    broker = make(slot_size=128, topics=2)
    sub = subscribed(broker, "t")
    pub = SharedMemoryPublisher(broker)
    with pytest.raises(ValueError, match="does not fit a slot"):
        pub.publish_sync("t", [b"ok", b"x" * 200])
    with pytest.raises(TypeError):
        pub.publish_sync("t", [b"ok", "text"])
    with pytest.raises(TypeError):
        pub.publish_sync("t", b"not a list")
    with pytest.raises(kincir.memory.InvalidTopicName):
        pub.send_sync("", b"x")
    with pytest.raises(kincir.memory.InvalidTopicName, match="UTF-8"):
        pub.send_sync("\u00e9" * 130, b"x")  # 130 characters, 260 bytes
    with pytest.raises(ValueError, match="group name"):
        SharedMemorySubscriber(broker, "g" * 300).subscribe("t")
    with pytest.raises(TypeError):
        SharedMemoryPublisher("not a broker")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sub.receive_batch_sync(0)
    pub.send_sync("u", b"x")  # the second of two topics
    with pytest.raises(kincir.memory.MaxTopicsReached):
        pub.send_sync("v", b"x")
    with pytest.raises(kincir.NotSubscribed):
        SharedMemorySubscriber(broker).receive_sync(timeout=0.1)
    pub.send_sync("t", b"still fine")
    assert sub.receive_sync(timeout=5).payload == b"still fine"
    assert broker.topic_info("t").published == 1


def test_reader_entries_run_out_with_a_clear_error(make):
    broker = make(max_readers=2)
    kept = [subscribed(broker, "t"), subscribed(broker, "t", group="g")]
    with pytest.raises(kincir.memory.MaxSubscribersReached):
        subscribed(broker, "t")
    with pytest.raises(kincir.memory.MaxSubscribersReached):
        subscribed(broker, "t", group="another")
    assert len(kept) == 2


def test_freeing_a_dead_readers_entry_is_logged(make, caplog, python_child):
    broker = make(slots=4)
    child = python_child(
        "import sys\n"
        "from kincir.shm import SharedMemoryBroker, SharedMemorySubscriber\n"
        "broker = SharedMemoryBroker(sys.argv[1], create=False)\n"
        "sub = SharedMemorySubscriber(broker)\n"
        "sub.subscribe('t')\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(60)\n",
        broker.name,
    )
    assert child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait(10)
    assert broker.topic_info("t").readers == 1
    with caplog.at_level(logging.WARNING, logger="kincir.shm"):
        pub = SharedMemoryPublisher(broker)
        for i in range(10):
            pub.send_sync("t", b"%d" % i, timeout=10)  # held by the dead reader after 4
    assert broker.topic_info("t").readers == 0
    assert broker.topic_info("t").freed_readers == 1
    assert "freed 1 reader entries" in caplog.text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() while threads run (3.12+)
def test_a_forked_child_closing_its_copy_leaves_the_parents_segment_and_readers(make):
    """A forked child shares the parent's file description, and with it the segment's lock:
    closing its copies must neither let go of the parent's lock (the file would be removed
    under it) nor remove the parent's readers."""
    broker = make()
    sub = subscribed(broker, "t")
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            sub.close()
            broker.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(segment_path(broker.name))
    assert broker.topic_info("t").readers == 1
    SharedMemoryPublisher(broker).send_sync("t", b"still mine")
    assert sub.receive_sync(timeout=5).payload == b"still mine"
    other = SharedMemoryBroker(broker.name, create=False)  # the lock still counts the parent
    other.close()
    assert os.path.exists(segment_path(broker.name))


@pytest.mark.parametrize("topics", [("t",), ("t", "u")])
def test_closing_a_handle_while_its_subscriber_waits_ends_the_wait(make, topics):
    broker = make()
    other = SharedMemoryBroker(broker.name, create=False)
    sub = subscribed(other, *topics)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            sub.receive_sync(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=receive)
    waiter.start()
    time.sleep(0.1)
    other.close()  # the wait must end before the mapping goes
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], kincir.BrokerShutdown), errors
