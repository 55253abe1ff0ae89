"""kincir.shm handles and their ends: closing while other threads publish or read, forks,
processes killed while making a group, close_topic and force_shutdown against what a
subscriber holds, and the counts that must survive them."""

from __future__ import annotations

import gc
import os
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
from kincir.codecs import JsonCodec
from kincir.shm import SharedMemoryBroker, SharedMemoryPublisher, SharedMemorySubscriber
from kincir_core._segment import segment_path


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh segment name; nothing of it may be left at teardown."""
    made = f"test-{uuid.uuid4().hex[:12]}"
    yield made
    assert not os.path.exists(segment_path(made)), f"{made} left behind"


def test_closing_a_handle_while_a_publish_waits_for_room_raises_broker_shutdown(name):
    broker = SharedMemoryBroker(name, slots=4)
    holder = SharedMemoryBroker(name, create=False)  # a reader elsewhere keeps the ring full
    sub = SharedMemorySubscriber(holder)
    sub.subscribe("t")
    pub = SharedMemoryPublisher(broker)
    pub.publish_sync("t", [b"x"] * 4)
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            pub.send_sync("t", b"y", timeout=30)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=publish)
    waiter.start()
    time.sleep(0.2)
    broker.close()  # must wait for the publisher to leave the log, never unmap under it
    waiter.join(10)
    assert len(errors) == 1 and isinstance(errors[0], kincir.BrokerShutdown), errors
    sub.close()
    holder.close()


# closes a handle at random instants while a thread copies messages whose metadata runs Python
# code (json): a copy must finish before the mapping goes
CLOSE_DURING_COPY = """
import random, sys, threading, time
import kincir
from kincir.shm import SharedMemoryBroker, SharedMemoryPublisher, SharedMemorySubscriber
sys.setswitchinterval(1e-6)
for round_ in range(int(sys.argv[2])):
    broker = SharedMemoryBroker(f"{sys.argv[1]}-{round_}", slots=1024, slot_size=512)
    sub = SharedMemorySubscriber(broker, prefetch=1024)
    sub.subscribe("t")
    meta = {"k%d" % j: "v" * 20 for j in range(8)}
    SharedMemoryPublisher(broker).publish_sync("t", [kincir.Message(b"x", meta)] * 1000)
    def receive():
        try:
            while True:
                sub.receive_batch_sync(1000, timeout=1)
        except kincir.BrokerShutdown:
            pass
    reader = threading.Thread(target=receive)
    reader.start()
    time.sleep(random.uniform(0, 0.003))
    broker.close()
    reader.join()
print("ok")
"""


def test_closing_a_handle_during_a_copy_never_crashes(python_child, name):
    child = python_child(CLOSE_DURING_COPY, name, "20")
    assert child.stdout.read() == "ok\n"
    assert child.wait(120) == 0
    for round_ in range(20):
        assert not os.path.exists(segment_path(f"{name}-{round_}"))


HOLD_THE_LOG_MUTEX = """
import sys, time
from kincir.shm import SharedMemoryBroker
from kincir_core._shm_sync import SharedWords
broker = SharedMemoryBroker(sys.argv[1], create=False)
words = SharedWords(broker._segment.buffer)
words.lock(int(sys.argv[2]))
print("locked", flush=True)
time.sleep(0.3)
words.unlock(int(sys.argv[2]))
words.release()
broker.close()
"""


@pytest.mark.parametrize("overflow", ["error", "drop_oldest", "drop_newest", "block"])
def test_a_publish_that_may_not_wait_for_room_still_waits_for_a_busy_lock(
    python_child, name, overflow
):
    """A publish with no time to wait (``error``, the drop policies, ``*_nowait``, async
    publishes) waits for a writer mutex another process holds for a moment: only room is
    bounded by the timeout."""
    broker = SharedMemoryBroker(name, overflow=overflow)
    sub = SharedMemorySubscriber(broker)
    sub.subscribe("t")
    at = broker._directory._log_at(broker._topics["t"].index)
    holder = python_child(HOLD_THE_LOG_MUTEX, name, str(at))
    assert holder.stdout.readline().strip() == "locked"
    SharedMemoryPublisher(broker).publish_nowait("t", [b"x"])
    assert sub.receive_sync(timeout=5).payload == b"x"
    assert holder.wait(30) == 0
    sub.close()
    broker.close()


def test_a_message_published_just_before_close_topic_is_delivered(name):
    """A reader that found nothing, then sees the topic closed, looks again before it ends:
    what was published between its look and the close is delivered."""
    broker = SharedMemoryBroker(name)
    other = SharedMemoryBroker(name, create=False)
    sub = SharedMemorySubscriber(broker)
    sub.subscribe("t")
    topic = broker._topics["t"]
    real = topic.log

    class LateCloser:
        """The log, except that its first empty read lets a publish and a close land."""

        fired = False

        def __getattr__(self, attribute: str) -> Any:
            return getattr(real, attribute)

        def read(self, *args: Any) -> Any:
            got = real.read(*args)
            if not got and not LateCloser.fired:
                LateCloser.fired = True
                SharedMemoryPublisher(other).send_sync("t", b"last")
                other.close_topic("t")
            return got

    topic.log = LateCloser()  # type: ignore[assignment]
    try:
        assert sub.try_receive() is None
        assert sub.receive_sync(timeout=5).payload == b"last"
    finally:
        topic.log = real
    with pytest.raises(kincir.TopicClosed):
        sub.receive_sync(timeout=5)
    sub.close()
    other.close()
    broker.close()


def test_unsubscribing_with_an_undecodable_message_read_ahead(name):
    broker = SharedMemoryBroker(name)
    pub = SharedMemoryPublisher(broker)
    sub = SharedMemorySubscriber(broker, codec=JsonCodec())
    sub.subscribe("a")
    sub.subscribe("b")
    for payload in (b'"ok"', b"not json{", b'"ok2"'):
        pub.send_sync("a", payload)
    assert sub.receive_sync(timeout=5).payload == "ok"
    sub.unsubscribe("b")
    assert broker.topic_info("b").readers == 0
    with pytest.raises(kincir.DecodeError):
        sub.receive_sync(timeout=5)
    sub.close()
    assert broker.topic_info("a").readers == 0
    broker.close()


DIE_MAKING_A_GROUP = """
import os, sys
from kincir.shm import SharedMemoryBroker, SharedMemorySubscriber, _directory
broker = SharedMemoryBroker(sys.argv[1], create=False)
# killed right after the group's cursor is made, before its entry is written
_directory.Directory._write = lambda self, offset, data: os._exit(9)
SharedMemorySubscriber(broker, group="g").subscribe("t")
"""


def test_a_process_killed_making_a_group_leaves_no_cursor_holding_the_ring(python_child, name):
    broker = SharedMemoryBroker(name, slots=8, overflow="error")
    pub = SharedMemoryPublisher(broker)
    pub.send_sync("t", b"0")
    assert python_child(DIE_MAKING_A_GROUP, name).wait(30) == 9
    assert broker.topic_info("t").readers == 1  # the orphan cursor
    for i in range(20):  # its ring is full after 8: the sweep frees the orphan
        pub.send_sync("t", b"%d" % i)
    assert broker.topic_info("t").readers == 0
    broker.close()


def test_a_collected_handle_takes_its_readers_with_it(name):
    keeper = SharedMemoryBroker(name, slots=8, overflow="error")

    def worker() -> None:
        broker = SharedMemoryBroker(name, create=False)
        sub = SharedMemorySubscriber(broker)
        sub.subscribe("t")
        sub.me = sub  # type: ignore[attr-defined]  # a cycle: collected with the broker

    worker()
    gc.collect()
    assert keeper.topic_info("t").readers == 0
    pub = SharedMemoryPublisher(keeper)
    for _ in range(9):
        pub.send_sync("t", b"x")
    keeper.close()


def test_force_shutdown_drops_what_a_subscriber_read_ahead(name):
    broker = SharedMemoryBroker(name)
    sub = SharedMemorySubscriber(broker)
    sub.subscribe("t")
    SharedMemoryPublisher(broker).publish_sync("t", [b"%d" % i for i in range(5)])
    assert sub.receive_sync(timeout=5).payload == b"0"  # the other four are read ahead
    broker.force_shutdown()
    with pytest.raises(kincir.BrokerShutdown):
        sub.receive_sync(timeout=1)
    with pytest.raises(kincir.BrokerShutdown):
        sub.try_receive()
    assert sub.stats().received == 1
    broker.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() while threads run (3.12+)
def test_a_forked_child_is_a_user_of_its_own(name):
    """A child forked with a handle open takes a lock of its own: its readers leave when it
    closes them, and its parent closing does not remove the file under it."""
    broker = SharedMemoryBroker(name, slots=8)
    broker._topic("t")
    to_parent, to_child = os.pipe(), os.pipe()  # (read end, write end) each
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for _ in range(3):
                sub = SharedMemorySubscriber(broker)
                sub.subscribe("t")
                sub.close()
            assert broker.topic_info("t").readers == 0
            os.write(to_parent[1], b"1")
            os.read(to_child[0], 1)  # until the parent closed its handle
            code = 0 if os.path.exists(segment_path(name)) else 2
            broker.close()
        finally:
            os._exit(code)
    assert os.read(to_parent[0], 1) == b"1"
    broker.close()
    assert os.path.exists(segment_path(name))  # the child still uses it
    os.write(to_child[1], b"1")
    _, status = os.waitpid(pid, 0)
    for fd in (*to_parent, *to_child):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_close_topic_of_a_topic_nobody_made_is_refused(name):
    broker = SharedMemoryBroker(name, topics=2)
    for typo in ("typo.one", "typo.two", "typo.three"):
        with pytest.raises(kincir.memory.TopicNotFound):
            broker.close_topic(typo)
    assert broker.topics() == []
    broker.close()


def test_lag_counts_survive_unsubscribing_and_closing(name):
    broker = SharedMemoryBroker(name, slots=4, overflow="drop_oldest")
    sub = SharedMemorySubscriber(broker)
    sub.subscribe("a")
    sub.subscribe("b")
    pub = SharedMemoryPublisher(broker)
    for _ in range(10):
        pub.send_sync("a", b"x")
    assert sub.stats().lagged == 6
    sub.unsubscribe("a")
    assert sub.stats().lagged == 6
    broker.close()
    assert sub.stats().lagged == 6
    with pytest.raises(kincir.BrokerShutdown):
        sub.receive_sync(timeout=0.1)
