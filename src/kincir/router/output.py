"""Publishing a handled call's outputs, and backpressure: while a publish waits for room on a
full ``block`` output topic the worker restarts its input messages' ack deadlines (handled
messages are not unacked work), and ``stop()`` interrupts the wait (nothing is published)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from kincir_core import Message

from ..memory.broker import InMemoryBroker, InMemoryPublisher
from ..memory.errors import AckError, QueueFull, TopicNotFound


class Interrupted(Exception):
    """stop() interrupted a worker waiting for room on the output topic (nothing published)."""


#: The types a handler's result most often has that are one output, never an iterator.
_ONE_OUTPUT = frozenset({bytes, str, dict, int, float, Message})


def outputs_of(result: Any) -> list[Any]:
    """The messages a handler returned. None: nothing; a list, a tuple or an iterator (a
    generator): one output per item; a Message or any other object: one output, that payload.
    A handler that means to send one list as a payload wraps it: ``Message([...])``."""
    if result is None:
        return []
    if type(result) in _ONE_OUTPUT:  # every handler call: spare the Iterator ABC check
        return [result]
    if type(result) is list or type(result) is tuple or isinstance(result, Iterator):
        return list(result)
    return [result]


def hold(sub: Any, handles: list[Any]) -> list[Any]:
    """Restart the ack deadlines of ``handles``; the ones still held (none under NEVER_ACK, nor
    those settled by a MANUAL handler or taken back for redelivery)."""
    held = []
    for handle in handles:
        if handle is None:
            continue
        try:
            sub.extend_deadline(handle)
        except AckError:
            continue
        held.append(handle)
    return held


class PublishWatch:
    """The output publish of one asyncio worker, looked at every tick by a loop timer (one timer
    per worker, not one per message): while the publish waits for room the timer restarts the
    input messages' ack deadlines, and once stop() is called it cancels the wait."""

    __slots__ = ("handles", "interrupting", "publishing", "sub", "task", "timer")

    def __init__(self, sub: Any, task: asyncio.Task[Any]) -> None:
        self.sub = sub
        self.task = task
        self.handles: list[Any] = []
        self.publishing = False
        self.interrupting = False
        self.timer: asyncio.TimerHandle | None = None


class Output:
    """A router's output topic and the publishes of its workers."""

    __slots__ = ("_broker", "_local", "_publisher", "_stopping", "_tick", "topic")

    def __init__(
        self,
        broker: InMemoryBroker,
        topic: str | None,
        stopping: threading.Event,
        tick: float,
    ) -> None:
        self._broker = broker
        self.topic = topic
        self._stopping = stopping
        # how often a worker waiting for room looks at the stop flag and restarts its messages'
        # ack deadlines: at least four times per ack timeout
        self._tick = tick
        self._publisher = InMemoryPublisher(broker)
        self._local = threading.local()  # a thread worker's asyncio.Runner, made on first need

    def _topic(self) -> str:
        if self.topic is None:
            raise ValueError("the handler returned messages but the router has no output topic")
        return self.topic

    def close_thread(self) -> None:
        """A worker thread ends: close its event loop, if it needed one."""
        runner = self._local.__dict__.pop("runner", None)
        if runner is not None:
            runner.close()

    def publish_sync(self, sub: Any, handles: list[Any], outputs: list[Any]) -> None:
        """Publish a handled call's outputs from a worker thread (Interrupted: stop() was
        called while they waited for room). The caller counts them, with the call."""
        if not outputs:
            return
        topic = self._topic()
        try:
            self._publisher.publish_sync(topic, outputs, timeout=self._tick)
        except QueueFull:
            if not self._waits_for_room(topic, len(outputs)):
                raise
            # A publish_sync blocked for room cannot be woken by stop(); the async publish can
            # be given up, so the wait goes on in this thread's own event loop.
            held = hold(sub, handles)
            if self._stopping.is_set():
                raise Interrupted from None
            runner = self._local.__dict__.get("runner")
            if runner is None:
                runner = self._local.runner = asyncio.Runner()
            runner.run(self._publish_watched(sub, held, topic, outputs))

    async def _publish_watched(
        self, sub: Any, handles: list[Any], topic: str, outputs: list[Any]
    ) -> None:
        watch = self.watch(sub)
        try:
            await self._publish_waiting(watch, handles, topic, outputs)
        finally:
            self.unwatch(watch)

    def _waits_for_room(self, topic: str, count: int) -> bool:
        """Whether a QueueFull from ``topic`` was a wait for room under the ``block`` policy (not
        a refusal: another policy, or a batch larger than the capacity)."""
        try:
            info = self._broker.topic_info(topic)
        except TopicNotFound:
            return False
        capacity = info.max_queue_size
        return info.overflow == "block" and (capacity is None or count <= capacity)

    def watch(self, sub: Any) -> PublishWatch:
        """Start watching the output publishes of the current task."""
        watch = PublishWatch(sub, asyncio.current_task())  # type: ignore[arg-type]
        watch.timer = asyncio.get_running_loop().call_later(self._tick, self._look, watch)
        return watch

    def unwatch(self, watch: PublishWatch) -> None:
        if watch.timer is not None:
            watch.timer.cancel()

    def _look(self, watch: PublishWatch) -> None:
        """A tick: the task runs no code now, so a publish in progress is waiting for room."""
        if watch.publishing:
            if self._stopping.is_set():
                if not watch.interrupting:
                    watch.interrupting = True
                    watch.task.cancel()
            else:
                # the messages are handled: not to be redelivered while their outputs wait
                watch.handles = hold(watch.sub, watch.handles)
        watch.timer = asyncio.get_running_loop().call_later(self._tick, self._look, watch)

    async def publish_async(
        self, watch: PublishWatch, handles: list[Any], outputs: list[Any]
    ) -> None:
        """Publish from a task, waiting for room under ``watch`` (Interrupted if stop() is
        called first)."""
        if outputs:
            await self._publish_waiting(watch, handles, self._topic(), outputs)

    async def _publish_waiting(
        self, watch: PublishWatch, handles: list[Any], topic: str, outputs: list[Any]
    ) -> None:
        watch.handles = handles
        watch.publishing = True
        try:
            await self._publisher.publish(topic, outputs)
        except asyncio.CancelledError:
            # a publish cancelled while it waits has published nothing
            if not watch.interrupting or watch.task.uncancel() > 0:
                raise  # cancelled from outside
            raise Interrupted from None
        finally:
            watch.publishing = False
