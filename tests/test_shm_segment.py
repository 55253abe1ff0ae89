"""The shared-memory segment under the shared-memory transport (``kincir_core._segment``): who
may create and attach it, what is refused, and that the last user removes it even when the other
users were killed. Linux only (``/dev/shm`` and ``flock``)."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("shared-memory segments need Linux", allow_module_level=True)

from kincir_core import _segment
from kincir_core._segment import (
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    Segment,
    SegmentError,
    SegmentExists,
    SegmentIncompatible,
    SegmentNotFound,
)

SIZE = 3 * 4096
TEST_PREFIX = "test-"


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh segment name; the test fails if it leaves the segment's file behind."""
    made = f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"
    yield made
    path = _segment.segment_path(made)
    leftover = os.path.exists(path)
    if leftover:
        os.unlink(path)
    assert not leftover, f"{path} was left behind"


def write_file(name: str, data: bytes, mode: int = 0o600) -> str:
    path = _segment.segment_path(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def header(version: int = LAYOUT_VERSION, size: int = SIZE, magic: bytes = MAGIC) -> bytes:
    return struct.pack("<8sIIQQQ", magic, version, HEADER_SIZE, size, 1, 0).ljust(size, b"\0")


CHILD = """
import os, sys, time
from kincir_core._segment import Segment
segment = Segment.attach(sys.argv[1])
segment.buffer[4096:4101] = b"child"
print("attached", flush=True)
if sys.argv[2] == "close":
    segment.close()
elif sys.argv[2] == "exit":
    os._exit(0)  # no close: the kernel drops its lock
else:
    time.sleep(60)  # killed by the test
"""


@pytest.fixture
def child(python_child):
    """``child(segment name, how)``: CHILD in another process, once it has attached."""

    def start(name: str, how: str) -> subprocess.Popen[str]:
        proc = python_child(CHILD, name, how)
        assert proc.stdout.readline().strip() == "attached"
        return proc

    return start


# -- creating and attaching ---------------------------------------------------------------------


def test_a_created_segment_is_a_private_file_with_a_header(name):
    with Segment.create(name, SIZE) as segment:
        info = os.stat(_segment.segment_path(name))
        assert info.st_mode & 0o777 == 0o600
        assert info.st_uid == os.geteuid()
        assert info.st_size == SIZE == segment.size
        assert bytes(segment.buffer[:8]) == MAGIC
        assert segment.created and segment.creator_pid == os.getpid()
        assert abs(segment.created_ns - time.time_ns()) < 60e9


def test_every_user_maps_the_same_memory(name):
    with Segment.create(name, SIZE) as created, Segment.attach(name) as attached:
        assert not attached.created and attached.size == SIZE
        created.buffer[HEADER_SIZE : HEADER_SIZE + 5] = b"hello"
        assert bytes(attached.buffer[HEADER_SIZE : HEADER_SIZE + 5]) == b"hello"
        attached.buffer[SIZE - 1] = 7
        assert created.buffer[SIZE - 1] == 7


def test_the_last_user_to_close_removes_the_segment(name):
    created = Segment.create(name, SIZE)
    attached = Segment.attach(name)
    assert created.close() is False  # another user still has it
    assert os.path.exists(_segment.segment_path(name))
    assert attached.close() is True
    assert not os.path.exists(_segment.segment_path(name))
    assert attached.close() is False and created.close() is False  # idempotent
    assert created.closed and attached.closed
    with pytest.raises(ValueError, match="closed"):
        created.buffer  # noqa: B018


def test_another_process_attaches_and_writes(name, child):
    with Segment.create(name, SIZE) as segment:
        proc = child(name, "close")
        assert proc.wait(30) == 0
        assert bytes(segment.buffer[HEADER_SIZE : HEADER_SIZE + 5]) == b"child"


def test_attaching_to_no_segment_is_refused(name):
    with pytest.raises(SegmentNotFound, match=name) as caught:
        Segment.attach(name)
    assert isinstance(caught.value, LookupError) and isinstance(caught.value, SegmentError)
    assert caught.value.name == name


def test_creating_a_segment_in_use_is_refused(name):
    with Segment.create(name, SIZE) as segment:
        with pytest.raises(SegmentExists, match="in use"):
            Segment.create(name, SIZE)
        assert bytes(segment.buffer[:8]) == MAGIC  # untouched


@pytest.mark.parametrize(
    ("bad_name", "error"),
    [("", ValueError), ("a/b", ValueError), ("../x", ValueError), (".x", ValueError),
     ("x" * 201, ValueError), (b"x", TypeError), (None, TypeError)],
)  # fmt: skip
def test_a_name_that_cannot_be_a_file_name_is_refused(bad_name, error):
    with pytest.raises(error, match="segment name"):
        Segment.create(bad_name, SIZE)
    with pytest.raises(error, match="segment name"):
        Segment.attach(bad_name)


@pytest.mark.parametrize(
    ("size", "error"), [(0, ValueError), (4095, ValueError), (4096.0, TypeError)]
)
def test_a_size_smaller_than_a_header_is_refused(name, size, error):
    with pytest.raises(error, match="size"):
        Segment.create(name, size)
    assert not os.path.exists(_segment.segment_path(name))


# -- what attach refuses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "shorter than a header"),
        (b"not kincir" * 1000, "no kincir magic number"),
        (header(version=LAYOUT_VERSION + 1), "layout version"),
        (header(size=SIZE + 4096)[:SIZE], "its header gives"),
    ],
    ids=["empty", "foreign", "other-version", "wrong-size"],
)
def test_a_file_that_is_not_a_usable_segment_is_refused_and_left_alone(name, data, problem):
    path = write_file(name, data)
    try:
        with pytest.raises(SegmentIncompatible, match=problem):
            Segment.attach(name)
        with open(path, "rb") as f:
            assert f.read() == data
    finally:
        os.unlink(path)


def test_a_segment_readable_by_others_is_refused(name):
    path = write_file(name, header(), mode=0o644)
    try:
        with pytest.raises(SegmentIncompatible, match="not private"):
            Segment.attach(name)
    finally:
        os.unlink(path)


def test_a_symlink_in_place_of_a_segment_is_not_followed(name, tmp_path):
    target = tmp_path / "target"
    target.write_bytes(header())
    os.symlink(target, _segment.segment_path(name))
    try:
        with pytest.raises(OSError):
            Segment.attach(name)
    finally:
        os.unlink(_segment.segment_path(name))
    assert target.read_bytes() == header()


def test_attach_waits_for_the_creator_to_finish_the_header(name):
    path = write_file(name, b"")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a creator writing its header
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(Segment.attach(name, timeout=10)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # still waiting
    os.write(fd, header())
    fcntl.flock(fd, fcntl.LOCK_SH)  # the creator is done
    waiter.join(10)
    (segment,) = got
    assert isinstance(segment, Segment) and segment.size == SIZE
    segment.close()  # another user (fd) holds it: not removed
    os.close(fd)
    os.unlink(path)


def test_attach_gives_up_on_a_creator_that_never_finishes(name):
    path = write_file(name, b"")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(SegmentIncompatible, match="laying it out"):
            Segment.attach(name, timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        os.close(fd)
        os.unlink(path)


# -- processes that die -------------------------------------------------------------------------


def test_a_killed_user_does_not_keep_the_segment_alive(name, child):
    segment = Segment.create(name, SIZE)
    proc = child(name, "sleep")
    assert segment.close() is False  # the child holds it
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # the child never closed; the kernel dropped its lock, so the next close would remove it:
    # attach and close again as the last user
    last = Segment.attach(name)
    assert bytes(last.buffer[HEADER_SIZE : HEADER_SIZE + 5]) == b"child"
    assert last.close() is True
    assert not os.path.exists(_segment.segment_path(name))


def test_a_segment_every_user_left_without_closing_is_replaced_by_create(name, child):
    with Segment.create(name, SIZE) as segment:
        child(name, "exit").wait(30)
        old_created = segment.created_ns
        # this process's lock is the only one left; drop it without closing, as a kill would
        os.close(segment._fd)
        segment._map.close()  # type: ignore[union-attr]
        segment._map = None
    replaced = Segment.create(name, 2 * SIZE)
    try:
        assert replaced.size == 2 * SIZE and replaced.created_ns != old_created
        assert bytes(replaced.buffer[HEADER_SIZE : HEADER_SIZE + 5]) == b"\0" * 5
    finally:
        assert replaced.close() is True


def test_a_foreign_file_nobody_holds_is_replaced_by_create(name):
    write_file(name, b"left over by something else")
    with Segment.create(name, SIZE) as segment:
        assert bytes(segment.buffer[:8]) == MAGIC


def test_users_closing_at_once_remove_the_segment_exactly_once(name):
    def close(user: Segment, start: threading.Barrier, removed: list[bool]) -> None:
        start.wait()
        removed.append(user.close())

    for _ in range(20):
        users = [Segment.create(name, SIZE)] + [Segment.attach(name) for _ in range(3)]
        start = threading.Barrier(len(users))
        removed: list[bool] = []
        threads = [threading.Thread(target=close, args=(u, start, removed)) for u in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(removed) == [False, False, False, True]
        assert not os.path.exists(_segment.segment_path(name))
