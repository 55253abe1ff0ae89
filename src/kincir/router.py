"""``Router``: kincir's pipeline stage — consume a topic, handle each message, publish the results.

A router reads its input topic through a consumer group of acknowledging subscribers (one per
worker, so ``concurrency`` workers share the stream and several routers with the same group
scale out), calls the handler with each message, publishes what the handler returns to the
output topic, then settles the message according to its ``AckStrategy``. A handler exception or
a processing timeout never stops the router: the message is nacked (redelivered, up to
``max_deliveries``, then dead-lettered) and counted.

Workers are threads for a plain handler (``start()``/``stop()``) and asyncio tasks for a
coroutine handler (``await run()``; ``start()`` also works, running the tasks on a loop of its
own thread). A plain handler under ``run()`` runs in the loop's default executor.

Backpressure: a worker whose output topic is full (``block`` policy) waits for room, and while it
waits it restarts the input message's ack deadline (``extend_deadline``): a handled message whose
output waits is not unacked work, so it is not redelivered meanwhile. ``stop()`` interrupts that
wait: nothing of the message's outputs is published (a batch publish is all or nothing) and the
message goes back to the router's group unsettled, as when a member leaves: it is redelivered to
another member, or to this router when it starts again, and never counts as a failed delivery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from kincir_core import Message, validate_topic_name

from .memory.ack import AckHandle, InMemoryAckSubscriber
from .memory.broker import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
from .memory.errors import AckError, BrokerShutdown, NotSubscribed, QueueFull, TopicNotFound
from .memory.patterns import compile_pattern, is_pattern

__all__ = ["AckStrategy", "Delivery", "Router", "RouterStats"]

_log = logging.getLogger("kincir.router")
_POLL = 0.05  # how often an idle worker looks at the stop flag, in seconds


class _Interrupted(Exception):
    """stop() interrupted a worker waiting for room on the output topic (nothing published)."""


class _Attempt:
    """How the handling of one message went (see ``Router._handling``)."""

    __slots__ = ("interrupted", "ok", "timed_out")

    def __init__(self) -> None:
        self.ok = False
        self.timed_out = False
        self.interrupted = False


class _PublishWatch:
    """The output publish of one asyncio worker, looked at every tick by a loop timer (one timer
    per worker, not one per message): while the publish waits for room the timer restarts the
    input message's ack deadline, and once stop() is called it cancels the wait."""

    __slots__ = ("handle", "interrupting", "publishing", "sub", "task", "timer")

    def __init__(self, sub: Any, task: asyncio.Task[Any]) -> None:
        self.sub = sub
        self.task = task
        self.handle: AckHandle | None = None
        self.publishing = False
        self.interrupting = False
        self.timer: asyncio.TimerHandle | None = None


class AckStrategy(enum.Enum):
    """How a router settles each input message."""

    #: Ack once the handler returned and its outputs were published; nack (retry) on failure.
    AUTO_ACK_ON_SUCCESS = "auto_ack_on_success"
    #: The handler settles: it is called as ``handler(message, delivery)`` and calls
    #: ``delivery.ack()`` or ``delivery.nack()`` (unsettled ones are redelivered after the
    #: ack timeout).
    MANUAL = "manual"
    #: Ack every message, failed or not: failures are counted, never retried.
    ALWAYS_ACK = "always_ack"
    #: Read without acknowledgement (at most once): nothing is held in flight, a failed message
    #: is counted and not retried.
    NEVER_ACK = "never_ack"

    # the founding library's spelling
    AutoAckOnSuccess = AUTO_ACK_ON_SUCCESS
    Manual = MANUAL
    AlwaysAck = ALWAYS_ACK
    NeverAck = NEVER_ACK


@dataclasses.dataclass(frozen=True, slots=True)
class RouterStats:
    """A router's counters at the moment they were read."""

    #: Messages the handler finished (successfully or not; timed-out ones excluded).
    processed: int
    #: Messages the handler finished without raising.
    succeeded: int
    #: Handler exceptions.
    failed: int
    #: Messages acked by the router (or by the handler, under MANUAL).
    acked: int
    #: Messages nacked by the router (or by the handler, under MANUAL).
    nacked: int
    #: Handlers that ran past ``processing_timeout``.
    timed_out: int
    #: Failures on a message's last allowed delivery (it went to the dead-letter topic or was
    #: dropped).
    retries_exhausted: int
    #: Messages published to the output topic.
    published: int
    #: Mean handler time in seconds (0.0 before the first message).
    mean_processing_time: float


class Delivery:
    """One input message under ``AckStrategy.MANUAL``: settle it with ``ack``/``nack``."""

    __slots__ = ("_handle", "_router", "_subscriber", "message")

    def __init__(
        self, router: Router, subscriber: InMemoryAckSubscriber, message: Message, handle: AckHandle
    ) -> None:
        self._router = router
        self._subscriber = subscriber
        self._handle = handle
        #: The input message.
        self.message = message

    @property
    def handle(self) -> AckHandle:
        """The message's AckHandle (delivery count, retry flag)."""
        return self._handle

    def ack(self) -> None:
        """The message is processed."""
        self._subscriber.ack(self._handle)
        self._router._count("acked")

    def nack(self, requeue: bool = True) -> None:
        """The message failed: redeliver it (``requeue``) or reject it."""
        self._subscriber.nack(self._handle, requeue)
        self._router._count("nacked")


def _outputs(result: Any) -> list[Any]:
    """The messages a handler returned. None: nothing; a list, a tuple or an iterator (a
    generator): one output per item; a Message or any other object: one output, that payload.
    A handler that means to send one list as a payload wraps it: ``Message([...])``."""
    if result is None:
        return []
    if type(result) is list or type(result) is tuple or isinstance(result, Iterator):
        return list(result)
    return [result]


class Router:
    """A pipeline stage: input topic -> handler -> output topic, with retries and stats."""

    def __init__(
        self,
        broker: InMemoryBroker,
        input_topic: str,
        output_topic: str | None,
        handler: Callable[..., Any],
        *,
        concurrency: int = 1,
        ack_strategy: AckStrategy = AckStrategy.AUTO_ACK_ON_SUCCESS,
        processing_timeout: float | None = None,
        max_deliveries: int | None = 5,
        dead_letter_topic: str | None = None,
        ack_timeout: float = 30.0,
        group: str | None = None,
    ) -> None:
        if not isinstance(broker, InMemoryBroker):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if type(concurrency) is not int or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not isinstance(ack_strategy, AckStrategy):
            raise TypeError(
                f"ack_strategy must be an AckStrategy, not {type(ack_strategy).__name__}"
            )
        if processing_timeout is not None:
            if type(processing_timeout) is bool or not isinstance(processing_timeout, (int, float)):
                raise TypeError("processing_timeout must be a number of seconds or None")
            if not 0 < processing_timeout < float("inf"):
                raise ValueError(f"processing_timeout must be > 0, got {processing_timeout}")
        if is_pattern(input_topic):
            compile_pattern(input_topic)
        else:
            validate_topic_name(input_topic)
        if output_topic is not None:
            validate_topic_name(output_topic)
        self._broker = broker
        self.input_topic = input_topic
        self.output_topic = output_topic
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self.concurrency = concurrency
        self.ack_strategy = ack_strategy
        self.processing_timeout = processing_timeout
        self.group = group if group is not None else f"router:{input_topic}"
        acking = ack_strategy is not AckStrategy.NEVER_ACK
        # Built now, so bad settings and topic names fail here, not in a worker.
        self._subscribers = (
            [
                InMemoryAckSubscriber(
                    broker,
                    self.group,
                    ack_timeout=ack_timeout,
                    max_deliveries=max_deliveries,
                    dead_letter_topic=dead_letter_topic,
                )
                for _ in range(concurrency)
            ]
            if acking
            else [_PlainMember(broker, self.group) for _ in range(concurrency)]
        )
        self._max_deliveries = max_deliveries
        # how often a worker waiting for room on the output looks at the stop flag and restarts
        # its message's ack deadline: at least four times per ack timeout
        first = self._subscribers[0]
        self._tick = (
            min(_POLL, first.ack_timeout / 4) if isinstance(first, InMemoryAckSubscriber) else _POLL
        )
        self._publisher = InMemoryPublisher(broker)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            (
                "processed",
                "succeeded",
                "failed",
                "acked",
                "nacked",
                "timed_out",
                "retries_exhausted",
                "published",
            ),
            0,
        )
        self._busy_time = 0.0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()  # a thread worker's asyncio.Runner, made on first need
        self._running = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _subscribe_all(self) -> None:
        for sub in self._subscribers:
            sub.subscribe(self.input_topic)

    def start(self) -> Router:
        """Start the workers in background threads; returns the router."""
        if self._running:
            raise RuntimeError("the router is already running")
        self._subscribe_all()
        self._running = True
        self._stopping.clear()
        if self._is_async:
            thread = threading.Thread(
                target=lambda: asyncio.run(self._run_tasks()), name="kincir-router", daemon=True
            )
            self._threads = [thread]
        else:
            if self.processing_timeout is not None:
                # a handler past its timeout keeps its thread until it returns (a thread
                # cannot be stopped): room for some of those beside the working ones
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    2 * self.concurrency + 4, thread_name_prefix="kincir-router-handler"
                )
            self._threads = [
                threading.Thread(
                    target=self._work_sync, args=(sub,), name=f"kincir-router-{i}", daemon=True
                )
                for i, sub in enumerate(self._subscribers)
            ]
        for thread in self._threads:
            thread.start()
        self._log_started()
        return self

    def _log_started(self) -> None:
        _log.info(
            "router started: %r -> %r, group %r, %d workers, %s",
            self.input_topic,
            self.output_topic,
            self.group,
            self.concurrency,
            self.ack_strategy.name,
        )

    async def run(self) -> None:
        """Run the workers as tasks of the running loop until ``stop()`` is called."""
        if self._running:
            raise RuntimeError("the router is already running")
        self._subscribe_all()
        self._running = True
        self._stopping.clear()
        self._log_started()
        try:
            await self._run_tasks()
        finally:
            self._running = False
            _log.info("router stopped: %r -> %r", self.input_topic, self.output_topic)

    async def _run_tasks(self) -> None:
        await asyncio.gather(*(self._work_async(sub) for sub in self._subscribers))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking messages; each worker finishes (publishes and settles) the message it is
        handling, then ends. Waits up to ``timeout`` seconds for the threads started by
        ``start()``; returns True if they all ended. Messages not yet taken stay in the input
        topic for the router's group.

        A worker waiting for room on a full output topic stops waiting at once: that message's
        outputs are not published and the message goes back to the group unsettled (redelivered
        to another member, or when the router starts again; not a failed delivery). So only a
        handler still running can keep ``stop()`` (and leaving ``with router:``) waiting."""
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if stopped and self._threads:
            _log.info("router stopped: %r -> %r", self.input_topic, self.output_topic)
        elif not stopped:
            _log.warning(
                "router %r -> %r: workers still busy after the %g s stop timeout",
                self.input_topic,
                self.output_topic,
                timeout,
            )
        if stopped:
            self._threads = []
            self._running = False
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
        return stopped

    def close(self) -> None:
        """Stop, and leave the input topic (in-flight messages go back to the group)."""
        self.stop()
        for sub in self._subscribers:
            sub.close()

    def is_running(self) -> bool:
        """True between start()/run() and the end of stop()."""
        return self._running

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # waits for the handlers in progress (bounded by processing_timeout when set); a worker
        # waiting for room on its output gives its message back at once
        self.stop()

    # -- stats ----------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def stats(self) -> RouterStats:
        """The router's counters now."""
        with self._lock:
            c = dict(self._counts)
            busy = self._busy_time
        timed = c["processed"]
        return RouterStats(**c, mean_processing_time=busy / timed if timed else 0.0)

    # -- one message ----------------------------------------------------------------------------

    def _finish(
        self,
        sub: Any,
        msg: Message,
        handle: AckHandle | None,
        ok: bool,
        timed_out: bool,
        elapsed: float,
    ) -> None:
        """Count and settle one handled message (the handler's outputs are published)."""
        with self._lock:
            if timed_out:
                self._counts["timed_out"] += 1
            else:
                self._counts["processed"] += 1
                self._counts["succeeded" if ok else "failed"] += 1
                self._busy_time += elapsed
        strategy = self.ack_strategy
        if handle is None or (strategy is AckStrategy.MANUAL and ok):
            return
        try:
            if ok or strategy is AckStrategy.ALWAYS_ACK:
                sub.ack(handle)
                self._count("acked")
                return
            sub.nack(handle)
        except AckError:
            # settled meanwhile: by a MANUAL handler before it failed, or redelivered after
            # its ack deadline passed while the handler ran
            _log.debug("router: message %s was already settled", handle.message_id)
            return
        self._count("nacked")
        if self._max_deliveries is not None and handle.delivery_count >= self._max_deliveries:
            self._count("retries_exhausted")

    @contextlib.contextmanager
    def _handling(self, sub: Any, msg: Message, handle: AckHandle | None) -> Iterator[_Attempt]:
        """Around the handling of one message (the handler call and the publish of its outputs,
        which set the attempt's ``ok`` and ``timed_out``): a handler exception is logged and
        counts as a failure, then the message is counted and settled (``_finish``); an
        interrupted publish hands the message back instead and sets ``interrupted``."""
        attempt = _Attempt()
        start = time.perf_counter()
        try:
            yield attempt
        except _Interrupted:
            self._interrupted(sub, msg, handle, time.perf_counter() - start)
            attempt.interrupted = True
            return
        except Exception:
            _log.exception(
                "router handler failed on message %s (topic %r, sequence %s)",
                msg.uuid,
                msg.topic,
                msg.sequence,
            )
        if attempt.timed_out:
            self._log_timeout(msg)
        self._finish(sub, msg, handle, attempt.ok, attempt.timed_out, time.perf_counter() - start)

    def _log_timeout(self, msg: Message) -> None:
        _log.warning(
            "router handler timed out after %g s on message %s (topic %r, sequence %s)",
            self.processing_timeout,
            msg.uuid,
            msg.topic,
            msg.sequence,
        )

    def _args(self, sub: Any, msg: Message, handle: AckHandle | None) -> tuple[Any, ...]:
        if self.ack_strategy is AckStrategy.MANUAL:
            return (msg, Delivery(self, sub, msg, handle))  # type: ignore[arg-type]
        return (msg,)

    def _next_sync(self, sub: Any) -> tuple[Message, AckHandle | None] | None:
        try:
            return sub.receive_with_ack_sync(timeout=_POLL)  # type: ignore[no-any-return]
        except TimeoutError:
            return None

    def _work_sync(self, sub: Any) -> None:
        try:
            self._work_sync_loop(sub)
        finally:
            runner = self._local.__dict__.pop("runner", None)
            if runner is not None:
                runner.close()

    def _work_sync_loop(self, sub: Any) -> None:
        while not self._stopping.is_set():
            try:
                got = self._next_sync(sub)
            except (BrokerShutdown, NotSubscribed):
                return
            if got is None:
                continue
            msg, handle = got
            if handle is not None and self._stopping.is_set():
                self._hand_back(sub, msg, handle)  # taken as stop() began: not handled
                return
            with self._handling(sub, msg, handle) as attempt:
                if self._executor is not None:
                    future = self._executor.submit(self._handler, *self._args(sub, msg, handle))
                    try:
                        result = future.result(self.processing_timeout)
                    except concurrent.futures.TimeoutError:
                        attempt.timed_out = True
                        result = None
                else:
                    result = self._handler(*self._args(sub, msg, handle))
                if not attempt.timed_out:
                    self._publish_sync(sub, handle, _outputs(result))
                    attempt.ok = True
            if attempt.interrupted:
                return

    def _output_topic(self) -> str:
        if self.output_topic is None:
            raise ValueError("the handler returned messages but the router has no output topic")
        return self.output_topic

    def _publish_sync(self, sub: Any, handle: AckHandle | None, outputs: list[Any]) -> None:
        """Publish a handled message's outputs from a worker thread (_Interrupted: stop() was
        called while they waited for room)."""
        if not outputs:
            return
        topic = self._output_topic()
        try:
            self._publisher.publish_sync(topic, outputs, timeout=self._tick)
        except QueueFull:
            if not self._waits_for_room(topic, len(outputs)):
                raise
            # A publish_sync blocked for room cannot be woken by stop(); the async publish can
            # be given up, so the wait goes on in this thread's own event loop.
            handle = self._hold(sub, handle)
            if self._stopping.is_set():
                raise _Interrupted from None
            runner = self._local.__dict__.get("runner")
            if runner is None:
                runner = self._local.runner = asyncio.Runner()
            runner.run(self._publish_watched(sub, handle, topic, outputs))
        self._count("published", len(outputs))

    async def _publish_watched(
        self, sub: Any, handle: AckHandle | None, topic: str, outputs: list[Any]
    ) -> None:
        watch = self._watch(sub)
        try:
            await self._publish_async(watch, handle, topic, outputs)
        finally:
            self._unwatch(watch)

    def _waits_for_room(self, topic: str, count: int) -> bool:
        """Whether a QueueFull from ``topic`` was a wait for room under the ``block`` policy (not
        a refusal: another policy, or a batch larger than the capacity)."""
        try:
            info = self._broker.topic_info(topic)
        except TopicNotFound:
            return False
        capacity = info.max_queue_size
        return info.overflow == "block" and (capacity is None or count <= capacity)

    def _watch(self, sub: Any) -> _PublishWatch:
        """Start watching the output publishes of the current task."""
        watch = _PublishWatch(sub, asyncio.current_task())  # type: ignore[arg-type]
        watch.timer = asyncio.get_running_loop().call_later(self._tick, self._look, watch)
        return watch

    def _unwatch(self, watch: _PublishWatch) -> None:
        if watch.timer is not None:
            watch.timer.cancel()

    def _look(self, watch: _PublishWatch) -> None:
        """A tick: the task runs no code now, so a publish in progress is waiting for room."""
        if watch.publishing:
            if self._stopping.is_set():
                if not watch.interrupting:
                    watch.interrupting = True
                    watch.task.cancel()
            else:
                # the message is handled: not to be redelivered while its outputs wait
                watch.handle = self._hold(watch.sub, watch.handle)
        watch.timer = asyncio.get_running_loop().call_later(self._tick, self._look, watch)

    async def _publish_async(
        self, watch: _PublishWatch, handle: AckHandle | None, topic: str, outputs: list[Any]
    ) -> None:
        """Publish, waiting for room under ``watch`` (_Interrupted if stop() is called first)."""
        watch.handle = handle
        watch.publishing = True
        try:
            await self._publisher.publish(topic, outputs)
        except asyncio.CancelledError:
            # a publish cancelled while it waits has published nothing
            if not watch.interrupting or watch.task.uncancel() > 0:
                raise  # cancelled from outside
            raise _Interrupted from None
        finally:
            watch.publishing = False

    def _hold(self, sub: Any, handle: AckHandle | None) -> AckHandle | None:
        """Restart ``handle``'s ack deadline; None when there is nothing to hold (NEVER_ACK, or
        the message was settled by a MANUAL handler or taken back for redelivery)."""
        if handle is None:
            return None
        try:
            sub.extend_deadline(handle)
        except AckError:
            return None
        return handle

    def _interrupted(
        self, sub: Any, msg: Message, handle: AckHandle | None, elapsed: float
    ) -> None:
        """stop() interrupted the wait for room of ``msg``'s outputs: none were published."""
        with self._lock:
            self._counts["processed"] += 1
            self._counts["succeeded"] += 1
            self._busy_time += elapsed
        self._hand_back(sub, msg, handle)

    def _hand_back(self, sub: Any, msg: Message, handle: AckHandle | None) -> None:
        """The worker ends without finishing ``msg``: it goes back to the router's group
        unsettled, as when a member leaves (no delivery counted as failed); the worker's
        subscriber leaves the input topic, and ``start()`` subscribes it again."""
        if self._hold(sub, handle) is None:
            _log.warning(
                "router stopped: the outputs of message %s (topic %r, sequence %s) are dropped "
                "unpublished, and the router does not hold the message to redeliver it (%s)",
                msg.uuid,
                msg.topic,
                msg.sequence,
                "NEVER_ACK" if handle is None else "settled, or taken back for redelivery",
            )
            return
        sub.unsubscribe()
        _log.info(
            "router stopped: message %s (topic %r, sequence %s) goes back to group %r unsettled",
            msg.uuid,
            msg.topic,
            msg.sequence,
            self.group,
        )

    async def _work_async(self, sub: Any) -> None:
        watch = self._watch(sub)
        try:
            await self._work_async_loop(sub, watch)
        finally:
            self._unwatch(watch)

    async def _work_async_loop(self, sub: Any, watch: _PublishWatch) -> None:
        while not self._stopping.is_set():
            try:
                got = await sub.receive_with_ack(timeout=_POLL)
            except TimeoutError:
                continue
            except (BrokerShutdown, NotSubscribed):
                return
            msg, handle = got
            if handle is not None and self._stopping.is_set():
                self._hand_back(sub, msg, handle)  # taken as stop() began: not handled
                return
            with self._handling(sub, msg, handle) as attempt:
                call = (
                    self._handler(*self._args(sub, msg, handle))
                    if self._is_async
                    else asyncio.to_thread(self._handler, *self._args(sub, msg, handle))
                )
                try:
                    async with asyncio.timeout(self.processing_timeout):
                        result = await call
                except TimeoutError:
                    attempt.timed_out = True
                    result = None
                if not attempt.timed_out:
                    outputs = _outputs(result)
                    if outputs:
                        topic = self._output_topic()
                        await self._publish_async(watch, handle, topic, outputs)
                        self._count("published", len(outputs))
                    attempt.ok = True
            if attempt.interrupted:
                return

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<Router {self.input_topic!r} -> {self.output_topic!r} {state}, "
            f"concurrency={self.concurrency}, {self.ack_strategy.name}>"
        )


class _PlainMember:
    """A NEVER_ACK worker's subscriber: a plain group member behind the ack-shaped calls."""

    __slots__ = ("_sub",)

    def __init__(self, broker: InMemoryBroker, group: str) -> None:
        self._sub = InMemorySubscriber(broker, group)

    def subscribe(self, topic: str) -> None:
        self._sub.subscribe(topic)

    def close(self) -> None:
        self._sub.close()

    def receive_with_ack_sync(self, timeout: float) -> tuple[Message, None]:
        return self._sub.receive_sync(timeout), None

    async def receive_with_ack(self, timeout: float) -> tuple[Message, None]:
        return await self._sub.receive(timeout), None


for _cls in (AckStrategy, Delivery, Router, RouterStats):
    _cls.__module__ = "kincir"
