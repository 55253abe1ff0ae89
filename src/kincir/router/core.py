"""``Router``: the stage itself — settings, lifecycle, and the worker loops (threads and tasks)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from kincir_core import Message, validate_topic_name

from ..errors import KincirError
from ..memory.ack import InMemoryAckSubscriber
from ..memory.broker import InMemoryBroker
from ..memory.errors import (
    BrokerShutdown,
    MaxTopicsReached,
    NotSubscribed,
    TopicClosed,
    TopicNotFound,
)
from ..memory.patterns import compile_pattern, is_pattern
from .ending import RunEnd
from .inputs import POLL, AckStrategy, Delivery, PlainMember, settle, take_async, take_sync
from .output import Interrupted, Output, PublishWatch, hold, outputs_of
from .stats import RouterStats, _Ledger
from .watchdog import Slot, Watchdog

__all__ = ["Router"]

_log = logging.getLogger("kincir.router")


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
        batch_size: int | None = None,
    ) -> None:
        if not isinstance(broker, InMemoryBroker):
            raise TypeError(f"broker must be an InMemoryBroker, not {type(broker).__name__}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if type(concurrency) is not int or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
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
        self.batch_size = batch_size
        self._take = 1 if batch_size is None else batch_size
        self.ack_strategy = ack_strategy
        self.processing_timeout = processing_timeout
        self._timeout = 0.0 if processing_timeout is None else float(processing_timeout)
        self.group = group if group is not None else f"router:{input_topic}"
        acking = ack_strategy is not AckStrategy.NEVER_ACK
        # Built now, so bad settings and topic names fail here, not in a worker.
        self._subscribers: list[Any] = (
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
            else [PlainMember(broker, self.group) for _ in range(concurrency)]
        )
        self._ledger = _Ledger(max_deliveries, dead_letter_topic if acking else None)
        self._stopping = threading.Event()
        # read by the workers before every message: an attribute, where is_set() is a call
        self._stop_requested = False
        first = self._subscribers[0]
        tick = min(POLL, first.ack_timeout / 4) if acking else POLL
        self._tick = tick
        self._output = Output(broker, output_topic, self._stopping, tick)
        self._threads: list[threading.Thread] = []
        self._slots: list[Slot | None] = []
        self._watchdog: Watchdog | None = None
        self._end = RunEnd(self._close_output)  # its ``run`` numbers the runs
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    def _subscribe_all(self) -> None:
        for sub in self._subscribers:
            sub.subscribe(self.input_topic)

    def _detach(self) -> None:
        """The workers' subscribers leave the input (the group stays, holding its messages)."""
        for sub in self._subscribers:
            try:
                sub.unsubscribe()
            except KincirError:  # the broker was shut down: nothing left to leave
                pass

    def start(self) -> Router:
        """Start the workers in background threads; returns the router."""
        generation = self._begin_run()
        if self._is_async:
            thread = threading.Thread(
                target=lambda: asyncio.run(self._run_tasks(generation)),
                name="kincir-router",
                daemon=True,
            )
            self._threads = [thread]
            self._slots = [None]
        else:
            timeout = self.processing_timeout
            slots = [Slot() for _ in self._subscribers]
            self._slots = list(slots) if timeout is not None else [None] * self.concurrency
            if timeout is not None:
                self._watchdog = Watchdog(timeout, slots, self._expired)
                self._watchdog.start()
            self._threads = [
                threading.Thread(
                    target=self._work_sync,
                    args=(sub, slot, generation),
                    name=f"kincir-router-{i}",
                    daemon=True,
                )
                for i, (sub, slot) in enumerate(zip(self._subscribers, self._slots, strict=True))
            ]
        for thread in self._threads:
            thread.start()
        self._log_started()
        return self

    def _begin_run(self) -> int:
        """Subscribe the workers and mark the router running; the new run's number."""
        if self._running:
            raise RuntimeError("the router is already running")
        self._subscribe_all()
        self._running = True
        self._stop_requested = False
        self._stopping.clear()
        return self._end.begin(self.concurrency)

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
        """Run the workers as tasks of the running loop until ``stop()`` is called, or until
        the input ends (its topic closed and drained: the output topic is closed then)."""
        generation = self._begin_run()
        self._log_started()
        try:
            await self._run_tasks(generation)
        finally:
            self._end.stopped()  # unless the input ended first
            self._detach()
            self._running = False
            _log.info("router stopped: %r -> %r", self.input_topic, self.output_topic)

    async def _run_tasks(self, generation: int) -> None:
        await asyncio.gather(*(self._work_async(sub, generation) for sub in self._subscribers))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking messages; each worker finishes (publishes and settles) the message it is
        handling, then ends, and the workers leave the input topic (the router's group stays:
        messages published meanwhile wait for the next start). Waits up to ``timeout`` seconds
        for the threads started by ``start()``; returns True if they all ended.

        A worker waiting for room on a full output topic stops waiting at once: that message's
        outputs are not published and the message goes back to the group unsettled (redelivered
        to another member, or when the router starts again; not a failed delivery). A worker
        whose handler ran past ``processing_timeout`` is not waited for: its message is already
        settled as timed out, and its late result is discarded. So only a handler still running
        within its time can keep ``stop()`` (and leaving ``with router:``) waiting."""
        self._stop_requested = True
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread, slot in zip(self._threads, self._slots, strict=True):
            while thread.is_alive() and not (slot is not None and slot.expired):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if slot is not None and (left is None or left > self._tick):
                    left = self._tick  # a handler may time out while stop() waits: look again
                thread.join(left)
        stopped = all(
            not thread.is_alive() or (slot is not None and slot.expired)
            for thread, slot in zip(self._threads, self._slots, strict=True)
        )
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
            self._end.stopped()  # unless the input ended first
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None
            if self._threads:
                self._detach()
            self._threads = []
            self._slots = []
            self._running = False
        return stopped

    def close(self) -> None:
        """Stop, and leave the input topic for good (in-flight messages go back to the group)."""
        self.stop()
        for sub in self._subscribers:
            sub.close()

    def is_running(self) -> bool:
        """True between start()/run() and the end of stop()."""
        return self._running

    def join(self, timeout: float | None = None) -> bool:
        """Block until the router's run ends (the current one, or the next if none runs): True
        when its input ended — every worker read the end of the input topic (``close_topic``)
        after settling what it handled, and the router closed its output topic — False when it
        was stopped first (``stop()``, the end of ``run()``, the broker shutting down). A run
        that already ended answers at once. TimeoutError after ``timeout`` seconds."""
        return self._end.join(timeout)

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """``join`` for async code: wait without blocking the loop."""
        return await self._end.wait(timeout)

    def _close_output(self) -> None:
        """The input ended and every worker settled its messages: end the output too."""
        _log.info("router %r -> %r: the input ended", self.input_topic, self.output_topic)
        if self.output_topic is None:
            return
        try:
            # made if nobody subscribed and nothing was published yet, so that a reader who
            # subscribes later meets the end rather than waiting for ever
            self._broker._topic(self.output_topic)
            self._broker.close_topic(self.output_topic)
        except (TopicNotFound, BrokerShutdown):
            pass  # deleted meanwhile, or no broker: nobody reads
        except MaxTopicsReached:
            _log.warning(
                "router %r -> %r: the output topic could not be created to mark its end "
                "(max_topics reached)",
                self.input_topic,
                self.output_topic,
            )

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # waits for the handlers in progress (not for one past processing_timeout); a worker
        # waiting for room on its output gives its message back at once; the workers detach
        self.stop()

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> RouterStats:
        """The router's counters now."""
        return self._ledger.snapshot()

    # -- one handler call -----------------------------------------------------------------------

    def _args(self, sub: Any, msgs: list[Message], handles: list[Any]) -> tuple[Any, ...]:
        manual = self.ack_strategy is AckStrategy.MANUAL
        if self.batch_size is None:
            if manual:
                return (msgs[0], Delivery(self._ledger, sub, msgs[0], handles[0]))
            return (msgs[0],)
        if manual:
            ledger = self._ledger
            return (msgs, [Delivery(ledger, sub, m, h) for m, h in zip(msgs, handles, strict=True)])
        return (msgs,)

    def _finish(
        self,
        sub: Any,
        msgs: list[Message],
        handles: list[Any],
        ok: bool,
        elapsed: float,
        published: int = 0,
    ) -> None:
        """Settle and count the messages of a handler call that ended in time (``published``:
        its outputs, all published)."""
        acked = settle(self.ack_strategy, self._ledger, sub, handles, ok)
        self._ledger.handled(len(msgs), ok, elapsed, published, acked)

    def _failed(
        self,
        sub: Any,
        msgs: list[Message],
        handles: list[Any],
        elapsed: float,
        error: BaseException | None = None,
    ) -> None:
        """The handler raised (or its outputs could not be published): log, count, settle."""
        _log.error("router handler failed on %s", _describe(msgs), exc_info=error or True)
        self._finish(sub, msgs, handles, False, elapsed)

    def _expired(self, sub: Any, msgs: list[Message], handles: list[Any]) -> None:
        """A handler call ran past ``processing_timeout``: count it, settle it as failed."""
        try:
            _log.warning(
                "router handler timed out after %g s on %s",
                self.processing_timeout,
                _describe(msgs),
            )
            self._ledger.add("timed_out", len(msgs))
            acked = settle(self.ack_strategy, self._ledger, sub, handles, False)
            if acked:
                self._ledger.add("acked", acked)
        except Exception:  # the watchdog must live on
            _log.exception("router: settling a timed-out handler call failed")

    def _interrupted(
        self, sub: Any, msgs: list[Message], handles: list[Any], elapsed: float
    ) -> None:
        """stop() interrupted the wait for room of a call's outputs: none were published."""
        self._ledger.handled(len(msgs), True, elapsed)
        self._hand_back(sub, msgs, handles)

    def _hand_back(self, sub: Any, msgs: list[Message], handles: list[Any]) -> None:
        """The worker ends without finishing ``msgs``: they go back to the router's group
        unsettled, as when a member leaves (no delivery counted as failed); the worker's
        subscriber leaves the input topic, and ``start()`` subscribes it again."""
        held = hold(sub, handles)
        if len(held) < len(msgs):
            _log.warning(
                "router stopped: the outputs of %s are dropped unpublished, and the router does "
                "not hold %s to redeliver (%s)",
                _describe(msgs),
                "them" if len(msgs) > 1 else "it",
                "NEVER_ACK" if handles[0] is None else "settled, or taken back for redelivery",
            )
        if not held:
            return
        sub.unsubscribe()
        _log.info("router stopped: %s goes back to group %r unsettled", _describe(msgs), self.group)

    # -- thread workers -------------------------------------------------------------------------

    def _live(self, generation: int) -> bool:
        return not self._stop_requested and self._end.run == generation

    def _work_sync(self, sub: Any, slot: Slot | None, generation: int) -> None:
        at_end = False
        try:
            while self._live(generation):
                try:
                    taken = take_sync(sub, self._take)
                except TopicClosed:
                    at_end = True  # everything this worker handled is settled
                    return
                except (BrokerShutdown, NotSubscribed):
                    return
                if taken is None:
                    continue
                msgs, handles = taken
                if handles[0] is not None and not self._live(generation):
                    self._hand_back(sub, msgs, handles)  # taken as stop() began: not handled
                    return
                if not self._call_sync(sub, slot, msgs, handles):
                    return
        finally:
            self._output.close_thread()
            self._end.exited(generation, at_end)

    def _call_sync(
        self, sub: Any, slot: Slot | None, msgs: list[Message], handles: list[Any]
    ) -> bool:
        """Handle one take on this thread; False when stop() interrupted its publish."""
        args = self._args(sub, msgs, handles)
        started = time.perf_counter()
        if slot is not None:  # Slot's protocol, inline: this is every message's path
            slot.call = (sub, msgs, handles)
            slot.deadline = time.monotonic() + self._timeout  # last: the watchdog reads it first
        error: Exception | None = None
        try:
            result = self._handler(*args)
        except Exception as exc:
            error, result = exc, None
        elapsed = time.perf_counter() - started
        if slot is not None:
            slot.lock.acquire()
            expired = slot.expired
            slot.expired = False
            slot.deadline = None
            slot.lock.release()
            if expired:  # the watchdog settled the call as timed out
                _log.debug("router: a timed-out handler's late result is discarded", exc_info=error)
                return True
        if error is not None:
            self._failed(sub, msgs, handles, elapsed, error)
            return True
        outputs = outputs_of(result)
        try:
            self._output.publish_sync(sub, handles, outputs)
        except Interrupted:
            self._interrupted(sub, msgs, handles, elapsed)
            return False
        except Exception as exc:
            self._failed(sub, msgs, handles, elapsed, exc)
            return True
        self._finish(sub, msgs, handles, True, elapsed, len(outputs))
        return True

    # -- asyncio workers ------------------------------------------------------------------------

    async def _work_async(self, sub: Any, generation: int) -> None:
        watch = self._output.watch(sub)
        at_end = False
        try:
            while self._live(generation):
                try:
                    taken = await take_async(sub, self._take)
                except TopicClosed:
                    at_end = True
                    return
                except (BrokerShutdown, NotSubscribed):
                    return
                if taken is None:
                    continue
                msgs, handles = taken
                if handles[0] is not None and self._stopping.is_set():
                    self._hand_back(sub, msgs, handles)  # taken as stop() began: not handled
                    return
                if not await self._call_async(sub, watch, msgs, handles):
                    return
        finally:
            self._output.unwatch(watch)
            self._end.exited(generation, at_end)

    async def _call_async(
        self, sub: Any, watch: PublishWatch, taken: list[Message], handles: list[Any]
    ) -> bool:
        """Handle one take in this task (a plain handler in the loop's default executor);
        False when stop() interrupted its publish."""
        args = self._args(sub, taken, handles)
        started = time.perf_counter()
        deadline = asyncio.timeout(self.processing_timeout)
        try:
            async with deadline:
                if self._is_async:
                    result = await self._handler(*args)
                else:
                    result = await asyncio.to_thread(self._handler, *args)
        except Exception:
            if deadline.expired():
                self._expired(sub, taken, handles)
            else:
                self._failed(sub, taken, handles, time.perf_counter() - started)
            return True
        elapsed = time.perf_counter() - started
        outputs = outputs_of(result)
        try:
            await self._output.publish_async(watch, handles, outputs)
        except Interrupted:
            self._interrupted(sub, taken, handles, elapsed)
            return False
        except Exception:
            self._failed(sub, taken, handles, elapsed)
            return True
        self._finish(sub, taken, handles, True, elapsed, len(outputs))
        return True

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        batch = "" if self.batch_size is None else f", batch_size={self.batch_size}"
        return (
            f"<Router {self.input_topic!r} -> {self.output_topic!r} {state}, "
            f"concurrency={self.concurrency}{batch}, {self.ack_strategy.name}>"
        )


def _describe(msgs: list[Message]) -> str:
    """The messages of a handler call, for a log line."""
    first = msgs[0]
    if len(msgs) == 1:
        return f"message {first.uuid} (topic {first.topic!r}, sequence {first.sequence})"
    return (
        f"a batch of {len(msgs)} messages from {first.uuid} "
        f"(topic {first.topic!r}, sequence {first.sequence})"
    )
