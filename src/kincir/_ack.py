"""The acknowledgement rules every backend shares: the in-memory broker and the servers'.

- ``check_settings``: an acknowledging subscriber's options (``ack_timeout``,
  ``max_deliveries``, ``dead_letter_topic``), checked the same way everywhere.
- ``dead_letter_copy``: the copy of a message published to a dead-letter topic, with the
  metadata keys ``_dead_letter_reason``, ``_delivery_count``, ``_original_topic`` and
  ``_original_sequence``.
- ``AckHandleBase``: what every ``AckHandle`` offers (``topic``, ``delivery_count``,
  ``is_retry``, ``message_id``, ``timestamp``); each backend subclasses it with its
  ``sequence`` and what it needs to settle the delivery (``kincir.memory.AckHandle``,
  ``RemoteAckHandle``).

Who uses it: ``kincir.memory`` (``memory/ack.py``, ``memory/in_flight.py``) and the remote layer
(``_remote/ack.py``) on which ``kincir.redis``, ``kincir.rabbitmq`` and ``kincir.kafka`` build.
"""

from __future__ import annotations

import abc
from typing import Any

import kincir_core
from kincir_core import Message

from .memory.errors import InvalidConfig

__all__ = ["AckHandleBase", "check_settings", "dead_letter_copy"]


def check_settings(
    ack_timeout: Any, max_deliveries: Any, dead_letter_topic: Any
) -> tuple[float, int | None, str | None]:
    """``(ack_timeout, max_deliveries, dead_letter_topic)`` checked: TypeError for a wrong
    type, InvalidConfig for a value out of range, InvalidTopicName for a bad topic."""
    if hasattr(ack_timeout, "total_seconds"):
        ack_timeout = ack_timeout.total_seconds()
    if type(ack_timeout) is bool or not isinstance(ack_timeout, (int, float)):
        raise TypeError(
            f"ack_timeout must be a number of seconds, not {type(ack_timeout).__name__}"
        )
    if not ack_timeout > 0 or ack_timeout == float("inf"):
        raise InvalidConfig("ack_timeout", ack_timeout, "must be a finite number of seconds > 0")
    if max_deliveries is not None:
        if type(max_deliveries) is bool or not isinstance(max_deliveries, int):
            raise TypeError(
                f"max_deliveries must be int or None, not {type(max_deliveries).__name__}"
            )
        if max_deliveries < 1:
            raise InvalidConfig(
                "max_deliveries",
                max_deliveries,
                "must be >= 1 (it counts the first delivery), or None",
            )
    if dead_letter_topic is not None:
        kincir_core.validate_topic_name(dead_letter_topic)
    return float(ack_timeout), max_deliveries, dead_letter_topic


def dead_letter_copy(msg: Message, reason: str, count: int, topic: str, sequence: int) -> Message:
    """The copy of ``msg`` (from ``topic`` at ``sequence``, delivered ``count`` times) that goes
    to a dead-letter topic; ``reason`` is ``"max_deliveries_exceeded"``, ``"rejected"``, or, from
    a server backend's subscriber whose codec cannot read it, ``"undecodable: <why>"``."""
    return (
        msg.with_metadata("_dead_letter_reason", reason)
        .with_metadata("_delivery_count", str(count))
        .with_metadata("_original_topic", topic)
        .with_metadata("_original_sequence", str(sequence))
    )


class AckHandleBase(abc.ABC):
    """What ``receive_with_ack`` hands out with a message, to ``ack`` or ``nack`` it.

    ``_owner`` names the subscriber (or its token) the handle belongs to: a handle settles only
    on its own subscriber. Each backend's handle holds the attributes below in its own slots:
    ``RemoteAckHandle`` fills them in its ``__init__``; the in-memory ``AckHandle`` is the
    engine's own type (a virtual subclass, registered by ``kincir.memory``), filled in by the
    engine.
    """

    __slots__ = ()

    _owner: Any
    _message: Message
    #: The topic the message came from.
    topic: str
    #: Unix time (seconds) of this delivery.
    timestamp: float
    #: How many times the message has been delivered, this delivery included.
    delivery_count: int

    @property
    def message_id(self) -> str:
        """The message's uuid."""
        return self._message.uuid

    @property
    def is_retry(self) -> bool:
        """True when this is a redelivery."""
        return self.delivery_count > 1
