"""Argument checks and the overflow policies, written once for both engines.

The kernel (``_broker.pyx`` or its twin ``_broker_py.py``) and the Python layer above it
(``_topics.py``, ``_subscriptions.py``) call these. The compiled kernel checks the common case of
``check_timeout`` and ``check_batch_size`` in C on its hot calls and comes here for the rest.
"""

from __future__ import annotations

import re
from typing import Any

from ._errors import InvalidTopicName

#: The overflow policies, indexed by the code the engine stores per topic.
OVERFLOW_POLICIES = ("error", "block", "drop_oldest", "drop_newest")
OVERFLOW_ERROR, OVERFLOW_BLOCK, OVERFLOW_DROP_OLDEST, OVERFLOW_DROP_NEWEST = range(4)

# Estimated bytes a topic costs beyond its messages and ring (the memory estimate's constant).
TOPIC_OVERHEAD = 512
MAX_TOPIC_LENGTH = 255
_INVALID_TOPIC_CHAR = re.compile(r"[\s\x00-\x1f\x7f*>]")
_INVALID_GROUP_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


def validate_topic_name(name: Any) -> str:
    """Return ``name`` if it is a valid topic name, else raise TypeError / InvalidTopicName."""
    if type(name) is not str:
        raise TypeError(f"topic must be str, not {type(name).__name__}")
    if not name:
        raise InvalidTopicName(name, "it is empty")
    if len(name) > MAX_TOPIC_LENGTH:
        raise InvalidTopicName(name, f"it is longer than {MAX_TOPIC_LENGTH} characters")
    bad = _INVALID_TOPIC_CHAR.search(name)
    if bad is not None:
        raise InvalidTopicName(
            name,
            f"it contains {bad.group()!r}; "
            "whitespace, control characters, '*' and '>' are not allowed",
        )
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise InvalidTopicName(name, "it has an empty dot-separated segment")
    return name


def validate_group_name(name: Any) -> str | None:
    """Return ``name`` (None, or a valid consumer group name), else raise TypeError/ValueError."""
    if name is None:
        return None
    if type(name) is not str:
        raise TypeError(f"group must be str or None, not {type(name).__name__}")
    if not name or len(name) > MAX_TOPIC_LENGTH or _INVALID_GROUP_CHAR.search(name):
        raise ValueError(
            f"invalid group name {name!r}: 1-{MAX_TOPIC_LENGTH} characters, "
            "no whitespace or control characters"
        )
    return name


def check_str(value: Any, what: str) -> str:
    """Return ``value`` if it is a str, else raise TypeError naming it ``what``."""
    if type(value) is not str:
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    return value


def check_timeout(timeout: Any) -> float | None:
    """Validate a timeout (seconds as int/float or a timedelta; None waits forever)."""
    if timeout is None:
        return None
    if type(timeout) is float and timeout >= 0.0:  # the common case first (NaN fails)
        return timeout
    if hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    if type(timeout) is bool or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    seconds = float(timeout)
    if seconds != seconds or seconds < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {seconds}")
    return seconds


def _check_int(value: Any, name: str, low: int) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return min(int(value), 1 << 62)


def check_batch_size(value: Any, name: str) -> int:
    """Validate a batch receive's size (>= 0; 0 asks for an empty batch)."""
    return _check_int(value, name, 0)
