"""``kincir bench --backend redis|rabbitmq|kafka``: what leaving the process costs.

The same async workloads run on the in-memory broker and on a backend's server, side by side in
one run, with ``kincir bench``'s harness (a warm-up at a tenth of the size, then ``--repeat``
timed repetitions per side taking turns, medians, ``--json``, ``--quick``). Every workload runs
on one event loop (a fresh one per repetition) and the code is the same on both sides: only the
broker, publisher and subscriber classes differ. Payloads are 64 bytes.

=========  ==================================================================================
B1         asyncio producer -> subscriber: batches of 100 payloads (``await publish``), one plain
           subscriber takes ``receive_batch(100)`` until it has N; msg/s
B2         fan-out to 4 plain subscribers (same producer); deliveries/s (4 x N)
B3         ack group of 2 members: ``receive_with_ack`` + ``ack`` until N are acked, the producer
           running alongside (``InMemoryAckSubscriber(broker, group)`` in memory); msg/s
B4         round trip latency: ping-pong between two topics (``await send`` and ``await
           receive()`` on each side); median microseconds per round trip
=========  ==================================================================================

Each row shows kincir memory against kincir <backend>, and the ratio memory/backend for
throughput, backend/memory for latency: how many times faster staying in-process is. The rows
have no goals; they inform.

The backend's module, classes and server come from the registry ``kincir._backends``: the server
is ``--url``, else the backend's environment variable, else its default on 127.0.0.1. Each run
uses topic and group names of its own (``kincir-bench.<run id>.*``) and, on Redis, a key prefix of
its own (``kincir-bench-<run id>:``); every repetition closes its subscribers and deletes its
topics (and groups, where the backend can) before the next one. The connection is tried before
anything runs (``kincir.bench.cli``): a server that cannot be reached ends the command with its
``kincir.ConnectionFailed`` message on one line and exit code 2.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kincir
from kincir import _backends
from kincir.errors import KincirError
from kincir.memory import (
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryPublisher,
    InMemorySubscriber,
)

from .drive import ping_pong_tasks, together
from .harness import (
    BATCH,
    PAYLOAD,
    STUCK_AFTER,
    BenchError,
    Sample,
    Side,
    Sizes,
    check,
    clock,
    fast_broker,
    latency,
    one,
    throughput,
)
from .suite import Compare, Workload

__all__ = [
    "BackendUnavailable",
    "Endpoint",
    "MemoryEndpoint",
    "RemoteEndpoint",
    "load_backend",
    "workloads",
]

#: Subscribers in B2's fan-out.
FANOUT = 4
#: Members of B3's group.
MEMBERS = 2
#: How long a B3 member waits for a message before looking whether the group is done.
ACK_POLL = 0.1

MEMORY = "kincir memory"


class BackendUnavailable(RuntimeError):
    """The backend's module or one of its classes cannot be imported."""


def _redact(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


async def _settle(result: Any) -> None:
    """Await ``result`` if a backend's administration call returned an awaitable."""
    if inspect.isawaitable(result):
        await result


class Endpoint(abc.ABC):
    """Where one side of the workloads runs, one repetition at a time: ``open`` starts a
    repetition (connects, before the clock starts), ``close`` ends it (closes what it built and
    deletes what it left on a server)."""

    label: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Start a repetition: a fresh broker, connected."""

    @abc.abstractmethod
    def name(self, what: str) -> str:
        """A topic or group name for this repetition."""

    @abc.abstractmethod
    def publisher(self) -> Any:
        """A publisher."""

    @abc.abstractmethod
    async def subscriber(self, topic: str, group: str | None = None, *, ack: bool = False) -> Any:
        """A subscriber (acknowledging with ``ack``), subscribed to ``topic``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the repetition: close everything, delete what it left on a server."""


class MemoryEndpoint(Endpoint):
    """The in-memory broker (``InMemoryConfig.high_performance()``), a fresh one per repetition."""

    label = MEMORY
    broker: InMemoryBroker

    async def open(self) -> None:
        self.broker = fast_broker()

    def name(self, what: str) -> str:
        return f"bench.{what}"

    def publisher(self) -> Any:
        return InMemoryPublisher(self.broker)

    async def subscriber(self, topic: str, group: str | None = None, *, ack: bool = False) -> Any:
        sub = (InMemoryAckSubscriber if ack else InMemorySubscriber)(self.broker, group)
        await sub.subscribe(topic)
        return sub

    async def close(self) -> None:
        self.broker.force_shutdown()


class RemoteEndpoint(Endpoint):
    """A backend's server (``spec``, ``url``) with its classes, and the names this run gives its
    topics: a broker of its own per repetition."""

    def __init__(
        self, spec: _backends.BackendSpec, url: str, classes: _backends.BackendClasses
    ) -> None:
        self.spec = spec
        self.url = url
        self.classes = classes
        self.label = f"kincir {spec.name}"
        #: Unique to this run: in every topic and group name (and the Redis key prefix).
        self.run_id = uuid.uuid4().hex[:12]
        self._serial = itertools.count(1)
        # the repetition's (open to close)
        self.broker: Any = None
        self._subscribers: list[Any] = []
        self._topics: list[str] = []
        self._groups: list[tuple[str, str]] = []

    @property
    def key_prefix(self) -> str | None:
        """The Redis key prefix of this run (None for the other backends)."""
        return f"kincir-bench-{self.run_id}:" if self.spec is _backends.REDIS else None

    def new_broker(self) -> Any:
        """A broker on the server (not connected yet)."""
        options: dict[str, Any] = {} if self.key_prefix is None else {"prefix": self.key_prefix}
        return self.classes.broker(self.url, **options)

    async def check(self) -> None:
        """Connect and disconnect; ``ConnectionFailed`` when the server cannot be reached."""
        broker = self.new_broker()
        try:
            await broker.connect()
        finally:
            await broker.shutdown()

    def describe(self) -> list[str]:
        """The notes printed under the table (each short enough to stay on one line)."""
        name = self.spec.name
        where = f"{self.label}: {_redact(self.url)}"
        if self.key_prefix is not None:
            where += f" (key prefix {self.key_prefix})"
        return [
            where,
            f"topics kincir-bench.{self.run_id}.*, deleted (groups too) after each repetition",
            f"ratio: memory/{name} for throughput, {name}/memory for latency (B4): how many "
            "times faster in memory",
        ]

    async def open(self) -> None:
        self._subscribers, self._topics, self._groups = [], [], []
        self.broker = self.new_broker()
        await self.broker.connect()

    def name(self, what: str) -> str:
        """A topic or group name no other run or repetition uses."""
        return f"kincir-bench.{self.run_id}.{what}.{next(self._serial)}"

    def publisher(self) -> Any:
        return self.classes.publisher(self.broker)

    async def subscriber(self, topic: str, group: str | None = None, *, ack: bool = False) -> Any:
        cls = self.classes.ack_subscriber if ack else self.classes.subscriber
        sub = cls(self.broker) if group is None else cls(self.broker, group)
        self._subscribers.append(sub)
        if topic not in self._topics:
            self._topics.append(topic)
        if group is not None and (topic, group) not in self._groups:
            self._groups.append((topic, group))
        await sub.subscribe(topic)
        return sub

    async def close(self) -> None:
        broker, self.broker = self.broker, None
        if broker is None:
            return
        errors: list[Exception] = []
        for sub in self._subscribers:
            try:
                await sub.close()
            except Exception as exc:
                errors.append(exc)
        try:
            if not broker.is_shutdown():
                await self._delete(broker)
        except Exception as exc:
            errors.append(exc)
        finally:
            await broker.shutdown()
        if errors:
            raise BenchError(
                f"cleaning up on {self.label} failed: {type(errors[0]).__name__}: {errors[0]}"
            ) from errors[0]

    async def _delete(self, broker: Any) -> None:
        """Delete the repetition's groups and topics, with what the backend offers."""
        delete_group: Callable[[str, str], Any] | None = getattr(broker, "delete_group", None)
        delete_topic: Callable[[str], Any] | None = getattr(broker, "delete_topic", None)
        if delete_group is not None:
            for topic, group in self._groups:
                try:
                    await _settle(delete_group(topic, group))
                except KincirError:  # best effort: deleting the topic takes it too
                    pass
        if delete_topic is not None:
            for topic in self._topics:
                await _settle(delete_topic(topic))


def load_backend(name: str, url: str | None = None) -> RemoteEndpoint:
    """The endpoint of backend ``name`` (its module imported, its classes found);
    ``BackendUnavailable`` if they are not there. ``url``: the server, the registry's
    (``--backend``'s environment variable, else its default) when None."""
    try:
        spec = _backends.get(name)
    except KeyError as exc:
        raise BackendUnavailable(exc.args[0]) from None
    try:
        classes = spec.load()
    except ImportError as exc:
        if exc.name == spec.module:
            raise BackendUnavailable(
                f"--backend {name}: this kincir ({kincir.__version__}) has no {spec.module}"
            ) from exc
        raise BackendUnavailable(f"--backend {name}: cannot import {spec.module}: {exc}") from exc
    except AttributeError as exc:
        raise BackendUnavailable(f"--backend {name}: {spec.module} has no {exc.name}") from exc
    return RemoteEndpoint(spec, url or spec.url(), classes)


_Body = Callable[[Endpoint, Sizes], Awaitable[Sample]]


async def _repetition(endpoint: Endpoint, body: _Body, sizes: Sizes) -> Sample:
    """Open, run ``body`` (at most STUCK_AFTER seconds), clean up (also when it failed)."""
    try:
        await endpoint.open()
        try:
            sample = await asyncio.wait_for(body(endpoint, sizes), STUCK_AFTER)
        except TimeoutError as exc:
            raise BenchError(f"{endpoint.label} still running after {STUCK_AFTER:g} s") from exc
    except BaseException:
        try:
            await endpoint.close()
        except Exception:  # the first failure is the one to report
            pass
        raise
    await endpoint.close()
    return sample


def _side(endpoint: Endpoint, body: _Body) -> Side:
    def run(sizes: Sizes) -> Sample:
        return asyncio.run(_repetition(endpoint, body, sizes))

    return one(endpoint.label, run)


# -- the workloads --------------------------------------------------------------------------------


async def _produce(publisher: Any, topic: str, n: int) -> None:
    """Publish ``n`` payloads to ``topic`` in batches of BATCH."""
    publish = publisher.publish
    batch = [PAYLOAD] * BATCH
    full, rest = divmod(n, BATCH)
    for _ in range(full):
        await publish(topic, batch)
    if rest:
        await publish(topic, batch[:rest])


async def _drain(subscriber: Any, n: int, what: str) -> int:
    """Take batches until ``n`` messages arrived; the time it ended."""
    take = subscriber.receive_batch
    got = 0
    while got < n:
        got += len(await take(BATCH))
    check(got == n, f"{what}: a subscriber received {got} messages, {n} were published")
    return clock()


async def _b1(ep: Endpoint, sizes: Sizes) -> Sample:
    n = sizes.b1_messages
    topic = ep.name("b1")
    sub = await ep.subscriber(topic)
    pub = ep.publisher()
    started = clock()
    finished, _ = await together(_drain(sub, n, "B1"), _produce(pub, topic, n))
    return throughput(n, int(finished) - started)


async def _b2(ep: Endpoint, sizes: Sizes) -> Sample:
    n = sizes.b2_messages
    topic = ep.name("b2")
    subs = [await ep.subscriber(topic) for _ in range(FANOUT)]
    pub = ep.publisher()

    async def drained() -> int:
        return max(await asyncio.gather(*(_drain(sub, n, "B2") for sub in subs)))

    started = clock()
    finished, _ = await together(drained(), _produce(pub, topic, n))
    sample = throughput(n * FANOUT, int(finished) - started)
    sample.raw["subscribers"] = FANOUT
    return sample


async def _b3(ep: Endpoint, sizes: Sizes) -> Sample:
    n = sizes.b3_messages
    topic = ep.name("b3")
    group = ep.name("b3-group")
    members = [await ep.subscriber(topic, group, ack=True) for _ in range(MEMBERS)]
    pub = ep.publisher()
    acked = [0]
    finished = [0]

    async def work(member: Any) -> int:
        receive, ack = member.receive_with_ack, member.ack
        mine = 0
        while acked[0] < n:
            try:
                _, handle = await receive(ACK_POLL)
            except TimeoutError:  # nothing yet, or the others took the last ones
                continue
            await ack(handle)
            mine += 1
            acked[0] += 1
            if acked[0] == n:
                finished[0] = clock()
        return mine

    async def group_done() -> list[int]:
        return list(await asyncio.gather(*(work(member) for member in members)))

    started = clock()
    counts, _ = await together(group_done(), _produce(pub, topic, n))
    check(sum(counts) == n, f"B3: the group acked {sum(counts)} messages, {n} were published")
    sample = throughput(n, finished[0] - started)
    sample.raw["members"] = MEMBERS
    return sample


async def _b4(ep: Endpoint, sizes: Sizes) -> Sample:
    ping_topic, pong_topic = ep.name("b4-ping"), ep.name("b4-pong")
    ping_sub = await ep.subscriber(ping_topic)
    pong_sub = await ep.subscriber(pong_topic)
    ping_pub, pong_pub = ep.publisher(), ep.publisher()
    return latency(
        await ping_pong_tasks(
            sizes.b4_trips, ping_sub, pong_sub, ping_pub, pong_pub, ping_topic, pong_topic
        )
    )


def workloads(backend: RemoteEndpoint) -> tuple[Workload, ...]:
    """B1-B4 comparing the in-memory broker with ``backend``."""
    memory, remote, name = MemoryEndpoint(), backend.label, backend.spec.name

    def sides(body: _Body) -> tuple[Side, Side]:
        return _side(memory, body), _side(backend, body)

    def compare(key: str, title: str, unit: str) -> tuple[Compare]:
        ratio = f"{name}/memory" if unit == "us" else f"memory/{name}"
        return (Compare(key, title, MEMORY, remote, unit, ratio=ratio),)

    return (
        Workload(
            "B1",
            "asyncio producer -> subscriber",
            sides(_b1),
            compare("B1", "asyncio producer -> subscriber", "msg/s"),
            notes=tuple(backend.describe()),
        ),
        Workload(
            "B2",
            f"fan-out to {FANOUT} subscribers",
            sides(_b2),
            compare("B2", f"fan-out to {FANOUT} subscribers", "deliveries/s"),
        ),
        Workload(
            "B3",
            f"ack group of {MEMBERS} members",
            sides(_b3),
            compare("B3", f"ack group of {MEMBERS} members", "msg/s"),
        ),
        Workload("B4", "round trip latency", sides(_b4), compare("B4", "round trip p50", "us")),
    )
