"""kincir's engine: a kernel, compiled or its pure-Python twin, and the layer above it.

An implementation package: users import ``kincir``, never this. Only the kernel is written twice
(``_broker.pyx`` with the ``.pxi`` files it includes, and its twin ``_broker_py.py`` with
``_cursor_py.py``, ``_topic_log_py.py``, ``_waiting_py.py`` and ``_in_flight_py.py``;
``_message.pyx`` and ``_message_py.py``): the ring, cursors, locks, waiters, the acknowledging
readers' in-flight messages and the hot calls. Above it, written once in Python: the broker's
topic table, groups, lifecycle and snapshots (``_topics.py``), a subscriber's subscriptions
(``_subscriptions.py``), argument checks (``_validate.py``); and what both layers share: the
errors (``_errors.py``), the status codes (``_codes.py``) and the snapshot rows (``_rows.py``).
``IMPLEMENTATION`` says which kernel was loaded (``_engine.py``): ``"cython"`` when the extension
modules import, ``"python"`` when they are missing or ``KINCIR_NO_EXTENSIONS`` is set to a
non-empty value other than ``0``.
"""

from ._codes import AppendOutcome, AttachOutcome, BrokerState
from ._engine import IMPLEMENTATION, Message, kernel, restore_message
from ._subscriptions import SubscriberCore
from ._topics import BrokerCore
from ._validate import (
    OVERFLOW_POLICIES,
    TOPIC_OVERHEAD,
    check_batch_size,
    check_timeout,
    validate_group_name,
    validate_topic_name,
)

MESSAGE_OVERHEAD: int = kernel.MESSAGE_OVERHEAD
AckHandle = kernel.AckHandle
AckOwner = kernel.AckOwner
InFlight = kernel.InFlight
PublisherCore = kernel.PublisherCore
_advance_clock = kernel._advance_clock
_reset_clock = kernel._reset_clock
ack_one = kernel.ack_one
deliver = kernel.deliver
monotonic = kernel.monotonic
wall_ms = kernel.wall_ms

__all__ = [
    "IMPLEMENTATION",
    "MESSAGE_OVERHEAD",
    "OVERFLOW_POLICIES",
    "TOPIC_OVERHEAD",
    "AckHandle",
    "AckOwner",
    "AppendOutcome",
    "AttachOutcome",
    "BrokerCore",
    "BrokerState",
    "InFlight",
    "Message",
    "PublisherCore",
    "SubscriberCore",
    "_advance_clock",
    "_reset_clock",
    "ack_one",
    "check_batch_size",
    "check_timeout",
    "deliver",
    "monotonic",
    "restore_message",
    "validate_group_name",
    "validate_topic_name",
    "wall_ms",
]
