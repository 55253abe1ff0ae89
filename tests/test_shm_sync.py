"""Synchronisation between processes over a shared segment (``kincir_core._shm_sync``): atomics
that add up across processes, futex waits woken from another process and bounded by their
timeout, robust mutexes that exclude each other and survive an owner killed while holding one.
Linux only, compiled engine only (the transport's base has no pure-Python twin)."""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("shared-memory synchronisation needs Linux", allow_module_level=True)
if os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    pytest.skip("the shared-memory layer is compiled only", allow_module_level=True)

from kincir_core import _segment
from kincir_core._segment import Segment
from kincir_core._shm_sync import MUTEX_SIZE, SharedWords

SIZE = 2 * 4096
COUNTER, WORD, MUTEX = 4096, 4096 + 8, 4096 + 64


@pytest.fixture
def segment() -> Iterator[tuple[Segment, SharedWords]]:
    """A fresh segment and a view of it; no file is left behind."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    made = Segment.create(name, SIZE)
    words = SharedWords(made.buffer)
    words.init_mutex(MUTEX)
    yield made, words
    words.release()
    made.close()
    assert not os.path.exists(_segment.segment_path(name))


CHILD = """
import os, signal, sys
from kincir_core._segment import Segment
from kincir_core._shm_sync import SharedWords
COUNTER, WORD, MUTEX = 4096, 4096 + 8, 4096 + 64
segment = Segment.attach(sys.argv[1])
words = SharedWords(segment.buffer)
job = sys.argv[2]
if job == "add":
    for _ in range(int(sys.argv[3])):
        words.add(COUNTER, 1)
elif job == "locked-add":  # a read-modify-write that only the mutex makes safe
    for _ in range(int(sys.argv[3])):
        words.lock(MUTEX)
        words.store(COUNTER, words.load(COUNTER) + 1)
        words.unlock(MUTEX)
elif job == "wait":
    print("waiting", flush=True)
    print("woken" if words.wait(WORD, 0, timeout=30) else "timed out", flush=True)
elif job == "die-locked":
    words.lock(MUTEX)
    words.store(COUNTER, 12345)  # half an update
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
elif job == "hold":
    words.lock(MUTEX)
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    words.unlock(MUTEX)
words.release()
segment.close()
"""


@pytest.fixture
def run_child(python_child):
    """``run_child(segment name, job, *args, stdin=False)``: CHILD in another process."""
    return lambda name, *args, stdin=False: python_child(CHILD, name, *args, stdin=stdin)


def expect_line(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == line


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    return out


# -- atomics ------------------------------------------------------------------------------------


def test_atomics_on_a_word():
    words = SharedWords(mmap.mmap(-1, 4096))
    assert words.load(8) == 0
    words.store(8, 2**64 - 1)
    assert words.add(8, 2) == 2**64 - 1 and words.load(8) == 1  # modulo 2**64
    assert words.compare_and_swap(8, 1, 7) is True and words.load(8) == 7
    assert words.compare_and_swap(8, 1, 9) is False and words.load(8) == 7
    assert words.add32(4, 3) == 0 and words.load32(4) == 3
    words.release()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda w: w.load(4096), IndexError, "outside"),
        (lambda w: w.load(-8), IndexError, "outside"),
        (lambda w: w.load(4), ValueError, "aligned"),
        (lambda w: w.load32(2), ValueError, "aligned"),
        (lambda w: w.lock(4096 - 8), IndexError, "outside"),
        (lambda w: w.wait(0, 0, timeout=-1), ValueError, "timeout"),
        (lambda w: w.wait(0, 0, timeout="1"), TypeError, "timeout"),
    ],
)
def test_a_bad_offset_or_timeout_is_refused(call, error, match):
    words = SharedWords(mmap.mmap(-1, 4096))
    with pytest.raises(error, match=match):
        call(words)
    words.store(0, 5)  # still usable
    assert words.load(0) == 5


def test_a_read_only_buffer_is_refused():
    with pytest.raises(BufferError):
        SharedWords(b"\0" * 4096)


def test_a_released_view_refuses_every_call_and_frees_the_mapping():
    mapping = mmap.mmap(-1, 4096)
    words = SharedWords(mapping)
    with pytest.raises(BufferError):
        mapping.close()  # exported to the view: the memory cannot go away under it
    words.release()
    words.release()  # idempotent
    with pytest.raises(ValueError, match="released"):
        words.load(0)
    mapping.close()


def test_additions_from_several_processes_all_count(segment, run_child):
    made, words = segment
    procs = [run_child(made.name, "add", "20000") for _ in range(3)]
    for _ in range(20000):
        words.add(COUNTER, 1)
    for proc in procs:
        finish(proc)
        assert proc.returncode == 0
    assert words.load(COUNTER) == 80000


# -- futexes ------------------------------------------------------------------------------------


def test_a_wait_is_woken_by_another_process(segment, run_child):
    made, words = segment
    proc = run_child(made.name, "wait")
    expect_line(proc, "waiting")
    time.sleep(0.1)  # let it sleep in the kernel
    words.add32(WORD, 1)
    assert words.wake(WORD) in (0, 1)  # 0: it was between two slices, and sees the change
    assert finish(proc).strip() == "woken"


def test_a_wait_ends_at_its_timeout():
    words = SharedWords(mmap.mmap(-1, 4096))
    started = time.monotonic()
    assert words.wait(0, 0, timeout=0.2) is False
    assert 0.15 < time.monotonic() - started < 5
    assert words.wait(0, 1, timeout=10) is True  # not the expected value: at once


def test_a_signal_interrupts_a_wait_without_a_timeout():
    words = SharedWords(mmap.mmap(-1, 4096))

    class Interrupted(Exception):
        pass

    def raise_interrupted(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            words.wait(0, 0)
        assert time.monotonic() - started < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- robust mutexes -----------------------------------------------------------------------------


def test_the_mutex_excludes_other_processes(segment, run_child):
    made, words = segment
    procs = [run_child(made.name, "locked-add", "5000") for _ in range(2)]
    for _ in range(5000):
        words.lock(MUTEX)
        words.store(COUNTER, words.load(COUNTER) + 1)
        words.unlock(MUTEX)
    for proc in procs:
        finish(proc)
        assert proc.returncode == 0
    assert words.load(COUNTER) == 15000


def test_a_lock_held_elsewhere_times_out(segment, run_child):
    made, words = segment
    proc = run_child(made.name, "hold", stdin=True)
    expect_line(proc, "locked")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="stayed locked"):
        words.lock(MUTEX, timeout=0.2)
    assert time.monotonic() - started < 5
    finish(proc)  # closes its stdin: it unlocks and leaves
    assert words.lock(MUTEX, timeout=10) is False
    words.unlock(MUTEX)


def test_a_mutex_whose_owner_was_killed_passes_to_the_next_locker(segment, run_child):
    made, words = segment
    proc = run_child(made.name, "die-locked")
    expect_line(proc, "locked")
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert words.lock(MUTEX, timeout=10) is True  # its owner died holding it
    assert words.load(COUNTER) == 12345  # what it guarded, for the new owner to repair
    words.store(COUNTER, 0)
    words.mark_consistent(MUTEX)
    words.unlock(MUTEX)
    assert words.lock(MUTEX, timeout=10) is False
    words.unlock(MUTEX)
    assert proc.stdout is not None
    proc.stdout.close()


def test_a_mutex_not_marked_consistent_becomes_unusable(segment, run_child):
    made, words = segment
    proc = run_child(made.name, "die-locked")
    expect_line(proc, "locked")
    proc.wait(30)
    assert proc.stdout is not None
    proc.stdout.close()
    assert words.lock(MUTEX, timeout=10) is True
    words.unlock(MUTEX)  # without mark_consistent
    with pytest.raises(OSError) as caught:
        words.lock(MUTEX, timeout=1)
    assert caught.value.errno == errno.ENOTRECOVERABLE


def test_a_mutex_takes_a_known_aligned_size():
    assert MUTEX_SIZE % 8 == 0 and 24 <= MUTEX_SIZE <= 64
