# cython: language_level=3, embedsignature=True
"""One topic's log in a shared segment (Linux): the third layer of the shared-memory transport
(issue 17), over ``_segment`` (the memory) and ``_shm_sync.h`` (atomics, futexes, robust
mutexes). Bytes in, bytes out, readers and consumer groups in any process, and what a publish does
without room: wait (``block``, or ``error`` with no time to wait), ``DROP_NEWEST`` or
``DROP_OLDEST``. No topic names yet: the layers above will bring them.

Layout of a log's region, at an 8-aligned offset of the segment (``region_size`` bytes):

    0    writer mutex       robust, process-shared (MUTEX_SIZE <= 64 bytes)
    64   head       u64     the next sequence number to publish (the first is 1)
    72   data_word  u32     bumped after every publish: readers sleep on it
    76   data_waiters u32   readers asleep (or about to be) on data_word
    80   room_word  u32     bumped when a reader moves on while a publisher waits for room
    84   room_waiters u32   publishers asleep (or about to be) on room_word
    88   slots      u32     how many slots (a power of two)
    92   slot_size  u32     bytes per slot, its 24-byte record header included
    96   max_readers u32
    100  magic      u32     LOG_MAGIC once formatted
    104  dropped    u64     records DROP_NEWEST publishes dropped
    112  kept_from  u64     with no reader left: the first record a reader joining with ``keep``
                            starts at (the position of the last one to leave; 1 at first)
    120  refusing   u32     OPEN, or why publishes are refused: ENDED (no more records),
                            DRAINING (readers read what is left), STOPPED (reads refused too)
    128  low_mark   u64     at most the lowest reader position (publishers keep it, under the
                            mutex): a publish that finds room below it skips the readers' scan
    136  reader_end u32     1 + the highest reader entry ever taken: scans stop there
    144  freed      u64     reader entries freed because their process had died
    192  readers    max_readers x 32 bytes: pid u64 (0: free; 2**63: a consumer group's
                    cursor, which no process owns), position u64 (the next sequence it reads),
                    started u64 (the owner process's start time), lagged u64 (records a
                    DROP_OLDEST publish moved it past)
    then slots      slots x slot_size bytes, a record each: sequence u64, length u32 (of the
                    body), flags u32, enqueued_at (Unix ms) u64, uuid (two u64), the body: the
                    payload, or with ``HAS_METADATA`` a u32 length, the metadata as JSON, then
                    the payload

Why it is correct, and what a process killed at any instant leaves:

- Publishers take the writer mutex, write whole slots, and only then store ``head`` (sequentially
  consistent, so a release): a reader loads ``head`` and reads only below it, so it never reads a
  slot being written. A publisher killed while holding the mutex never moved ``head``: the next
  locker is told its owner died, finds ``head`` as consistent as before, and writes over the torn
  slots. Nothing published is lost or half-seen; the dead publisher's batch is simply not there.
- A slot is written again only when every live reader's position is past it (the publisher
  checks ``head - lowest position < slots`` under the mutex), and a reader stores its new
  position only after it copied the payloads out, so a reader never sees a slot change under it.
  Positions only grow, so a publisher's scan, racing with readers, can only underestimate room.
- A reader joins under the writer mutex at ``head`` (it sees what is published after it joined)
  and leaves by storing pid 0. A reader killed without leaving keeps its position, which would
  hold the ring for ever: a publisher that finds no room checks whether the processes of the
  readers holding it are alive, and frees the entries of dead ones (``freed_readers`` counts
  them). Alive means a process of that pid, not a zombie, that started when the reader's did
  (Linux's ``/proc/<pid>/stat``), so a pid the system gave again to another process does not
  count.
- ``DROP_OLDEST`` moves the positions of the readers a ring behind forward, by
  compare-and-swap, before it writes over their records, and counts what each lost in its
  ``lagged``. Every reader therefore commits what it copied by compare-and-swap too: if its
  position moved while it copied, the copy may hold records written over, and it is dropped.
- A consumer group is one durable entry whose position its readers claim: a reader copies the
  records after the position it loaded, then moves the position with a compare-and-swap; if
  another reader moved it first, the copy is dropped and it looks again. The slots it copied
  cannot be reused before the group's position passes them, so a successful claim never holds a
  record written over; a failed one may have copied a slot being rewritten, so every length read
  from a slot is cut to the slot.
- Waits use the futex words so that a reader that keeps up makes no system call, and a publish
  makes one only when someone sleeps: a reader counts itself in ``data_waiters``, then reads
  ``head`` again, then sleeps on the ``data_word`` it read before; a publisher stores ``head``,
  bumps ``data_word``, then wakes only if ``data_waiters`` is not 0. With sequentially consistent
  atomics one of the two sees the other. Sleeps last at most 50 ms, so a wake lost to a
  publisher killed between its ``head`` and its wake costs a reader 50 ms, never a hang.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.unistd cimport getpid

import json
import logging

_logger = logging.getLogger("kincir.shm")

from ._shm_sync cimport (
    deadline_of, kincir_atomic_add_u32, kincir_atomic_add_u64, kincir_atomic_cas_u64,
    kincir_atomic_load_u32, kincir_atomic_load_u64, kincir_atomic_store_u32,
    kincir_atomic_store_u64, kincir_cpu_relax, kincir_futex_wait, kincir_futex_wake,
    kincir_monotonic, kincir_shared_mutex_init, lock_mutex, next_sleep, past,
    pthread_mutex_consistent, pthread_mutex_t, pthread_mutex_unlock, raise_errno, sched_yield,
    SharedView,
)
from ._message cimport Message, copy_metadata, delivered_copy, ensure_id, new_id

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clock, timespec* ts)
    enum:
        CLOCK_REALTIME

cdef uint32_t _LOG_MAGIC = 0x4B4C4F47  # "KLOG"
LOG_MAGIC = _LOG_MAGIC
cdef enum:
    _RECORD_HEADER = 40  # bytes before a record's body (struct Record)
    _READER_ENTRY = 32
    _READERS_AT = 192
RECORD_HEADER = _RECORD_HEADER
cdef enum:
    _HAS_METADATA = 1
cdef enum:
    _OPEN = 0
    _ENDED = 1
    _DRAINING = 2
    _STOPPED = 3
#: ``refusing`` codes: what ``refuse`` stops (each stops what those before it do, and more).
OPEN, ENDED, DRAINING, STOPPED = _OPEN, _ENDED, _DRAINING, _STOPPED
READER_ENTRY = _READER_ENTRY
READERS_AT = _READERS_AT
cdef enum:
    _WAIT = 0
    _DROP_NEWEST = 1
    _DROP_OLDEST = 2
#: ``publish``'s ``overflow``: what a publish does when the log has no room.
WAIT, DROP_NEWEST, DROP_OLDEST = _WAIT, _DROP_NEWEST, _DROP_OLDEST
# a reader entry's pid for a consumer group's cursor: no process owns it
cdef uint64_t _GROUP = <uint64_t>1 << 63
cdef uint32_t _ALL = 0x7FFFFFFF
# the position of a freed reader entry: past any head, so no read through it commits
cdef uint64_t _GONE = 0xFFFFFFFFFFFFFFFF
# _start_time of a process this one may not look at
cdef uint64_t _UNKNOWN = 0xFFFFFFFFFFFFFFFF

if sizeof(pthread_mutex_t) > 64:  # the layout gives the writer mutex 64 bytes
    raise ImportError(f"a pthread mutex takes {sizeof(pthread_mutex_t)} bytes here, over 64")


class LogFull(Exception):
    """The log has no room for the batch (the slowest live reader is a ring behind)."""


class LogClosed(Exception):
    """The log refuses the call: ``args[0]`` is its ``refusing`` code (ENDED, DRAINING,
    STOPPED)."""


class LogFormatError(Exception):
    """The region is not a formatted log, or its geometry is invalid."""


cdef struct LogHead:
    uint64_t head
    uint32_t data_word
    uint32_t data_waiters
    uint32_t room_word
    uint32_t room_waiters
    uint32_t slots
    uint32_t slot_size
    uint32_t max_readers
    uint32_t magic
    uint64_t dropped
    uint64_t kept_from
    uint32_t refusing
    uint32_t spare
    uint64_t low_mark
    uint32_t reader_end
    uint32_t spare2
    uint64_t freed


cdef struct Record:
    uint64_t seq
    uint32_t length
    uint32_t flags
    uint64_t enqueued_at
    uint64_t id_hi
    uint64_t id_lo


# one record of a batch being published, prepared before the writer mutex is taken
cdef struct Outgoing:
    PyObject* payload
    PyObject* metadata  # the JSON block, or NULL
    uint64_t id_hi
    uint64_t id_lo


cdef dict _NO_METADATA = copy_metadata(None)


# what a wait looks at: a reader's position, the head it waits to pass, and the log's refusal
cdef struct Watch:
    uint64_t* position
    uint64_t* head
    uint32_t* refusing


cdef bint _ready(Watch* watch, Py_ssize_t n) noexcept nogil:
    """Whether a watched reader has a record to read, or its log refuses publishes."""
    cdef Py_ssize_t i
    for i in range(n):
        if (kincir_atomic_load_u64(watch[i].position) < kincir_atomic_load_u64(watch[i].head)
                or kincir_atomic_load_u32(watch[i].refusing) != _OPEN):
            return True
    return False


cdef void _spin(Watch* watch, Py_ssize_t n, double until, bint* closing) noexcept nogil:
    """``_ready`` looked at until ``until`` (monotonic) at most, yielding the core between
    looks so that a process it shares the core with runs."""
    cdef int _
    while True:
        # looking at head takes its cache line from the publisher that writes it: look
        # between pauses, and let messages gather meanwhile
        for _ in range(32):
            kincir_cpu_relax()
        if _ready(watch, n) or closing[0]:
            return
        sched_yield()
        if kincir_monotonic() >= until:
            return


cdef struct Reader:
    uint64_t pid
    uint64_t position
    uint64_t started  # the owner's start time (see _start_time): a reused pid is not its owner
    uint64_t lagged  # records DROP_OLDEST moved it past


cdef uint64_t _start_time(int pid) except? 0:
    """When process ``pid`` started (clock ticks since boot: field 22 of /proc/<pid>/stat), 0
    when there is no such process, or it has ended and only waits to be reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    except PermissionError:  # /proc mounted with hidepid: it cannot be told dead
        return _UNKNOWN
    # the command name (field 2) is in parentheses and may hold anything: fields after the
    # last ")" start at field 3, the state
    fields = line[line.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return 0
    return int(fields[19])


def region_size(uint32_t slots, uint32_t slot_size, uint32_t max_readers):
    """Bytes a log of this geometry takes."""
    return _region_size(slots, slot_size, max_readers)


cdef inline Py_ssize_t _region_size(uint32_t slots, uint32_t slot_size,
                                    uint32_t max_readers) noexcept:
    return _READERS_AT + <Py_ssize_t>max_readers * _READER_ENTRY + <Py_ssize_t>slots * slot_size


cdef int _check_overflow(int overflow) except -1:
    if overflow != _WAIT and overflow != _DROP_NEWEST and overflow != _DROP_OLDEST:
        raise ValueError(f"overflow must be WAIT, DROP_NEWEST or DROP_OLDEST, not {overflow}")
    return 0


cdef uint64_t _now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>(ts.tv_nsec // 1000000)


@cython.final
cdef class ShmLog(SharedView):
    """A view of one log's region in a shared buffer (the buffer stays exported until
    ``release``)."""

    cdef unsigned char* region
    cdef pthread_mutex_t* mutex
    cdef LogHead* log
    cdef Reader* readers
    cdef unsigned char* slot_area
    cdef uint64_t mask
    #: The topic its messages are delivered from.
    cdef readonly str topic
    #: Seconds a reader spins (yielding the core between looks) before it sleeps: a message
    #: that comes meanwhile costs neither side a system call. 0: sleep at once.
    cdef public double spin
    #: Entries of dead readers this view freed (the log's count, of every process, is
    #: ``freed``).
    cdef public Py_ssize_t freed_readers
    # the buffer's bell: a futex word (and its sleepers' count) every publish rings while
    # someone sleeps on it, so that one wait covers the logs of several topics (or NULL)
    cdef uint32_t* bell
    # threads of this process inside a wait on this view, and whether release() waits for
    # them to leave (it must not unmap what they look at)
    cdef int active
    cdef bint closing

    def __cinit__(self, buffer, Py_ssize_t offset, str topic not None="", Py_ssize_t bell=-1):
        # SharedView's __cinit__ has exported the buffer
        self.topic = topic
        self.spin = 50e-6
        if offset < 0 or offset % 64 or offset + _READERS_AT > self.size:
            SharedView.release(self)
            raise ValueError(
                f"a log's offset must be 64-aligned and inside the buffer, not {offset}"
            )
        if bell >= 0:
            if bell % 8 or bell + 8 > self.size:
                SharedView.release(self)
                raise ValueError("a bell's offset must be 8-aligned and inside the buffer")
            self.bell = <uint32_t*>(self.base + bell)
        self.region = self.base + offset
        self.mutex = <pthread_mutex_t*>self.region
        self.log = <LogHead*>(self.region + 64)

    def release(self):
        """Stop using the buffer (it may be closed after this); idempotent. Threads of this
        process waiting on this view are woken and leave first (their waits end as at a
        deadline)."""
        if self.held and self.active:
            self.closing = True
            self._ring_all()
            kincir_atomic_add_u32(&self.log.room_word, 1)
            kincir_futex_wake(&self.log.room_word, _ALL)
            while self.active:
                with nogil:
                    kincir_futex_wait(&self.log.data_word, self.log.data_word, 0.001)
        SharedView.release(self)

    cdef void _ring_all(self) noexcept:
        """Wake every waiter on this log, and every waiter on the bell."""
        kincir_atomic_add_u32(&self.log.data_word, 1)
        kincir_futex_wake(&self.log.data_word, _ALL)
        if self.bell != NULL:
            kincir_atomic_add_u32(&self.bell[0], 1)
            kincir_futex_wake(&self.bell[0], _ALL)

    cdef int _check(self) except -1:
        self._check_held()
        if self.readers == NULL:
            if kincir_atomic_load_u32(&self.log.magic) != _LOG_MAGIC:
                raise LogFormatError("no log is formatted at this offset")
            self._map_geometry()
        return 0

    cdef int _map_geometry(self) except -1:
        cdef uint32_t slots = self.log.slots, slot_size = self.log.slot_size
        cdef Py_ssize_t size = _region_size(slots, slot_size, self.log.max_readers)
        cdef Py_ssize_t offset = self.region - self.base
        # what format() checked, checked again: the region is shared, and its mask and sizes
        # bound every access
        if (slots == 0 or slots & (slots - 1) or slot_size < _RECORD_HEADER + 8 or slot_size % 8
                or self.log.max_readers == 0):
            raise LogFormatError("the log's geometry is not one format() writes")
        if offset + size > self.size:
            raise LogFormatError(f"the log takes {size} bytes, past the end of the buffer")
        self.readers = <Reader*>(self.region + _READERS_AT)
        self.slot_area = (self.region + _READERS_AT
                          + <Py_ssize_t>self.log.max_readers * _READER_ENTRY)
        self.mask = self.log.slots - 1
        return 0

    # -- making one -----------------------------------------------------------------------------

    def format(self, uint32_t slots, uint32_t slot_size, uint32_t max_readers):
        """Lay out an empty log here (by the segment's creator, before anyone else uses it)."""
        cdef int err
        self._check_held()
        if slots == 0 or slots & (slots - 1):
            raise LogFormatError(f"slots must be a power of two, not {slots}")
        if slot_size < _RECORD_HEADER + 8 or slot_size % 8:
            raise LogFormatError(f"slot_size must be a multiple of 8 above {_RECORD_HEADER}")
        if max_readers == 0:
            raise LogFormatError("max_readers must be at least 1")
        if (self.region - self.base) + _region_size(slots, slot_size, max_readers) > self.size:
            raise LogFormatError("the log does not fit in the buffer")
        err = kincir_shared_mutex_init(self.mutex)
        if err:
            raise_errno(err)
        self.log.head = 1
        self.log.data_word = self.log.data_waiters = 0
        self.log.room_word = self.log.room_waiters = 0
        self.log.slots = slots
        self.log.slot_size = slot_size
        self.log.max_readers = max_readers
        self.log.dropped = 0
        self.log.kept_from = 1
        self.log.refusing = _OPEN
        self.log.low_mark = 1
        self.log.reader_end = 0
        self.log.freed = 0
        self._map_geometry()
        for i in range(max_readers):
            self.readers[i].pid = 0
            self.readers[i].position = 0
        kincir_atomic_store_u32(&self.log.magic, _LOG_MAGIC)  # after everything above

    # -- the writer mutex -----------------------------------------------------------------------

    cdef int _lock(self, double deadline) except -1:
        """Lock the writer mutex, up to ``deadline`` (monotonic; < 0: no limit). A publisher
        that died holding it left ``head`` consistent (see the module docstring)."""
        if lock_mutex(self.mutex, deadline):
            pthread_mutex_consistent(self.mutex)
        return 0

    cdef void _unlock(self) noexcept:
        pthread_mutex_unlock(self.mutex)

    # -- readers --------------------------------------------------------------------------------

    def add_reader(self, bint keep=False):
        """Join as a reader of what is published from now on; the reader's index. With
        ``keep``, a reader that joins a log no reader holds starts at what was published since
        the last one left (what the ring still holds of it)."""
        cdef int pid = getpid()
        return self._add_entry(<uint64_t>pid, _start_time(pid), keep)

    def add_group(self, bint keep=False):
        """A consumer group's cursor, from now on (``keep``: as ``add_reader``): ``read`` with
        its index hands each message to one of the readers (in any process) that read through
        it. Durable: it holds its unread messages until ``remove_reader``, whatever process
        made it."""
        return self._add_entry(_GROUP, 0, keep)

    cdef uint32_t _add_entry(self, uint64_t owner, uint64_t started,
                             bint keep) except? 0xFFFFFFFF:
        cdef uint32_t i
        cdef uint64_t head, start
        self._check()
        self._lock(-1.0)
        try:
            head = kincir_atomic_load_u64(&self.log.head)
            start = head
            if keep and self._count() == 0:
                start = self._kept_start(head)
            for i in range(self.log.max_readers):
                if self.readers[i].pid == 0:
                    if start < self.log.low_mark:
                        self.log.low_mark = start
                    if i >= self.log.reader_end:
                        self.log.reader_end = i + 1
                    kincir_atomic_store_u64(&self.readers[i].position, start)
                    self.readers[i].started = started
                    self.readers[i].lagged = 0
                    kincir_atomic_store_u64(&self.readers[i].pid, owner)
                    return i
        finally:
            self._unlock()
        raise LogFull(f"all {self.log.max_readers} reader entries are taken")

    def remove_reader(self, uint32_t index):
        """Leave (a reader) or delete (a group); its messages no longer hold the ring."""
        self._check()
        self._reader(index)
        self._lock(-1.0)
        try:
            if kincir_atomic_load_u64(&self.readers[index].pid) != 0:
                self._leave(index)
        finally:
            self._unlock()
        self._room_freed()

    cdef uint64_t _kept_start(self, uint64_t head) noexcept:
        """Where a reader joining with ``keep`` a log no reader holds starts (the mutex held):
        the ring holds the last ``slots`` records, and none is written over while the mutex is
        held, so from there on the reader holds them."""
        cdef uint64_t start = self.log.kept_from
        if head > self.log.slots and start < head - self.log.slots:
            start = head - self.log.slots
        return start

    cdef void _leave(self, uint32_t index) noexcept:
        """Free entry ``index`` (the mutex held); the last reader to leave keeps its position
        for the next to join with ``keep``."""
        cdef uint64_t position = kincir_atomic_load_u64(&self.readers[index].position)
        kincir_atomic_store_u64(&self.readers[index].pid, 0)
        # a read in flight on this entry (another thread of its process) fails its
        # compare-and-swap and drops its copy: its slots no longer count as held
        kincir_atomic_store_u64(&self.readers[index].position, _GONE)
        if self._count() == 0:
            self.log.kept_from = position

    cdef uint32_t _count(self) noexcept:
        cdef uint32_t i, n = 0
        for i in range(self.log.reader_end):
            if kincir_atomic_load_u64(&self.readers[i].pid) != 0:
                n += 1
        return n

    def group_cursors(self):
        """The entries of consumer groups' cursors (which no process owns)."""
        self._check()
        return [i for i in range(self.log.reader_end)
                if kincir_atomic_load_u64(&self.readers[i].pid) == _GROUP]

    def reader_count(self):
        """How many reader entries (readers and groups) are taken."""
        self._check()
        return self._count()

    cdef Reader* _reader(self, uint32_t index) except NULL:
        if index >= self.log.max_readers or kincir_atomic_load_u64(&self.readers[index].pid) == 0:
            raise ValueError(f"reader {index} is not a reader of this log")
        return &self.readers[index]

    cdef uint64_t _lowest(self, uint64_t head) noexcept:
        """The lowest position of the readers (``head`` with none)."""
        cdef uint64_t low = head, position
        cdef uint32_t i
        for i in range(self.log.reader_end):
            if kincir_atomic_load_u64(&self.readers[i].pid) != 0:
                position = kincir_atomic_load_u64(&self.readers[i].position)
                if position < low:
                    low = position
        return low

    cdef int _free_dead_readers(self, uint64_t below) except -1:
        """Free the entries of readers at positions below ``below`` whose process is gone (the
        mutex held, so nothing here may raise: a reader that cannot be looked at counts as
        alive)."""
        cdef uint32_t i
        cdef uint64_t pid, started
        for i in range(self.log.reader_end):
            pid = kincir_atomic_load_u64(&self.readers[i].pid)
            if pid != 0 and pid != _GROUP and (
                    kincir_atomic_load_u64(&self.readers[i].position) < below):
                try:
                    started = _start_time(<int>pid)
                except BaseException:  # /proc unreadable (no file descriptor left, or an
                    # interrupt): cannot tell; the mutex is held, nothing may escape
                    started = _UNKNOWN
                if started != _UNKNOWN and started != self.readers[i].started:
                    self._leave(i)
                    self.freed_readers += 1
                    self.log.freed += 1
        return 0

    cdef void _lap_readers(self, uint64_t low) noexcept:
        """Move every reader and group below ``low`` up to it, counting what each loses (the
        mutex held). A reader that moves on meanwhile wins its compare-and-swap or makes this
        one look again; one that copied slots about to be written finds its claim gone."""
        cdef uint32_t i
        cdef uint64_t position
        for i in range(self.log.reader_end):
            if kincir_atomic_load_u64(&self.readers[i].pid) == 0:
                continue
            while True:
                position = kincir_atomic_load_u64(&self.readers[i].position)
                if position >= low:
                    break
                if kincir_atomic_cas_u64(&self.readers[i].position, position, low):
                    kincir_atomic_add_u64(&self.readers[i].lagged, low - position)
                    break

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, list messages, timeout=0.0, int overflow=_WAIT):
        """Append ``messages`` as one batch: consecutive sequence numbers. Each is ``bytes``
        (a payload; its uuid is drawn here) or a ``Message`` whose payload is ``bytes`` (its
        uuid and metadata travel with it). Returns the first sequence number; ``head - first``
        were written. With no room, ``overflow`` says what happens: ``WAIT`` up to ``timeout``
        seconds (None: no limit), then LogFull, nothing written; ``DROP_NEWEST`` writes what
        fits and drops (and counts) the rest; ``DROP_OLDEST`` moves the readers that are a ring
        behind past the oldest records (counting them in each reader's ``lagged``) and writes
        the whole batch."""
        # a snapshot: waiting for the mutex or for room releases the GIL, and another thread
        # could change the list meanwhile (what is written must be what was checked)
        cdef tuple items = tuple(messages)
        cdef Py_ssize_t n = len(items)
        cdef list blocks = []  # keeps the metadata blocks alive while they are written
        cdef Outgoing* batch
        self._check()
        if n > <Py_ssize_t>self.log.slots:
            raise LogFull(f"a batch of {n} is larger than the log ({self.log.slots} slots)")
        _check_overflow(overflow)
        if n == 0:
            return kincir_atomic_load_u64(&self.log.head)
        cdef Outgoing small[16]  # most batches: no allocation
        if n <= 16:
            batch = &small[0]
        else:
            batch = <Outgoing*>malloc(n * sizeof(Outgoing))
        if batch == NULL:
            raise MemoryError()
        try:
            self._prepare(items, batch, blocks)
            return self._append(batch, n, deadline_of(timeout), overflow)
        finally:
            if batch != &small[0]:
                free(batch)

    cdef int _prepare(self, tuple items, Outgoing* batch, list blocks) except -1:
        """Check every message of a batch and fill ``batch`` with what each record holds."""
        cdef Py_ssize_t i
        cdef object block
        for i in range(len(items)):
            block = self._prepare_one(items[i], &batch[i])
            if block is not None:
                blocks.append(block)
        return 0

    cdef object _prepare_one(self, object item, Outgoing* out):
        """Check one message and fill ``out``; the metadata block it points to (which the
        caller keeps alive while it is written), or None."""
        cdef Py_ssize_t size
        cdef Py_ssize_t limit = <Py_ssize_t>self.log.slot_size - _RECORD_HEADER
        cdef object payload
        cdef Message msg
        cdef bytes block = None
        out.metadata = NULL
        if PyBytes_CheckExact(item):
            payload = item
            new_id(&out.id_hi, &out.id_lo)
        elif type(item) is Message:
            msg = <Message>item
            payload = msg.payload
            ensure_id(msg)
            out.id_hi, out.id_lo = msg._id_hi, msg._id_lo
            if msg._meta:
                block = json.dumps(msg._meta, ensure_ascii=False).encode()
                out.metadata = <PyObject*>block
        else:
            raise TypeError(
                f"a shared-memory message is bytes or a Message, not {type(item).__name__}")
        if not PyBytes_CheckExact(payload):
            raise TypeError(f"a shared-memory payload is bytes, not {type(payload).__name__}")
        out.payload = <PyObject*>payload
        size = PyBytes_GET_SIZE(payload)
        if block is not None:
            size += 4 + PyBytes_GET_SIZE(block)
        if size > limit:
            raise ValueError(f"a message of {size} bytes does not fit a slot ({limit} bytes)")
        return block

    def publish_one(self, message, timeout=0.0, int overflow=_WAIT):
        """``publish([message], timeout, overflow)``, without a list: the sequence number."""
        cdef Outgoing out
        cdef object _kept  # the metadata block out points to, alive until written
        self._check()
        _check_overflow(overflow)
        _kept = self._prepare_one(message, &out)
        return self._append(&out, 1, deadline_of(timeout), overflow)

    cdef uint64_t _append(self, Outgoing* batch, Py_ssize_t n, double deadline,
                          int overflow) except 0:
        """``_write_batch``, counted among this view's active calls (``release`` waits)."""
        self.active += 1
        try:
            return self._write_batch(batch, n, deadline, overflow)
        finally:
            self.active -= 1

    cdef uint64_t _write_batch(self, Outgoing* batch, Py_ssize_t n, double deadline,
                               int overflow) except 0:
        cdef uint64_t head, first, now
        cdef double step
        cdef uint32_t room
        cdef bint full
        cdef Py_ssize_t fits
        cdef uint32_t refusing
        cdef Py_ssize_t freed = self.freed_readers
        while True:
            if self.closing:  # this view is being released: as if the broker stopped
                raise LogClosed(_STOPPED)
            # no deadline for the mutex: it is held for a copy at most, and a publish that
            # may not wait (timeout 0) must still get in; the timeout is for room
            self._lock(-1.0)
            refusing = kincir_atomic_load_u32(&self.log.refusing)
            if refusing != _OPEN:
                self._unlock()
                raise LogClosed(refusing)
            head = kincir_atomic_load_u64(&self.log.head)
            # positions only grow, and a reader joining below low_mark lowers it: room below
            # it is room for sure
            if head - self.log.low_mark + n <= self.log.slots:
                break
            self.log.low_mark = self._lowest(head)
            if head - self.log.low_mark + n > self.log.slots:
                self._free_dead_readers(head + n - self.log.slots)
                self.log.low_mark = self._lowest(head)
            if head - self.log.low_mark + n <= self.log.slots:
                break
            if overflow == _DROP_OLDEST:
                self._lap_readers(head + n - self.log.slots)
                break
            if overflow == _DROP_NEWEST:
                fits = self.log.slots - (head - self.log.low_mark)
                kincir_atomic_add_u64(&self.log.dropped, <uint64_t>(n - fits))
                n = fits
                break
            # no room: count as a room waiter, then look again; a reader that moves on after
            # the second look sees the count and bumps room_word, which ends the sleep at once
            room = kincir_atomic_load_u32(&self.log.room_word)
            kincir_atomic_add_u32(&self.log.room_waiters, 1)
            self.log.low_mark = self._lowest(head)
            full = head - self.log.low_mark + n > self.log.slots
            self._unlock()
            try:
                if full:
                    if past(deadline):
                        raise LogFull(f"no room for {n} in a log of {self.log.slots} slots")
                    step = next_sleep(deadline)
                    with nogil:
                        kincir_futex_wait(&self.log.room_word, room, step)
            finally:
                kincir_atomic_add_u32(&self.log.room_waiters, <uint32_t>-1)
            PyErr_CheckSignals()
        now = _now_ms()
        first = head
        for i in range(n):
            self._write(self.slot_area + ((head - 1) & self.mask) * self.log.slot_size,
                        &batch[i], head, now)
            head += 1
        kincir_atomic_store_u64(&self.log.head, head)  # the batch is visible from here
        self._unlock()
        kincir_atomic_add_u32(&self.log.data_word, 1)
        if kincir_atomic_load_u32(&self.log.data_waiters):
            kincir_futex_wake(&self.log.data_word, _ALL)
        if self.bell != NULL and kincir_atomic_load_u32(&self.bell[1]):
            kincir_atomic_add_u32(&self.bell[0], 1)
            kincir_futex_wake(&self.bell[0], _ALL)
        if self.freed_readers != freed:
            self._report_freed(self.freed_readers - freed)
        return first

    cdef void _report_freed(self, Py_ssize_t count) noexcept:
        try:
            _logger.warning(
                "topic %r: freed %d reader entries of processes that ended without leaving "
                "(their unread messages no longer hold the ring)", self.topic, count)
        except Exception:
            pass

    @cython.cdivision(True)
    cdef inline void _write(self, unsigned char* slot, Outgoing* out, uint64_t seq,
                            uint64_t now) noexcept:
        cdef Record* record = <Record*>slot
        cdef unsigned char* body = slot + _RECORD_HEADER
        cdef Py_ssize_t size = PyBytes_GET_SIZE(<object>out.payload), meta = 0
        record.seq = seq
        record.flags = 0
        if out.metadata != NULL:
            meta = PyBytes_GET_SIZE(<object>out.metadata)
            (<uint32_t*>body)[0] = <uint32_t>meta
            memcpy(body + 4, PyBytes_AS_STRING(<object>out.metadata), meta)
            body += 4 + meta
            meta += 4
            record.flags = _HAS_METADATA
        record.length = <uint32_t>(size + meta)
        record.enqueued_at = now
        record.id_hi = out.id_hi
        record.id_lo = out.id_lo
        memcpy(body, PyBytes_AS_STRING(<object>out.payload), size)

    cdef void _room_freed(self) noexcept:
        kincir_atomic_add_u32(&self.log.room_word, 1)
        if kincir_atomic_load_u32(&self.log.room_waiters):
            kincir_futex_wake(&self.log.room_word, _ALL)

    # -- reading --------------------------------------------------------------------------------

    def read(self, uint32_t index, Py_ssize_t limit, timeout=0.0):
        """Up to ``limit`` Messages for reader or group ``index`` (delivered from ``topic``),
        waiting up to ``timeout`` seconds (None: no limit) for the first; [] on timeout, or at
        once when there is none and the log refuses publishes. A group's records go to one of
        its readers each. LogClosed once the log is STOPPED."""
        cdef Reader* reader
        cdef double deadline
        self._check()
        reader = self._reader(index)
        if kincir_atomic_load_u32(&self.log.refusing) == _STOPPED:
            raise LogClosed(_STOPPED)
        if limit <= 0:
            return []
        deadline = deadline_of(timeout)
        # counted among the active calls: the copy may run Python code (metadata), letting
        # another thread release this view, which must wait until the copy is done
        self.active += 1
        try:
            return self._read(reader, limit, deadline)
        finally:
            self.active -= 1

    cdef list _read(self, Reader* reader, Py_ssize_t limit, double deadline):
        cdef uint64_t position, head, end
        cdef list out
        cdef Watch watch = self._watch(reader)
        while True:
            if self.closing:
                return []
            position = kincir_atomic_load_u64(&reader.position)
            head = kincir_atomic_load_u64(&self.log.head)
            if position >= head:
                if kincir_atomic_load_u32(&self.log.refusing) != _OPEN or not self._await(
                        &watch, 1, &self.log.data_word, &self.log.data_waiters, deadline):
                    return []
                continue
            end = head if head - position <= <uint64_t>limit else position + limit
            out = self._copy(position, end)
            # the copy counts only if nothing moved the position meanwhile: another reader of
            # the group, or a DROP_OLDEST publish that may have written over what was copied
            # (positions only grow, so no ABA); else look again
            if kincir_atomic_cas_u64(&reader.position, position, end):
                break
        if kincir_atomic_load_u32(&self.log.room_waiters):
            self._room_freed()
        return out

    def wait(self, uint32_t index, timeout=0.0):
        """Wait up to ``timeout`` seconds (None: no limit) until reader or group ``index`` has
        a record to read, or the log refuses publishes; whether either happened. Reads nothing
        (a caller that may be cancelled waits here, in another thread, and reads where it
        cannot be)."""
        self._check()
        cdef Watch watch = self._watch(self._reader(index))
        return self._await(&watch, 1, &self.log.data_word, &self.log.data_waiters,
                           deadline_of(timeout)) == 1

    def refuse(self, uint32_t code):
        """Refuse publishes from now on (``code``: ENDED, DRAINING or STOPPED, which also
        refuses reads); a code never goes back to a lesser one. Wakes every waiter."""
        self._check()
        if code < _ENDED or code > _STOPPED:
            raise ValueError(f"code must be ENDED, DRAINING or STOPPED, not {code}")
        self._lock(-1.0)
        if code > self.log.refusing:
            kincir_atomic_store_u32(&self.log.refusing, code)
        self._unlock()
        self._ring_all()
        kincir_atomic_add_u32(&self.log.room_word, 1)
        kincir_futex_wake(&self.log.room_word, _ALL)

    @property
    def refusing(self):
        """OPEN, or the code ``refuse`` was last given."""
        self._check()
        return kincir_atomic_load_u32(&self.log.refusing)

    @property
    def stopped(self):
        """Whether reads are refused (STOPPED), or this view was released: the one look a
        reader's hot path takes before it hands out what it read ahead."""
        return not self.held or kincir_atomic_load_u32(&self.log.refusing) == _STOPPED

    def wake_readers(self):
        """Wake every reader waiting on this log (to look at something else: a shutdown)."""
        self._check()
        self._ring_all()

    cdef Watch _watch(self, Reader* reader) noexcept:
        cdef Watch watch
        watch.position = &reader.position
        watch.head = &self.log.head
        watch.refusing = &self.log.refusing
        return watch

    cdef int _await(self, Watch* watch, Py_ssize_t n, uint32_t* word, uint32_t* sleepers,
                    double deadline) except -1:
        """Wait until a watched reader has a record or its log refuses (1), or ``deadline``
        (monotonic; < 0: no limit) passes, or this view is being released (0): spin first
        (``spin`` seconds), then sleep on the futex ``word``, counted in ``sleepers``, so that
        a publisher makes a system call only when someone sleeps.

        Why no wake is lost: the sleeper reads ``word``, counts itself, then looks again; a
        publisher stores ``head``, bumps ``word``, then wakes if it sees a sleeper. With
        sequentially consistent atomics one of the two sees the other, and a sleep on a word
        that moved returns at once. Sleeps last at most 50 ms, so a wake lost to a publisher
        killed between its ``head`` and its wake costs 50 ms, never a hang."""
        cdef bint spun = self.spin <= 0
        cdef double until, step
        cdef uint32_t seen
        self.active += 1
        try:
            while True:
                if _ready(watch, n):
                    return 1
                if self.closing or past(deadline):
                    return 0
                if not spun:
                    spun = True
                    until = kincir_monotonic() + self.spin
                    if deadline >= 0 and deadline < until:
                        until = deadline
                    with nogil:
                        _spin(watch, n, until, &self.closing)
                    continue
                seen = kincir_atomic_load_u32(word)
                kincir_atomic_add_u32(sleepers, 1)
                if _ready(watch, n) or self.closing:
                    kincir_atomic_add_u32(sleepers, <uint32_t>-1)
                    continue
                step = next_sleep(deadline)
                with nogil:
                    kincir_futex_wait(word, seen, step)
                kincir_atomic_add_u32(sleepers, <uint32_t>-1)
                PyErr_CheckSignals()
        finally:
            self.active -= 1

    cdef list _copy(self, uint64_t first, uint64_t end):
        """The records ``[first, end)`` as Messages. Lengths are cut to the slot: a group
        reader may copy slots being written again (its claim then fails and the copy is
        dropped), and must not read past them; metadata that does not parse is that too."""
        cdef list out = []
        cdef Record* record
        cdef unsigned char* body
        cdef uint64_t seq
        cdef uint32_t length, meta
        cdef uint32_t room = self.log.slot_size - _RECORD_HEADER
        cdef object metadata, payload
        for seq in range(first, end):
            record = <Record*>(self.slot_area + ((seq - 1) & self.mask) * self.log.slot_size)
            body = <unsigned char*>record + _RECORD_HEADER
            length = record.length
            if length > room:
                length = room
            metadata = _NO_METADATA
            if record.flags & _HAS_METADATA and length >= 4:
                meta = (<uint32_t*>body)[0]
                if meta > length - 4:
                    meta = length - 4
                try:
                    metadata = json.loads(PyBytes_FromStringAndSize(<char*>body + 4, meta))
                except ValueError:
                    metadata = _NO_METADATA  # torn: this copy's claim will fail
                if type(metadata) is not dict:
                    metadata = _NO_METADATA
                body += 4 + meta
                length -= 4 + meta
            payload = PyBytes_FromStringAndSize(<char*>body, length)
            out.append(delivered_copy(<PyObject*>payload, <PyObject*>metadata, record.id_hi,
                                      record.id_lo, self.topic, <int64_t>seq,
                                      <int64_t>record.enqueued_at, True))
        return out

    # -- state ----------------------------------------------------------------------------------

    @property
    def head(self):
        """The next sequence number to publish."""
        self._check()
        return kincir_atomic_load_u64(&self.log.head)

    @property
    def slots(self):
        self._check()
        return self.log.slots

    def position(self, uint32_t index):
        """Reader ``index``'s next sequence number."""
        self._check()
        return kincir_atomic_load_u64(&self._reader(index).position)

    def lagged(self, uint32_t index):
        """Records a DROP_OLDEST publish moved reader or group ``index`` past."""
        self._check()
        return kincir_atomic_load_u64(&self._reader(index).lagged)

    @property
    def freed(self):
        """Reader entries freed because their process had died, by any process."""
        self._check()
        return kincir_atomic_load_u64(&self.log.freed)

    @property
    def dropped(self):
        """Records DROP_NEWEST publishes dropped."""
        self._check()
        return kincir_atomic_load_u64(&self.log.dropped)

    def settled(self, bint keep=False):
        """The first sequence number some reader still has to read: the lowest reader
        position; with no reader, ``head``, or with ``keep`` what a reader joining with
        ``keep`` would start at."""
        cdef uint64_t head
        self._check()
        self._lock(-1.0)
        try:
            head = kincir_atomic_load_u64(&self.log.head)
            if self._count() or not keep:
                return self._lowest(head)
            return self._kept_start(head)
        finally:
            self._unlock()

    def held(self):
        """Messages some live reader has not read yet."""
        cdef uint64_t head
        self._check()
        head = kincir_atomic_load_u64(&self.log.head)
        return head - self._lowest(head)


def wait_any(list readers not None, timeout=0.0):
    """Wait up to ``timeout`` seconds (None: no limit) until any of ``readers`` — (ShmLog,
    reader index) pairs, logs of one buffer that has a bell — has a record to read or its log
    refuses publishes; whether one has. One sleep covers them all: every publish to any of
    them rings the bell while someone sleeps on it."""
    cdef Py_ssize_t n = len(readers), i
    cdef ShmLog first, log
    cdef Watch* watch
    cdef int ready
    if n == 0:
        raise ValueError("wait_any needs at least one reader")
    first = readers[0][0]
    first._check()
    if first.bell == NULL:
        raise ValueError("these logs have no bell (ShmLog(..., bell=offset))")
    watch = <Watch*>malloc(n * sizeof(Watch))
    if watch == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            log, index = readers[i]
            log._check()
            if log.base != first.base:
                raise ValueError("wait_any's logs must share one buffer")
            watch[i] = log._watch(log._reader(index))
        ready = first._await(watch, n, &first.bell[0], &first.bell[1], deadline_of(timeout))
        return ready == 1
    finally:
        free(watch)


def any_wire_form(list messages not None):
    """Whether any of ``messages`` is in its wire form (its metadata names a codec's content
    type): a subscriber with the bytes codec hands out a batch without one as it was read."""
    cdef object msg
    for msg in messages:
        if type(msg) is Message and (<Message>msg)._meta and (
                "kincir-content-type" in (<Message>msg)._meta):
            return True
    return False
