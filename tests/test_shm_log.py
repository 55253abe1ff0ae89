"""One topic's log in a shared segment (``kincir_core._shm_log``): sequences, atomic batches,
fan-out, room, readers and publishers in other processes, and processes killed while reading or
while publishing. Linux only, compiled engine only."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the shared-memory log needs Linux", allow_module_level=True)
if os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    pytest.skip("the shared-memory layer is compiled only", allow_module_level=True)

from kincir_core import Message, _segment
from kincir_core._segment import HEADER_SIZE, Segment
from kincir_core._shm_log import (
    DROP_NEWEST,
    DROP_OLDEST,
    READERS_AT,
    RECORD_HEADER,
    LogFormatError,
    LogFull,
    ShmLog,
    region_size,
    wait_any,
)
from kincir_core._shm_sync import SharedWords

SLOTS, SLOT_SIZE, READERS = 64, 128, 4
AT = HEADER_SIZE  # the log's offset in the segment


def new_log(slots: int = SLOTS, readers: int = READERS) -> ShmLog:
    log = ShmLog(mmap.mmap(-1, AT + region_size(slots, SLOT_SIZE, readers)), AT)
    log.format(slots, SLOT_SIZE, readers)
    return log


@pytest.fixture
def shared() -> Iterator[tuple[str, ShmLog]]:
    """A segment holding one log, its name for child processes; nothing left behind."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    segment = Segment.create(name, AT + region_size(SLOTS, SLOT_SIZE, READERS))
    log = ShmLog(segment.buffer, AT)
    log.format(SLOTS, SLOT_SIZE, READERS)
    yield name, log
    log.release()
    segment.close()
    assert not os.path.exists(_segment.segment_path(name))


CHILD = f"""
import os, signal, sys, time
from kincir_core._segment import Segment
from kincir_core._shm_log import ShmLog
from kincir_core._shm_sync import SharedWords
segment = Segment.attach(sys.argv[1])
log = ShmLog(segment.buffer, {AT})
job, arg = sys.argv[2], sys.argv[3]
if job == "produce":  # arg: "tag:count:batch"
    tag, count, batch = arg.split(":")
    count, batch = int(count), int(batch)
    for start in range(0, count, batch):
        log.publish([b"%s:%d" % (tag.encode(), i) for i in range(start, min(count, start + batch))],
                    timeout=None)
elif job == "group-read":  # arg: "group:count": reads the group until count were read in all
    group, total = map(int, arg.split(":"))
    got = []
    print("ready", flush=True)
    while True:
        records = log.read(group, 7, timeout=0.5)
        got.extend(m.sequence for m in records)
        if not records and log.position(group) > total:  # all claimed, by whichever reader
            break
    print(" ".join(map(str, got)), flush=True)
elif job == "produce-until-killed":  # arg: tag; batches of 1 to 5, each payload checksummed
    import random, zlib
    n = 0
    while True:
        batch = []
        for _ in range(random.randint(1, 5)):
            body = b"%s:%d" % (arg.encode(), n)
            batch.append(body + b":%d" % zlib.crc32(body))
            n += 1
        log.publish(batch, timeout=None)
elif job == "read-until-killed":  # a reader in another process, slow, killed at some point
    reader = log.add_reader()
    while True:
        log.read(reader, 3, timeout=0.01)
        time.sleep(0.001)
elif job == "produce-dropping-oldest":  # arg: count; checksummed, one at a time
    import zlib
    for n in range(int(arg)):
        body = b"%d" % n
        log.publish([body + b":%d" % zlib.crc32(body)], overflow=2)  # DROP_OLDEST
elif job == "publish-without-file-descriptors":  # /proc cannot be opened while it publishes
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    hoard = []
    try:
        while True:
            hoard.append(open(os.devnull))
    except OSError:
        pass
    try:
        log.publish([b"y"])
        print("published", flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
    for f in hoard:
        f.close()
    sys.stdin.read()  # stays alive until the test is done with the log
elif job == "read-forever":  # joins, says so, never reads: the ring fills behind it
    log.add_reader()
    print("joined", flush=True)
    time.sleep(60)
elif job == "die-publishing":  # holds the writer mutex, scribbles on the next slots, dies
    words = SharedWords(segment.buffer)
    words.lock({AT})
    head = log.head
    print("locked", head, flush=True)
    segment.buffer[{AT} + int(arg):{AT} + int(arg) + 64] = b"\\xff" * 64
    os.kill(os.getpid(), signal.SIGKILL)
log.release()
segment.close()
"""


@pytest.fixture
def run_child(python_child):
    """``run_child(segment name, job, arg, stdin=False)``: CHILD in another process."""
    return lambda name, job, arg, stdin=False: python_child(CHILD, name, job, arg, stdin=stdin)


def payloads(records: list[Message]) -> list[bytes]:
    return [m.payload for m in records]


# -- one process --------------------------------------------------------------------------------


def test_a_batch_gets_consecutive_sequence_numbers_from_1():
    log = new_log()
    reader = log.add_reader()
    assert log.publish([b"a", b"bb"]) == 1
    assert log.publish([b"c"]) == 3
    got = log.read(reader, 10)
    assert [(m.sequence, m.payload) for m in got] == [(1, b"a"), (2, b"bb"), (3, b"c")]
    now_ms = time.time() * 1000
    assert all(abs(m.enqueued_at - now_ms) < 60_000 for m in got)
    assert log.read(reader, 10) == [] and log.head == 4 and log.position(reader) == 4


def test_every_reader_reads_every_message_from_when_it_joined():
    log = new_log()
    early = log.add_reader()
    log.publish([b"before"])
    late = log.add_reader()
    log.publish([b"after"])
    assert payloads(log.read(early, 10)) == [b"before", b"after"]
    assert payloads(log.read(late, 10)) == [b"after"]


def test_a_read_takes_at_most_its_limit():
    log = new_log()
    reader = log.add_reader()
    log.publish([b"%d" % i for i in range(10)])
    assert payloads(log.read(reader, 3)) == [b"0", b"1", b"2"]
    assert payloads(log.read(reader, 100)) == [b"%d" % i for i in range(3, 10)]
    assert log.read(reader, 0) == []


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ([b"ok", "text"], TypeError, "bytes or a Message, not str"),
        ([b"ok", bytearray(b"x")], TypeError, "bytes or a Message, not bytearray"),
        ([b"ok", Message("text")], TypeError, "payload is bytes, not str"),
        ([b"ok", b"x" * (SLOT_SIZE - RECORD_HEADER + 1)], ValueError, "does not fit a slot"),
        ([b"x"] * (SLOTS + 1), LogFull, "larger than the log"),
    ],
)
def test_a_bad_batch_is_refused_whole(batch, error, match):
    log = new_log()
    reader = log.add_reader()
    with pytest.raises(error, match=match):
        log.publish(batch)
    assert log.head == 1
    log.publish([b"x" * (SLOT_SIZE - RECORD_HEADER)])  # the largest that fits
    assert payloads(log.read(reader, 10)) == [b"x" * (SLOT_SIZE - RECORD_HEADER)]


def test_a_full_log_refuses_or_waits_for_its_slowest_reader():
    log = new_log(slots=8)
    fast, slow = log.add_reader(), log.add_reader()
    log.publish([b"x"] * 8)
    log.read(fast, 8)
    with pytest.raises(LogFull, match="no room"):
        log.publish([b"y"])  # timeout 0: at once
    assert log.held() == 8 and log.head == 9
    threading.Timer(0.2, lambda: log.read(slow, 3)).start()
    started = time.monotonic()
    assert log.publish([b"y"] * 3, timeout=10) == 9  # waited for the slow reader
    assert 0.1 < time.monotonic() - started < 5
    assert payloads(log.read(fast, 10)) == [b"y"] * 3


def test_a_batch_changed_while_its_publisher_waits_is_published_as_it_was_checked():
    log = new_log(slots=8)
    reader = log.add_reader()
    log.publish([b"x"] * 8)
    batch = [b"a", b"b"]
    published: list[int] = []
    waiting = threading.Thread(target=lambda: published.append(log.publish(batch, timeout=10)))
    waiting.start()
    time.sleep(0.1)  # it waits for room, the GIL released
    batch[0] = "not bytes"
    batch.append(object())
    assert len(log.read(reader, 8)) == 8  # room
    waiting.join(10)
    assert published == [9]
    assert payloads(log.read(reader, 8)) == [b"a", b"b"]


def test_drop_newest_writes_what_fits_and_counts_the_rest():
    log = new_log(slots=8)
    reader = log.add_reader()
    log.publish([b"old"] * 6)
    assert log.publish([b"%d" % i for i in range(5)], overflow=DROP_NEWEST) == 7
    assert log.head == 9 and log.dropped == 3
    assert payloads(log.read(reader, 10))[6:] == [b"0", b"1"]
    log.publish([b"x"] * 8)
    assert log.publish([b"y"], overflow=DROP_NEWEST) == 17 and log.head == 17  # none fits
    assert log.dropped == 4


def test_drop_oldest_moves_the_readers_behind_and_counts_what_they_lose():
    log = new_log(slots=8)
    slow, fast, group = log.add_reader(), log.add_reader(), log.add_group()
    log.publish([b"%d" % i for i in range(8)])
    assert len(log.read(fast, 8)) == 8
    assert log.publish([b"8", b"9", b"10"], overflow=DROP_OLDEST) == 9
    assert (log.lagged(slow), log.lagged(fast), log.lagged(group)) == (3, 0, 3)
    assert [m.sequence for m in log.read(slow, 100)] == list(range(4, 12))
    assert payloads(log.read(fast, 100)) == [b"8", b"9", b"10"]
    assert payloads(log.read(group, 100))[0] == b"3"
    assert log.dropped == 0


def test_an_unknown_overflow_is_refused():
    log = new_log()
    with pytest.raises(ValueError, match="overflow"):
        log.publish([b"x"], overflow=7)
    assert log.head == 1


def test_without_readers_nothing_holds_the_ring():
    log = new_log(slots=8)
    for _ in range(5):
        log.publish([b"x"] * 8)
    assert log.held() == 0 and log.head == 41


def test_a_reader_that_left_no_longer_holds_the_ring():
    log = new_log(slots=8)
    reader = log.add_reader()
    log.publish([b"x"] * 8)
    log.remove_reader(reader)
    log.publish([b"y"] * 8)
    with pytest.raises(ValueError, match="not a reader"):
        log.read(reader, 1)


def test_reader_entries_are_bounded():
    log = new_log(readers=2)
    log.add_reader()
    second = log.add_reader()
    with pytest.raises(LogFull, match="reader entries"):
        log.add_reader()
    log.remove_reader(second)
    assert log.add_reader() == second


def test_a_region_is_checked_before_use():
    mapping = mmap.mmap(-1, AT + region_size(SLOTS, SLOT_SIZE, READERS))
    with pytest.raises(LogFormatError, match="no log"):
        ShmLog(mapping, AT).head  # noqa: B018
    for slots, size, readers, match in [
        (6, SLOT_SIZE, 1, "power of two"),
        (8, 20, 1, "multiple of 8"),
        (8, SLOT_SIZE, 0, "max_readers"),
        (4096, SLOT_SIZE, 1, "does not fit"),
    ]:
        with pytest.raises(LogFormatError, match=match):
            ShmLog(mapping, AT).format(slots, size, readers)
    with pytest.raises(ValueError, match="64-aligned"):
        ShmLog(mapping, 8)


def test_a_blocked_read_is_woken_by_a_publish():
    log = new_log()
    reader = log.add_reader()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(log.read(reader, 10, timeout=None)))
    waiter.start()
    time.sleep(0.1)
    assert not got
    log.publish([b"wake"])
    waiter.join(5)
    assert [payloads(g) for g in got] == [[b"wake"]]  # type: ignore[arg-type]


def test_a_read_ends_at_its_timeout():
    log = new_log()
    reader = log.add_reader()
    started = time.monotonic()
    assert log.read(reader, 1, timeout=0.2) == []
    assert 0.15 < time.monotonic() - started < 5


# -- several processes --------------------------------------------------------------------------


def test_messages_from_several_producer_processes_arrive_once_each_in_order(shared, run_child):
    name, log = shared
    reader = log.add_reader()
    count = 3000
    procs = [run_child(name, "produce", f"p{k}:{count}:{1 + k * 7}") for k in range(3)]
    last = {f"p{k}": -1 for k in range(3)}
    seen, sequences = 0, []
    deadline = time.monotonic() + 60
    while seen < 3 * count and time.monotonic() < deadline:
        for msg in log.read(reader, 50, timeout=1):
            seq, payload = msg.sequence, msg.payload
            tag, number = payload.decode().split(":")
            assert int(number) == last[tag] + 1, f"{tag} out of order or duplicated"
            last[tag] = int(number)
            sequences.append(seq)
            seen += 1
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    assert seen == 3 * count and all(v == count - 1 for v in last.values())
    assert sequences == list(range(1, 3 * count + 1))  # gapless, in order


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_killed_reader_stops_holding_the_ring(shared, run_child, reaped):
    name, log = shared
    proc = run_child(name, "read-forever", "")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "joined"
    log.publish([b"x"] * SLOTS)
    with pytest.raises(LogFull):
        log.publish([b"y"])  # its reader is alive: the ring is full
    proc.send_signal(signal.SIGKILL)
    if reaped:
        proc.wait(30)
    else:  # ended, but its parent has not waited for it yet
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert log.publish([b"y"]) == SLOTS + 1  # its entry was freed
    assert log.freed_readers == 1 and log.held() == 0
    proc.wait(30)
    proc.stdout.close()


def test_a_reader_whose_pid_now_names_another_process_stops_holding_the_ring():
    buffer = mmap.mmap(-1, AT + region_size(8, SLOT_SIZE, READERS))
    log = ShmLog(buffer, AT)
    log.format(8, SLOT_SIZE, READERS)
    reader = log.add_reader()
    log.publish([b"x"] * 8)
    with pytest.raises(LogFull):
        log.publish([b"y"])  # this process is its reader, and alive
    started_at = AT + READERS_AT + reader * 32 + 16  # the entry's start time
    buffer[started_at : started_at + 8] = (12345).to_bytes(8, "little")  # as if pid reused
    assert log.publish([b"y"]) == 9
    assert log.freed_readers == 1
    log.release()


def test_a_publisher_that_cannot_look_at_readers_still_lets_go_of_the_writer_mutex(
    shared, run_child
):
    name, log = shared
    reader = log.add_reader()
    log.publish([b"x"] * SLOTS)
    started_at = AT + READERS_AT + reader * 32 + 16  # the entry's start time
    with Segment.attach(name) as view:
        view.buffer[started_at : started_at + 8] = (12345).to_bytes(8, "little")  # pid reused
    proc = run_child(name, "publish-without-file-descriptors", "", stdin=True)
    # it cannot open /proc: the reader counts as alive, the log as full, and the mutex is let go
    assert proc.stdout.readline().strip() == "LogFull"
    assert log.publish([b"y"], timeout=5) == SLOTS + 1  # here /proc opens: the entry is freed
    assert log.freed_readers == 1


def test_a_region_with_a_broken_geometry_is_refused():
    mapping = mmap.mmap(-1, AT + region_size(SLOTS, SLOT_SIZE, READERS))
    ShmLog(mapping, AT).format(SLOTS, SLOT_SIZE, READERS)
    mapping[AT + 88 : AT + 92] = (6).to_bytes(4, "little")  # slots: not a power of two
    with pytest.raises(LogFormatError, match="geometry"):
        ShmLog(mapping, AT).head  # noqa: B018


def test_a_publisher_killed_holding_the_writer_mutex_leaves_no_torn_message(shared, run_child):
    name, log = shared
    reader = log.add_reader()
    log.publish([b"first"])
    first_free_slot = READERS_AT + READERS * 32 + 1 * SLOT_SIZE  # the slot sequence 2 would take
    proc = run_child(name, "die-publishing", str(first_free_slot))
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["locked", "2"]
    proc.wait(30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert payloads(log.read(reader, 10)) == [b"first"]  # the scribbled slot is not visible
    assert log.publish([b"second"], timeout=10) == 2  # the mutex passed on, consistent
    assert [(m.sequence, m.payload) for m in log.read(reader, 10)] == [(2, b"second")]


# -- consumer groups ----------------------------------------------------------------------------


def test_a_group_hands_each_message_to_one_of_its_readers():
    log = new_log()
    group, plain = log.add_group(), log.add_reader()
    log.publish([b"%d" % i for i in range(10)])
    first = log.read(group, 4)
    second = log.read(group, 100)
    assert [m.sequence for m in first + second] == list(range(1, 11))
    assert log.read(group, 10) == []
    assert len(log.read(plain, 100)) == 10  # a plain reader still sees every message


def test_a_group_holds_its_unread_messages_with_no_reader_at_it():
    log = new_log(slots=8)
    group = log.add_group()
    log.publish([b"x"] * 8)
    with pytest.raises(LogFull):
        log.publish([b"y"])
    assert log.held() == 8
    assert len(log.read(group, 3)) == 3
    log.publish([b"y"] * 3)
    log.remove_reader(group)  # deleting it lets the ring go
    assert log.held() == 0


def test_group_readers_in_several_processes_share_the_messages_once_each(shared, run_child):
    name, log = shared
    group = log.add_group()
    total = 2000
    procs = [run_child(name, "group-read", f"{group}:{total}") for _ in range(3)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for start in range(0, total, 25):
        log.publish([b"m%d" % i for i in range(start, start + 25)], timeout=30)
    taken: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        mine = [int(seq) for seq in out.split()]
        assert mine == sorted(mine)  # each reader's share comes in order
        taken += mine
    assert sorted(taken) == list(range(1, total + 1))  # every message once


# -- kills at any instant -----------------------------------------------------------------------


def test_processes_killed_at_random_never_tear_lose_reorder_or_wedge_a_stream(shared, run_child):
    """Producers and readers in other processes are killed (SIGKILL) at random instants, and
    replaced, for a few seconds, while this process reads everything: every record it reads is
    whole (its checksum holds), and each producer's records arrive in order with no gap and no
    duplicate, so each stream is a prefix of what its producer made (a batch cut by a kill is
    not there at all). Publishers never stay blocked by dead readers."""
    import random
    import zlib

    name, log = shared
    reader = log.add_reader()
    rng = random.Random(1234)
    producers: dict[str, subprocess.Popen[str]] = {}
    readers: list[subprocess.Popen[str]] = []
    made = 0

    def start_producer() -> None:
        nonlocal made
        tag = f"p{made}"
        made += 1
        producers[tag] = run_child(name, "produce-until-killed", tag)

    last: dict[str, int] = {}
    records = 0

    def drain(timeout: float) -> int:
        nonlocal records
        got = log.read(reader, 64, timeout=timeout)
        for msg in got:
            payload = msg.payload
            tag, number, crc = payload.split(b":")
            assert zlib.crc32(tag + b":" + number) == int(crc), f"torn record {payload!r}"
            key, value = tag.decode(), int(number)
            assert value == last.get(key, -1) + 1, f"{key}: {value} after {last.get(key)}"
            last[key] = value
            records += 1
        return len(got)

    def stop(proc: subprocess.Popen[str]) -> None:
        proc.kill()
        proc.wait(30)  # reaped: a zombie would still count as a live reader
        if proc.stdout is not None:
            proc.stdout.close()

    for _ in range(2):
        start_producer()
    deadline = time.monotonic() + 3.0
    next_kill = time.monotonic() + 0.1
    try:
        while time.monotonic() < deadline:
            drain(0.01)
            if time.monotonic() >= next_kill:
                next_kill = time.monotonic() + rng.uniform(0.05, 0.2)
                victim = rng.choice(["producer", "reader"])
                if victim == "producer":
                    stop(producers.pop(rng.choice(sorted(producers))))
                    start_producer()
                else:
                    if readers:
                        stop(readers.pop(rng.randrange(len(readers))))
                    readers.append(run_child(name, "read-until-killed", ""))
    finally:
        for proc in [*producers.values(), *readers]:
            stop(proc)
    while drain(0.1):
        pass
    assert records > 1000 and made > 5
    assert log.publish([b"after"], timeout=10) > 0  # dead readers do not hold the ring


def test_a_reader_lapped_by_another_process_never_reads_a_record_written_over(shared, run_child):
    """A producer process publishes with DROP_OLDEST as fast as it can into a small ring while
    this process reads slowly: records are lost to lapping, never torn, and what was read plus
    what was lagged is everything."""
    import zlib

    name, log = shared
    reader = log.add_reader()
    count = 20000
    proc = run_child(name, "produce-dropping-oldest", str(count))
    read, last = 0, 0
    while True:
        records = log.read(reader, 5, timeout=0.5)
        if not records and proc.poll() is not None and log.position(reader) == log.head:
            break
        for msg in records:
            seq, payload = msg.sequence, msg.payload
            body, crc = payload.split(b":")
            assert zlib.crc32(body) == int(crc), f"torn record {payload!r}"
            assert int(body) == seq - 1 and seq > last
            last = seq
            read += 1
        time.sleep(0.0005)  # a slow reader
    assert proc.wait(60) == 0
    assert read + log.lagged(reader) == count
    assert log.lagged(reader) > 0  # it was lapped


def test_a_message_keeps_its_uuid_and_metadata_and_every_reader_sees_the_same():
    log = new_log()
    first, second = log.add_reader(), log.add_reader()
    sent = Message(b"body", {"customer": "Alice", "unicode": "h\u00e9llo \u2603", "": ""})
    log.publish([sent, b"plain"])
    got = log.read(first, 10)
    assert [m.payload for m in got] == [b"body", b"plain"]
    assert got[0].uuid == sent.uuid
    assert {k: v for k, v in got[0].metadata.items() if not k.startswith("_")} == dict(
        sent.metadata
    )
    assert [m.uuid for m in log.read(second, 10)] == [m.uuid for m in got]  # drawn once, shared


def test_metadata_counts_against_the_slot():
    log = new_log()
    room = SLOT_SIZE - RECORD_HEADER
    with pytest.raises(ValueError, match="does not fit a slot"):
        log.publish([Message(b"x" * (room - 8), {"k": "v"})])
    assert log.head == 1


def test_a_reader_joining_with_keep_gets_what_no_reader_took():
    log = new_log()
    log.publish([b"orphan 1", b"orphan 2"])
    first = log.add_reader(keep=True)
    assert payloads(log.read(first, 10)) == [b"orphan 1", b"orphan 2"]
    plain = log.add_reader()
    log.publish([b"seen"])
    late = log.add_reader(keep=True)
    assert log.read(late, 10) == []  # a reader was there: nothing was an orphan
    log.remove_reader(first)
    log.remove_reader(late)
    log.publish([b"after"])
    log.remove_reader(plain)  # the last to leave: what it did not read stays for the next
    assert log.reader_count() == 0
    assert payloads(log.read(log.add_group(keep=True), 10)) == [b"seen", b"after"]


def test_keep_gives_at_most_what_the_ring_still_holds():
    log = new_log()
    log.publish([b"%d" % i for i in range(SLOTS)])
    log.publish([b"%d" % i for i in range(SLOTS, SLOTS + 3)])
    assert payloads(log.read(log.add_reader(keep=True), 100)) == [
        b"%d" % i for i in range(3, SLOTS + 3)
    ]


def test_wait_reads_nothing():
    log = new_log()
    reader = log.add_reader()
    assert log.wait(reader, timeout=0.05) is False
    threading.Timer(0.05, lambda: log.publish([b"x"])).start()
    assert log.wait(reader, timeout=10) is True
    assert log.wait(reader, timeout=0) is True  # still there
    assert payloads(log.read(reader, 10)) == [b"x"]


def two_logs_with_a_bell() -> tuple[mmap.mmap, ShmLog, ShmLog, SharedWords]:
    """Two logs in one buffer and their bell at offset 0 (a sleeper count at 4)."""
    size = region_size(SLOTS, SLOT_SIZE, READERS)
    buffer = mmap.mmap(-1, AT + 2 * size + 4096)
    logs = [ShmLog(buffer, AT + k * (size + 4096 - size % 4096), f"t{k}", 0) for k in range(2)]
    for log in logs:
        log.format(SLOTS, SLOT_SIZE, READERS)
    return buffer, logs[0], logs[1], SharedWords(buffer)


def test_one_wait_covers_several_logs_and_a_publish_rings_the_bell_for_a_sleeper():
    _buffer, first, second, words = two_logs_with_a_bell()
    readers = [(first, first.add_reader()), (second, second.add_reader())]
    first.spin = 0  # sleep at once: the wake must come from the bell
    assert wait_any(readers, timeout=0.05) is False
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(wait_any(readers, timeout=30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while words.load32(4) != 1:  # asleep on the bell
        assert time.monotonic() < deadline
        time.sleep(0.001)
    rung = words.load32(0)
    second.publish([b"to the second"])
    waiter.join(10)
    assert got == [True] and words.load32(0) == rung + 1 and words.load32(4) == 0
    assert payloads(second.read(readers[1][1], 10)) == [b"to the second"]
    words.release()


def test_releasing_a_log_wakes_this_process_s_waiters_first():
    """A thread waiting on a log when it is released (its broker closed) leaves the wait
    before the buffer may be unmapped: no crash, the wait ends as at a deadline."""
    log = new_log()
    reader = log.add_reader()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(log.wait(reader, timeout=30)))
    waiter.start()
    time.sleep(0.1)  # spinning done, asleep
    start = time.monotonic()
    log.release()
    waiter.join(10)
    assert got == [False] and time.monotonic() - start < 5
    with pytest.raises(ValueError, match="released"):
        log.read(reader, 1)
