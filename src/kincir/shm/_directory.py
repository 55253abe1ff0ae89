"""The broker's region of a shared segment: its geometry, its state, and the tables that name
topics and consumer groups, whose logs (``kincir_core._shm_log``) follow.

Layout, at ``HEADER_SIZE`` (after the segment's own header), little-endian:

    0    broker mutex    robust, process-shared: taken to add a topic or a group, or to close
                         a topic (MUTEX_SIZE <= 64 bytes)
    64   magic u32       BROKER_MAGIC once laid out
    68   version u32     LAYOUT_VERSION of this region
    72   state u64       OPEN, DRAINING (``shutdown``: no new publishes, readers drain), STOPPED
                         (``force_shutdown``, or the drain is over)
    80   max_topics u32, max_groups u32, slots u32, slot_size u32, max_readers u32,
         overflow u32 (an Overflow's code), persistence u32
    112  bell u32, bell sleepers u32: the futex word a subscriber of several topics sleeps on;
                         every topic's publishes ring it while it has sleepers
    128  topics          max_topics x 256 bytes: state u64 (FREE, READY, CLOSED: ended by
                         ``close_topic``), name length u32, the name in UTF-8 from byte 16 (240
                         bytes at most)
    then groups          max_groups x 256 bytes: state u64 (FREE, READY), name length u32,
                         topic u32 (its index), reader u32 (its cursor's entry in the topic's
                         log), the name in UTF-8 from byte 24 (232 bytes at most)
    then logs            max_topics regions of ``log_stride`` bytes, page-aligned: topic i's log
                         at ``logs_at + i * log_stride``, formatted when the topic is made

Entries are only ever added (and topics closed): a process may cache what it looked up. An entry
is written whole, its log formatted, and only then its state stored (a release), under the
broker mutex; lookups take the mutex too, so they never see half an entry. A process killed
while adding an entry never stored its state: the entry stays free and is written over.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct

from kincir_core import _shm_log
from kincir_core._errors import BrokerShutdown
from kincir_core._segment import HEADER_SIZE
from kincir_core._shm_log import ShmLog, region_size
from kincir_core._shm_sync import MUTEX_SIZE, SharedWords

__all__ = ["Directory", "Geometry"]

BROKER_MAGIC = 0x4B42524B  # "KBRK"
LAYOUT_VERSION = 1
# the broker's states are the codes its logs refuse with
OPEN, DRAINING, STOPPED = _shm_log.OPEN, _shm_log.DRAINING, _shm_log.STOPPED
FREE, READY, CLOSED = 0, 1, 2

_MUTEX = HEADER_SIZE
_MAGIC = HEADER_SIZE + 64
_STATE = HEADER_SIZE + 72
#: Where the broker's state word is (its offset in the segment).
STATE_AT = _STATE
_GEOMETRY = struct.Struct("<7I")
_GEOMETRY_AT = HEADER_SIZE + 80
_BELL = HEADER_SIZE + 112
_TABLES_AT = HEADER_SIZE + 128
_ENTRY = 256
_TOPIC_NAME_AT = 16
_GROUP_NAME_AT = 24
#: Longest names, in UTF-8 bytes.
TOPIC_NAME_LIMIT = _ENTRY - _TOPIC_NAME_AT
GROUP_NAME_LIMIT = _ENTRY - _GROUP_NAME_AT
_PAGE = 4096
assert MUTEX_SIZE <= 64


def _page_up(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the segment's creator chose; every process reads it back from the segment."""

    max_topics: int
    max_groups: int
    slots: int
    slot_size: int
    max_readers: int
    overflow: int
    persistence: bool

    @property
    def logs_at(self) -> int:
        return _page_up(_TABLES_AT + (self.max_topics + self.max_groups) * _ENTRY)

    @property
    def log_stride(self) -> int:
        return _page_up(region_size(self.slots, self.slot_size, self.max_readers))

    @property
    def segment_size(self) -> int:
        return self.logs_at + self.max_topics * self.log_stride


class Directory:
    """One process's view of the broker region; ``release`` before the segment closes."""

    def __init__(self, buffer: mmap.mmap, geometry: Geometry) -> None:
        self._buffer = buffer
        self.geometry = geometry
        self.words = SharedWords(buffer)
        self._groups_at = _TABLES_AT + geometry.max_topics * _ENTRY

    # -- laying out, reading back ---------------------------------------------------------------

    @classmethod
    def lay_out(cls, buffer: mmap.mmap, geometry: Geometry) -> Directory:
        """Write an empty broker region (the creator, before anyone attaches)."""
        directory = cls(buffer, geometry)
        directory.words.init_mutex(_MUTEX)
        _GEOMETRY.pack_into(
            buffer,
            _GEOMETRY_AT,
            geometry.max_topics,
            geometry.max_groups,
            geometry.slots,
            geometry.slot_size,
            geometry.max_readers,
            geometry.overflow,
            int(geometry.persistence),
        )
        directory.words.store(_STATE, OPEN)
        directory.words.store(_MAGIC, BROKER_MAGIC | LAYOUT_VERSION << 32)
        return directory

    @staticmethod
    def read_geometry(buffer: mmap.mmap) -> Geometry | None:
        """The geometry a creator laid out; None if the region is not one of this version."""
        words = SharedWords(buffer)
        try:
            if words.load(_MAGIC) != BROKER_MAGIC | LAYOUT_VERSION << 32:
                return None
        finally:
            words.release()
        values = _GEOMETRY.unpack_from(buffer, _GEOMETRY_AT)
        topics, groups, slots, slot_size, readers, overflow, persistence = values
        return Geometry(topics, groups, slots, slot_size, readers, overflow, bool(persistence))

    def release(self) -> None:
        self.words.release()

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> int:
        return self.words.load(_STATE)

    def advance_state(self, state: int) -> list[int]:
        """Move the state forward to ``state`` (never back), under the broker mutex, so no
        topic is made after it moved; the indexes of the topics there are."""
        self._lock()
        try:
            if self.words.load(_STATE) < state:
                self.words.store(_STATE, state)
            return self._topic_indexes()
        finally:
            self._unlock()

    def _topic_indexes(self) -> list[int]:
        indexes = []
        for index in range(self.geometry.max_topics):
            if self.words.load(self._topic_at(index)) == FREE:
                break
            indexes.append(index)
        return indexes

    # -- the broker mutex -----------------------------------------------------------------------

    def _lock(self) -> bool:
        """Take the broker mutex; whether its last holder had died holding it (and what it
        left was repaired)."""
        if self.words.lock(_MUTEX):
            # its holder died adding an entry: that entry's state was never stored, but a
            # group's cursor may have been made for it
            self._free_orphan_cursors()
            self.words.mark_consistent(_MUTEX)
            return True
        return False

    def sweep(self) -> bool:
        """Repair what a process killed holding the broker mutex left (a group cursor that
        holds a ring); whether there was anything."""
        recovered = self._lock()
        self._unlock()
        return recovered

    def _free_orphan_cursors(self) -> None:
        """Remove the group cursors no group entry names (the mutex held)."""
        named: set[tuple[int, int]] = set()
        for index in range(self.geometry.max_groups):
            entry = self._groups_at + index * _ENTRY
            if self.words.load(entry) == FREE:
                break
            named.add((self.words.load32(entry + 12), self.words.load32(entry + 16)))
        for topic in self._topic_indexes():
            log = ShmLog(self._buffer, self._log_at(topic))
            try:
                for cursor in log.group_cursors():
                    if (topic, cursor) not in named:
                        log.remove_reader(cursor)
            finally:
                log.release()

    def _unlock(self) -> None:
        self.words.unlock(_MUTEX)

    # -- topics ---------------------------------------------------------------------------------

    def _topic_at(self, index: int) -> int:
        return _TABLES_AT + index * _ENTRY

    def _log_at(self, index: int) -> int:
        return self.geometry.logs_at + index * self.geometry.log_stride

    def _name(self, entry: int, name_at: int) -> bytes:
        length = self.words.load32(entry + 8)
        return bytes(self._buffer[entry + name_at : entry + name_at + length])

    def find_topic(self, name: bytes) -> int | None:
        """The index of topic ``name``, or None (the mutex held)."""
        for index in range(self.geometry.max_topics):
            entry = self._topic_at(index)
            if self.words.load(entry) == FREE:
                return None  # topics fill the table from the start
            if self._name(entry, _TOPIC_NAME_AT) == name:
                return index
        return None

    def topic(self, name: bytes, create: bool) -> int | None:
        """The index of topic ``name``, made (its log formatted) if ``create`` and it does not
        exist yet; None if it does not and ``create`` is false. LookupError when the table is
        full; BrokerShutdown to make one once the broker is shut down."""
        self._lock()
        try:
            index = self.find_topic(name)
            if index is not None or not create:
                return index
            if self.words.load(_STATE) != OPEN:
                raise BrokerShutdown("the shared broker is shut down: no new topics")
            for index in range(self.geometry.max_topics):
                entry = self._topic_at(index)
                if self.words.load(entry) == FREE:
                    self._write(entry + 8, struct.pack("<I", len(name)))
                    self._write(entry + _TOPIC_NAME_AT, name)
                    log = ShmLog(self._buffer, self._log_at(index))
                    try:
                        g = self.geometry
                        log.format(g.slots, g.slot_size, g.max_readers)
                    finally:
                        log.release()
                    self.words.store(entry, READY)
                    return index
            raise LookupError(self.geometry.max_topics)
        finally:
            self._unlock()

    def topic_names(self) -> list[str]:
        self._lock()
        try:
            return [
                self._name(self._topic_at(index), _TOPIC_NAME_AT).decode()
                for index in self._topic_indexes()
            ]
        finally:
            self._unlock()

    def topic_state(self, index: int) -> int:
        return self.words.load(self._topic_at(index))

    def close_topic(self, index: int) -> bool:
        """End topic ``index`` for writing; whether this call ended it."""
        self._lock()
        try:
            entry = self._topic_at(index)
            if self.words.load(entry) == CLOSED:
                return False
            self.words.store(entry, CLOSED)
            return True
        finally:
            self._unlock()

    def open_log(self, index: int, topic: str) -> ShmLog:
        """A view of topic ``index``'s log (this process's own: release it before closing)."""
        return ShmLog(self._buffer, self._log_at(index), topic, _BELL)

    # -- consumer groups ------------------------------------------------------------------------

    def group(self, topic: int, name: bytes, log: ShmLog) -> int:
        """The reader entry of group ``name`` on topic ``topic`` (whose ``log`` is given), made
        if it does not exist yet. LookupError when the group table is full."""
        self._lock()
        try:
            free = None
            for index in range(self.geometry.max_groups):
                entry = self._groups_at + index * _ENTRY
                if self.words.load(entry) == FREE:
                    free = index
                    break
                if self.words.load32(entry + 12) == topic and (
                    self._name(entry, _GROUP_NAME_AT) == name
                ):
                    return self.words.load32(entry + 16)
            if free is None:
                raise LookupError(self.geometry.max_groups)
            entry = self._groups_at + free * _ENTRY
            reader = log.add_group(keep=self.geometry.persistence)
            self._write(entry + 8, struct.pack("<III", len(name), topic, reader))
            self._write(entry + _GROUP_NAME_AT, name)
            self.words.store(entry, READY)
            return reader
        finally:
            self._unlock()

    def _write(self, offset: int, data: bytes) -> None:
        self._buffer[offset : offset + len(data)] = data
