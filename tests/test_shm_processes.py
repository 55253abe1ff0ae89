"""kincir.shm across processes: fan-out and groups between processes checked by the history
checker of the stress tests, and processes killed with SIGKILL while they publish or wait."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("kincir.shm runs on Linux", allow_module_level=True)

if os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    pytest.skip("kincir.shm needs the compiled engine", allow_module_level=True)

from test_stress_checker import History

from kincir.shm import SharedMemoryBroker, SharedMemoryPublisher, SharedMemorySubscriber
from kincir_core._segment import segment_path

# A child process: ``python -P -c CHILD <segment> <job> <args...>``.
CHILD = """
import random, sys, time, zlib
from kincir.shm import SharedMemoryBroker, SharedMemoryPublisher, SharedMemorySubscriber

name, job, *args = sys.argv[1:]
broker = SharedMemoryBroker(name, create=False)
if job == "read":  # topics (comma-separated), group or "-": print every message until shutdown
    topics, group = args
    sub = SharedMemorySubscriber(broker, None if group == "-" else group)
    for topic in topics.split(","):
        sub.subscribe(topic)
    print("ready", flush=True)
    for msg in sub:
        print(msg.topic, msg.sequence, msg.payload.decode())
    print("end", flush=True)
elif job == "produce":  # producer, topics, count, seed: publish stamped batches, print them
    producer, topics, count, seed = int(args[0]), args[1].split(","), int(args[2]), int(args[3])
    pub = SharedMemoryPublisher(broker)
    rng = random.Random(seed)
    index = 0
    while index < count:
        topic = rng.choice(topics)
        size = min(rng.randint(1, 5), count - index)
        pub.publish_sync(topic, [b"%d:%d" % (producer, index + k) for k in range(size)])
        for k in range(size):
            print(topic, index + k)
        index += size
    print("end", flush=True)
elif job == "flood":  # producer: publish checksummed batches until killed
    producer = args[0]
    pub = SharedMemoryPublisher(broker)
    index = 0
    while True:
        batch = []
        for _ in range(random.randint(1, 8)):
            body = b"%s:%d" % (producer.encode(), index)
            batch.append(body + b":%d" % zlib.crc32(body))
            index += 1
        pub.publish_sync("t", batch, timeout=60)
elif job == "hold":  # take the broker's own mutex (topics and groups), then wait to be killed
    broker._directory._lock()
    print("locked", flush=True)
    time.sleep(60)
elif job == "wait":  # subscribe, then wait in a receive until killed
    sub = SharedMemorySubscriber(broker, None if args[0] == "-" else args[0])
    sub.subscribe("t")
    print("ready", flush=True)
    sub.receive_sync()
"""


@dataclass
class Child:
    """A child process whose standard output a thread collects (a full pipe would stall it)."""

    process: Any
    lines: list[str]
    reader: threading.Thread

    def wait_for(self, line: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            assert time.monotonic() < deadline, f"no {line!r} from the child: {self.lines[-5:]}"
            assert self.process.poll() is None or line in self.lines, "the child ended"
            time.sleep(0.005)

    def finish(self, timeout: float = 60) -> list[str]:
        self.process.wait(timeout)
        self.reader.join(timeout)
        assert self.process.returncode == 0, f"child exited {self.process.returncode}"
        return self.lines


@pytest.fixture
def child(python_child: Callable[..., Any]) -> Callable[..., Child]:
    def start(*args: str) -> Child:
        process = python_child(CHILD, *args)
        lines: list[str] = []

        def collect() -> None:
            for line in process.stdout:
                lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        return Child(process, lines, reader)

    return start


@pytest.fixture
def broker() -> Iterator[SharedMemoryBroker]:
    made = SharedMemoryBroker(f"test-{uuid.uuid4().hex[:12]}", slots=64, slot_size=128)
    yield made
    made.close()
    assert not os.path.exists(segment_path(made.name))


@dataclass(frozen=True)
class Record:
    topic: str
    sequence: int
    payload: bytes


def test_producers_and_readers_in_processes_lose_duplicate_and_reorder_nothing(broker, child):
    """Three producer processes publish random batches to two topics through a 64-slot ring;
    two plain readers and a group of three, each in its own process, read both. The history
    checker: every plain reader and the group as a whole got every message once, each
    producer's in order, with gapless sequence numbers consistent across readers."""
    topics = "orders,payments"
    readers = {
        "plain-1": child(broker.name, "read", topics, "-"),
        "plain-2": child(broker.name, "read", topics, "-"),
        **{f"member-{i}": child(broker.name, "read", topics, "workers") for i in range(3)},
    }
    for reader in readers.values():
        reader.wait_for("ready")
    count = 3000
    producers = [
        child(broker.name, "produce", str(p), topics, str(count), str(p)) for p in range(3)
    ]
    history = History(seed=0)
    for number, producer in enumerate(producers):
        for line in producer.finish(120):
            if line != "end":
                topic, index = line.split()
                history.producer(number).append((topic, int(index)))
    assert broker.shutdown(timeout=60), "the readers did not drain"
    for name, reader in readers.items():
        group = "workers" if name.startswith("member") else None
        record = history.reader(name, tuple(topics.split(",")), group)
        lines = reader.finish()
        assert lines[-1] == "end"
        for line in lines[1:-1]:
            topic, sequence, payload = line.split()
            record.got.append(Record(topic, int(sequence), payload.encode()))
    history.check()
    members = [len(history.readers[i].got) for i in range(2, 5)]
    assert sum(members) == 3 * count and min(members) > 0, members


def test_producers_killed_at_random_never_tear_lose_or_wedge_the_topic(broker, child):
    """Producer processes flood one topic and are killed with SIGKILL at random instants (in a
    publish, holding the log's mutex, or waiting for room). What the reader gets is whole
    (checksums hold) and in order per producer; a batch is there entirely or not at all; the
    topic goes on working afterwards."""
    sub = SharedMemorySubscriber(broker)
    sub.subscribe("t")
    rng = random.Random(7)
    seen: dict[str, int] = {}
    got = 0

    def drain(until: float) -> None:
        nonlocal got
        while time.monotonic() < until:
            try:
                msg = sub.receive_sync(timeout=0.05)
            except TimeoutError:
                continue
            producer, index, crc = msg.payload.split(b":")
            assert zlib.crc32(b"%s:%s" % (producer, index)) == int(crc), f"torn: {msg.payload!r}"
            name = producer.decode()
            assert int(index) > seen.get(name, -1), f"{name} out of order"
            seen[name] = int(index)
            got += 1

    for round_ in range(6):
        floods = [child(broker.name, "flood", f"p{round_}-{k}") for k in range(2)]
        drain(time.monotonic() + rng.uniform(0.05, 0.3))
        for flood in floods:
            flood.process.send_signal(signal.SIGKILL)
        for flood in floods:
            flood.process.wait(30)
            assert flood.process.returncode == -signal.SIGKILL
    drain(time.monotonic() + 0.5)
    assert got > 1000, got
    SharedMemoryPublisher(broker).send_sync("t", b"after:0:%d" % zlib.crc32(b"after:0"), timeout=5)
    assert sub.receive_sync(timeout=5).payload.startswith(b"after:")


def test_a_process_killed_holding_the_brokers_mutex_does_not_stop_topics_being_made(broker, child):
    holder = child(broker.name, "hold")
    holder.wait_for("locked")
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(30)
    sub = SharedMemorySubscriber(broker, "workers")
    sub.subscribe("made.after")  # takes the mutex its dead owner left
    SharedMemoryPublisher(broker).send_sync("made.after", b"x", timeout=5)
    assert sub.receive_sync(timeout=5).payload == b"x"
    assert broker.topics() == ["made.after"]


@pytest.mark.parametrize("group", ["-", "workers"])
def test_a_reader_killed_while_waiting_leaves_the_others_working(broker, child, group):
    waiting = child(broker.name, "wait", group)
    waiting.wait_for("ready")
    other = SharedMemorySubscriber(broker, None if group == "-" else group)
    other.subscribe("t")
    waiting.process.send_signal(signal.SIGKILL)
    waiting.process.wait(30)
    pub = SharedMemoryPublisher(broker)
    for i in range(200):  # three rings' worth: the dead plain reader's entry is freed
        pub.send_sync("t", b"%d" % i, timeout=10)
        assert other.receive_sync(timeout=5).payload == b"%d" % i
    if group == "-":
        assert broker.topic_info("t").readers == 1


def test_the_readme_pipeline_runs_on_a_process_pool(readme_blocks, tmp_path):
    """The README's worked example, as a script (a pool's workers import its functions)."""
    script = tmp_path / "squares.py"
    script.write_text(readme_blocks("## Several processes")[0])
    done = subprocess.run(
        [sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "100 328350\n"
    assert not os.path.exists(segment_path("squares"))
