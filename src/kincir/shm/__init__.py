"""A broker several processes on one host share, in shared memory (Linux).

``SharedMemoryBroker(name)`` makes a named segment in ``/dev/shm`` (mode 0600, removed when its
last user closes it or dies); other processes attach with ``SharedMemoryBroker(name,
create=False)``, or receive a pickled broker (a ``multiprocessing`` or ``ProcessPoolExecutor``
worker), which attaches by name. ``SharedMemoryPublisher`` and ``SharedMemorySubscriber`` have
the in-memory broker's API (``kincir.Publisher`` / ``kincir.Subscriber``), from threads and
asyncio: topics with gapless sequence numbers, atomic batches, fan-out (a cursor per reader),
consumer groups across processes, bounded rings with ``block`` / ``error`` / ``drop_oldest`` /
``drop_newest``, persistence for the first reader to join, end of stream, graceful and forced
shutdown. Payloads are bytes, or objects through a codec. Not offered: acknowledgement and
redelivery, TTL, wildcard subscriptions, deleting topics or groups.

How it is built: ``kincir_core._segment`` (the named segment and its lifetime),
``kincir_core._shm_sync`` (atomics, futexes, robust process-shared mutexes),
``kincir_core._shm_log`` (one topic's ring, its readers and groups, and what a killed process
leaves), and here the directory of topics and groups (``_directory``), the broker, its
publisher and its subscriber.
"""

from __future__ import annotations

import sys

import kincir_core

if not sys.platform.startswith("linux"):
    raise ImportError("kincir.shm runs on Linux for now (see the README's Several processes)")
if kincir_core.IMPLEMENTATION != "cython":
    raise ImportError(
        "kincir.shm needs kincir's compiled engine: this kincir runs on its pure-Python twin "
        "(KINCIR_NO_EXTENSIONS is set, or no extension was built)"
    )

from kincir_core._segment import SegmentError, SegmentExists, SegmentIncompatible, SegmentNotFound

from .._remote import set_public_module
from .broker import OVERFLOW_POLICIES, SharedMemoryBroker, SharedTopicInfo
from .publisher import SharedMemoryPublisher
from .subscriber import SharedMemorySubscriber

__all__ = [
    "OVERFLOW_POLICIES",
    "SegmentError",
    "SegmentExists",
    "SegmentIncompatible",
    "SegmentNotFound",
    "SharedMemoryBroker",
    "SharedMemoryPublisher",
    "SharedMemorySubscriber",
    "SharedTopicInfo",
]

set_public_module(
    __name__,
    SegmentError,
    SegmentExists,
    SegmentIncompatible,
    SegmentNotFound,
    SharedMemoryBroker,
    SharedMemoryPublisher,
    SharedMemorySubscriber,
    SharedTopicInfo,
)
