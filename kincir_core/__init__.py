"""kincir's engine: the compiled hot path, or its pure-Python twin.

An implementation package: users import ``kincir``, never this. ``IMPLEMENTATION`` says which
engine was loaded: ``"cython"`` when the extension modules import, ``"python"`` when they are
missing or ``KINCIR_NO_EXTENSIONS`` is set to a non-empty value other than ``0``.
"""

import os as _os

from ._codes import AppendOutcome, AttachOutcome, BrokerState

if _os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    _compiled = False
else:
    try:
        from . import _broker, _message  # noqa: F401  (probe: are the extensions built?)
    except ImportError:
        _compiled = False
    else:
        _compiled = True

if _compiled:
    from ._broker import (
        MESSAGE_OVERHEAD,
        OVERFLOW_POLICIES,
        TOPIC_OVERHEAD,
        BrokerCore,
        PublisherCore,
        SubscriberCore,
        _advance_clock,
        _reset_clock,
        check_batch_size,
        check_count,
        check_timeout,
        monotonic,
        validate_group_name,
        validate_topic_name,
        wall_ms,
    )
    from ._message import Message, restore_message

    IMPLEMENTATION = "cython"
else:
    from ._broker_py import (  # type: ignore[assignment]
        MESSAGE_OVERHEAD,
        OVERFLOW_POLICIES,
        TOPIC_OVERHEAD,
        BrokerCore,
        PublisherCore,
        SubscriberCore,
        _advance_clock,
        _reset_clock,
        check_batch_size,
        check_count,
        check_timeout,
        monotonic,
        validate_group_name,
        validate_topic_name,
        wall_ms,
    )
    from ._message_py import Message, restore_message  # type: ignore[assignment]

    IMPLEMENTATION = "python"

__all__ = [
    "IMPLEMENTATION",
    "MESSAGE_OVERHEAD",
    "OVERFLOW_POLICIES",
    "TOPIC_OVERHEAD",
    "AppendOutcome",
    "AttachOutcome",
    "BrokerCore",
    "BrokerState",
    "Message",
    "PublisherCore",
    "SubscriberCore",
    "_advance_clock",
    "_reset_clock",
    "check_batch_size",
    "check_count",
    "check_timeout",
    "monotonic",
    "restore_message",
    "validate_group_name",
    "validate_topic_name",
    "wall_ms",
]
