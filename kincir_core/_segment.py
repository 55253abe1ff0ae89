"""A named shared-memory segment: its file, its header, and who may use it for how long.

The foundation of the shared-memory transport (``kincir.shm``, issue 17): the topic logs of a
broker several processes share will be laid out after this header, in one segment. This module
knows nothing of topics; it creates, attaches, checks and removes segments, on Linux.

The segment is a file in ``/dev/shm`` named ``kincir-<name>``, mapped by every process that uses
it. Its lifetime rests on ``flock`` locks, which the kernel drops when a process dies however it
dies, so a process killed with SIGKILL never leaves a count behind:

- The creator makes the file (``O_CREAT | O_EXCL``, mode 0600) and holds an exclusive lock
  while it writes the header; then it holds a shared lock, as every user does, until it closes.
- An attacher takes its shared lock, blocking while a creator still holds the exclusive one, so
  it never maps a header being written. A creator that died while writing leaves a file
  without the magic number: refused as incomplete, and replaced by the next ``create``.
- Closing drops the shared lock, then tries for the exclusive one without waiting: whoever gets
  it is the last user, and removes the file. (Two users closing at once: each drops its lock
  before trying, so the later of them finds no other holder.)
- ``create`` over a file that nobody holds (every user gone without closing, a creator killed)
  replaces it: such a segment has no reader or writer left to lose anything.
- An attacher checks, once it holds its lock, that the path still names the file it opened: a
  closer may have removed it in between, and a new creator made another.

Refused with ``SegmentIncompatible``, before anything is read or written through the mapping: a
file that is not private to this user (owner, mode 0600), shorter than a header, without the
magic number, of another layout version, or whose size differs from the one its header gives.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import struct
import sys
import time
import weakref
from collections.abc import Callable

from ._errors import KincirError

__all__ = [
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "Segment",
    "SegmentError",
    "SegmentExists",
    "SegmentIncompatible",
    "SegmentNotFound",
]

#: Where segments live: tmpfs, so the pages are memory and the file only names them.
SEGMENT_DIR = "/dev/shm"
PREFIX = "kincir-"
MAGIC = b"KINCIRSH"
#: Bumped whenever the layout after the magic number changes: a process of another kincir
#: version must not read this one's segments.
LAYOUT_VERSION = 1
#: The header takes the first page; what the transport lays out starts after it.
HEADER_SIZE = 4096
# magic, layout version, header size, segment size, creator's pid, creation time (Unix ns)
_HEADER = struct.Struct("<8sIIQQQ")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
#: How long ``attach`` waits, at most, for a creator still writing the header.
ATTACH_TIMEOUT = 5.0


class SegmentError(KincirError):
    """A shared-memory segment could not be created, attached or used."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"shared-memory segment {name!r}: {problem}")
        self.name = name


class SegmentNotFound(SegmentError, LookupError):
    """``attach``: no segment of this name exists (create it first, or check the name)."""


class SegmentExists(SegmentError, FileExistsError):
    """``create``: a segment of this name is in use by a live process (attach to it instead)."""


class SegmentIncompatible(SegmentError):
    """The file of this name is not a segment this kincir can use: foreign, another layout
    version, not private to this user, or left incomplete by a creator that died."""


def segment_path(name: str) -> str:
    """The file of segment ``name``; ValueError for a name that cannot be a file name."""
    if type(name) is not str:
        raise TypeError(f"a segment name must be str, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid segment name {name!r}: 1 to 200 characters of letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return os.path.join(SEGMENT_DIR, PREFIX + name)


def _require_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise OSError(
            errno.ENOTSUP,
            f"shared-memory segments need Linux (/dev/shm and flock); this is {sys.platform}",
        )


class Segment:
    """One process's use of a named segment: an open file, its lock and its mapping."""

    def __init__(self, name: str, path: str, fd: int, size: int, created: bool) -> None:
        self.name = name
        self.path = path
        self.size = size
        #: Whether this process created the segment (False: attached to it).
        self.created = created
        self._fd = fd
        # a child forked from this process shares the file description, and with it the lock:
        # the child opens its own (_after_fork); if it cannot, only the process that opened
        # the description lets go of the lock or removes the file
        self._pid = os.getpid()
        self._map: mmap.mmap | None = mmap.mmap(fd, size)
        self.creator_pid, self.created_ns = _read_header(self._map)[4:6]
        _OPEN.add(self)

    def _after_fork(self) -> None:
        """In a forked child: take a lock of its own, on a description of its own, so that
        the parent's close and the child's are each one user leaving."""
        if self._map is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if os.fstat(fd)[1:3] != os.fstat(self._fd)[1:3]:  # (inode, device): replaced
                raise OSError("the file was replaced")
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        os.close(self._fd)  # the parent's description: its lock stays the parent's
        self._fd = fd
        self._pid = os.getpid()

    # -- making one -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, size: int, lay_out: Callable[[mmap.mmap], None] | None = None
    ) -> Segment:
        """Create segment ``name`` of ``size`` bytes (a header included), replacing one that no
        process uses any more. SegmentExists when a live process uses it. ``lay_out`` writes
        what follows the header before any attacher may map it (it must not keep the mapping
        it is given)."""
        path = segment_path(name)
        if type(size) is not int:
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < HEADER_SIZE:
            raise ValueError(f"size must be at least {HEADER_SIZE} bytes (one header), not {size}")
        _require_linux()
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                if not _remove_if_abandoned(name, path):
                    raise SegmentExists(name, "in use by another process") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # attachers wait until the header is written
            os.fchmod(fd, 0o600)  # whatever the umask made of it
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as mapping:
                _HEADER.pack_into(
                    mapping, 0, MAGIC, LAYOUT_VERSION, HEADER_SIZE, size, os.getpid(),
                    time.time_ns(),
                )  # fmt: skip
                if lay_out is not None:
                    lay_out(mapping)
            fcntl.flock(fd, fcntl.LOCK_SH)
            return cls(name, path, fd, size, created=True)
        except BaseException:
            _unlink_quietly(path)
            os.close(fd)
            raise

    @classmethod
    def attach(cls, name: str, timeout: float = ATTACH_TIMEOUT) -> Segment:
        """Attach to segment ``name``. SegmentNotFound when there is none; SegmentIncompatible
        when the file is not one this kincir can use."""
        path = segment_path(name)
        _require_linux()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                raise SegmentNotFound(name, f"no such segment ({path})") from None
            except PermissionError:
                raise SegmentIncompatible(name, "not private to this user") from None
            try:
                if not _lock_shared(fd, deadline):
                    raise SegmentIncompatible(
                        name, f"its creator held it for more than {timeout:g} s while laying it out"
                    )
                if _names_file(path, fd):
                    size = _check_file(name, fd)
                    return cls(name, path, fd, size, created=False)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # removed, maybe replaced, while we waited: open what the path names now

    # -- using it -------------------------------------------------------------------------------

    @property
    def buffer(self) -> mmap.mmap:
        """The whole segment, header included; ValueError once closed."""
        if self._map is None:
            raise ValueError(f"shared-memory segment {self.name!r} is closed")
        return self._map

    @property
    def closed(self) -> bool:
        return self._map is None

    def close(self) -> bool:
        """Unmap and let go of the segment; the last of its users removes it. Returns whether
        this call removed it. Idempotent."""
        if self._map is None:
            return False
        self._map.close()
        self._map = None
        fd, self._fd = self._fd, -1
        if os.getpid() != self._pid:  # a forked child: the lock is its parent's
            os.close(fd)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another user holds it: the last one removes it
            if not _names_file(self.path, fd):
                return False  # already removed (and maybe made again) by someone else
            _unlink_quietly(self.path)
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._map is None else f"{self.size} bytes"
        role = "created" if self.created else "attached"
        return f"<Segment {self.name!r} {role}, {state}>"


#: The segments this process has open, for _after_fork.
_OPEN: weakref.WeakSet[Segment] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    for segment in list(_OPEN):
        segment._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)


# -- helpers ------------------------------------------------------------------------------------


def _read_header(buffer: mmap.mmap) -> tuple[bytes, int, int, int, int, int]:
    magic, version, header_size, size, pid, created_ns = _HEADER.unpack_from(buffer, 0)
    return magic, version, header_size, size, pid, created_ns


def _lock_shared(fd: int, deadline: float) -> bool:
    """A shared lock on ``fd``, waiting (by polling, so the wait is bounded) while a creator
    holds it exclusively; False past ``deadline``."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)


def _names_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _check_file(name: str, fd: int) -> int:
    """The segment's size, once its file has passed every check (see the module docstring)."""
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise SegmentIncompatible(
            name,
            f"not private to this user (owner uid {info.st_uid}, mode {info.st_mode & 0o777:o})",
        )
    if info.st_size < HEADER_SIZE:
        raise SegmentIncompatible(
            name, f"{info.st_size} bytes, shorter than a header: not a kincir segment, or left "
            "incomplete by a creator that died (creating it again replaces it)"
        )  # fmt: skip
    with mmap.mmap(fd, HEADER_SIZE, prot=mmap.PROT_READ) as header:
        magic, version, header_size, size, _pid, _created = _read_header(header)
    if magic != MAGIC:
        raise SegmentIncompatible(
            name, "no kincir magic number: not a kincir segment, or left incomplete by a creator "
            "that died (creating it again replaces it)"
        )  # fmt: skip
    if version != LAYOUT_VERSION or header_size != HEADER_SIZE:
        raise SegmentIncompatible(
            name, f"layout version {version}, this kincir reads version {LAYOUT_VERSION}: "
            "every process must use the same kincir release"
        )  # fmt: skip
    if size != info.st_size:
        raise SegmentIncompatible(
            name, f"its header gives {size} bytes, the file has {info.st_size}"
        )
    return size


def _remove_if_abandoned(name: str, path: str) -> bool:
    """Remove the file at ``path`` when no process holds it; False when one does (True also
    when it is gone already: the caller tries again)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except PermissionError:
        raise SegmentIncompatible(name, "the file belongs to another user") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise SegmentIncompatible(name, f"the file belongs to uid {info.st_uid}")
        if _names_file(path, fd):
            _unlink_quietly(path)
        return True
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
