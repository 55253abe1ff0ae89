"""Wildcard subscriptions: NATS-style topic patterns and the broker's registry of them.

Topics are dot-separated; in a pattern ``*`` matches exactly one segment and ``>`` (last segment
only) matches one or more trailing segments: ``orders.*`` matches ``orders.eu`` but not
``orders.eu.paid``; ``orders.>`` matches both, not ``orders``.

A pattern subscription is a set of ordinary per-topic subscriptions: the subscriber joins every
existing topic that matches when it subscribes, and the broker's registry joins it to each
matching topic created later. The engine calls ``PatternRegistry.topic_creating`` with a new
topic's log before it puts the topic in its table, holding its topic-creation lock: no other
thread can publish to the topic before every matching pattern subscription has joined it, so
each sees the topic from sequence 1. Registering and forgetting a pattern take the same lock, so
a pattern never misses a topic created while it subscribes, nor joins one after it left.

A topic a pattern joined stays subscribed while another of the subscriber's patterns matches it
or it was subscribed by name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import kincir_core

from .errors import (
    BrokerShutdown,
    InvalidConfig,
    InvalidTopicName,
    MaxSubscribersReached,
    NotSubscribed,
    TopicNotFound,
)

__all__ = ["PatternRegistry", "compile_pattern", "is_pattern", "join_quietly", "matches"]


def is_pattern(topic: Any) -> bool:
    """True if ``topic`` is a str with a ``*`` or ``>`` in it (to be read as a pattern)."""
    return type(topic) is str and ("*" in topic or ">" in topic)


def compile_pattern(pattern: str) -> tuple[str, ...]:
    """The segments of ``pattern``; InvalidTopicName if it is not a valid pattern."""
    segments = tuple(pattern.split("."))
    for i, segment in enumerate(segments):
        if segment == ">" and i != len(segments) - 1:
            raise InvalidTopicName(pattern, "'>' may only be the last segment")
        if segment not in ("*", ">") and ("*" in segment or ">" in segment):
            raise InvalidTopicName(pattern, "'*' and '>' must be whole segments")
    # the rest of the rules are a topic's: check with each wildcard read as a plain segment
    try:
        kincir_core.validate_topic_name(".".join("x" if s in ("*", ">") else s for s in segments))
    except InvalidTopicName as err:
        raise InvalidTopicName(pattern, err.reason) from None
    return segments


def matches(segments: tuple[str, ...], topic: str) -> bool:
    """True if ``topic`` matches the compiled pattern ``segments``."""
    parts = topic.split(".")
    for i, segment in enumerate(segments):
        if segment == ">":
            return len(parts) > i
        if i >= len(parts) or (segment != "*" and segment != parts[i]):
            return False
    return len(parts) == len(segments)


class PatternRegistry:
    """The broker's live pattern subscriptions (weakly held: a dropped subscriber leaves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (subscriber ref, pattern) -> segments
        self._entries: dict[tuple[weakref.ref[Any], str], tuple[str, ...]] = {}
        # refs of collected subscribers, queued by the weakref callback (which may run during a
        # collection while this thread holds the lock: it only appends) and purged under it
        self._dead: list[weakref.ref[Any]] = []

    def _purge(self) -> None:
        while self._dead:
            ref = self._dead.pop()
            for key in [key for key in self._entries if key[0] is ref]:
                del self._entries[key]

    def add(self, subscriber: Any, pattern: str, segments: tuple[str, ...]) -> None:
        with self._lock:
            self._purge()
            for ref, _ in self._entries:  # one ref per subscriber: its callback purges all
                if ref() is subscriber:
                    break
            else:
                ref = weakref.ref(subscriber, self._dead.append)
            self._entries[(ref, pattern)] = segments

    def remove(self, subscriber: Any, pattern: str | None) -> None:
        """Forget ``subscriber``'s ``pattern`` (every pattern of it when None)."""
        with self._lock:
            for key in list(self._entries):
                ref, pat = key
                if ref() is None or (ref() is subscriber and pattern in (None, pat)):
                    del self._entries[key]

    def topic_creating(self, log: Any) -> None:
        """Join every live pattern subscription that matches the topic of ``log``, which the
        engine is creating (its topic-creation lock held, the topic not yet visible)."""
        if not self._entries:
            return
        with self._lock:
            self._purge()
            entries = list(self._entries.items())
        topic = log.name
        for (ref, pattern), segments in entries:
            subscriber = ref()
            if subscriber is not None and matches(segments, topic):
                subscriber._join_by_pattern(pattern, log)


def join_quietly(join: Any, target: Any) -> None:
    """``join(target)``: a pattern subscribing to one topic. A topic at its subscriber limit
    is skipped (the pattern joins what it can); a subscription that fails otherwise is skipped
    too: it is not the publish that created the topic that should fail."""
    try:
        join(target)
    except (MaxSubscribersReached, BrokerShutdown, TopicNotFound, NotSubscribed, InvalidConfig):
        return
