"""The server backends, one descriptor each: the one place that knows their names, extras,
servers and classes.

``backends()`` lists the descriptors (``BackendSpec``), ``get(name)`` finds one, and
``spec.load()`` imports the backend's module and returns its classes (``BackendClasses``);
nothing here imports a backend's client library until ``load`` is called. The broker
constructors take their default URL from here, ``kincir bench --backend`` (``kincir.bench
.backends``) and the conformance suite (``tests/conformance``) their servers and classes, and
``.ci/servers`` starts them on the default ports listed here (a test checks that ``.ci/servers
env`` prints exactly these default URLs).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import urllib.parse
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._remote import RemoteAckSubscriber, RemoteBroker, RemotePublisher, RemoteSubscriber

__all__ = ["KAFKA", "RABBITMQ", "REDIS", "BackendClasses", "BackendSpec", "backends", "get"]


class BackendClasses(NamedTuple):
    """A backend's four classes."""

    broker: type[RemoteBroker]
    publisher: type[RemotePublisher[Any]]
    subscriber: type[RemoteSubscriber[Any]]
    ack_subscriber: type[RemoteAckSubscriber[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSpec:
    """What kincir knows of one server backend."""

    #: The backend's name: ``--backend`` NAME, the module ``kincir.<name>``, the pip extra.
    name: str
    #: The engine's name as people write it, and the prefix of the classes (``RedisBroker``).
    title: str
    #: The client library the extra installs (named in the ImportError without it).
    client: str
    #: The environment variable naming the server (the conformance suite's, the bench's).
    url_env: str
    #: The server when no URL is given: what ``.ci/servers`` starts, on 127.0.0.1.
    default_url: str
    #: The port of ``default_url`` (and of a URL that names none).
    default_port: int
    #: The variable that moves ``.ci/servers``'s server off ``default_port``.
    port_env: str
    #: The backend's classes, taken from its imported module.
    _classes: Callable[[ModuleType], BackendClasses] = dataclasses.field(repr=False, compare=False)

    @property
    def module(self) -> str:
        """The backend's module: ``kincir.<name>``."""
        return f"kincir.{self.name}"

    @property
    def extra(self) -> str:
        """The pip extra that installs the client library: ``kincir[<extra>]``."""
        return self.name

    @property
    def install_hint(self) -> str:
        """The ImportError message of the backend's module without its client library."""
        return f"{self.module} needs {self.client}: pip install 'kincir[{self.extra}]'"

    def url(self, environ: Mapping[str, str] = os.environ) -> str:
        """The server: ``url_env`` if set (and not empty), else ``default_url``."""
        return environ.get(self.url_env) or self.default_url

    def url_at(self, port: int) -> str:
        """``default_url`` with another port (a test server, a refused one)."""
        return self.default_url.replace(f":{self.default_port}", f":{port}", 1)

    def address(self, url: str) -> tuple[str, int]:
        """The (host, port) a URL of this backend connects to first."""
        if "://" not in url:  # Kafka's bootstrap list: host:port[,host:port...]
            host, _, port = url.split(",")[0].rpartition(":")
            return host or "127.0.0.1", int(port)
        parts = urllib.parse.urlsplit(url)
        return parts.hostname or "127.0.0.1", parts.port or self.default_port

    def load(self) -> BackendClasses:
        """Import the backend (ImportError without its client library) and return its classes
        (AttributeError, its ``name`` the class, if the module lacks one)."""
        return self._classes(importlib.import_module(self.module))


def _redis(module: ModuleType) -> BackendClasses:
    return BackendClasses(
        module.RedisBroker, module.RedisPublisher, module.RedisSubscriber, module.RedisAckSubscriber
    )


def _rabbitmq(module: ModuleType) -> BackendClasses:
    return BackendClasses(
        module.RabbitMQBroker,
        module.RabbitMQPublisher,
        module.RabbitMQSubscriber,
        module.RabbitMQAckSubscriber,
    )


def _kafka(module: ModuleType) -> BackendClasses:
    return BackendClasses(
        module.KafkaBroker, module.KafkaPublisher, module.KafkaSubscriber, module.KafkaAckSubscriber
    )


REDIS = BackendSpec(
    name="redis",
    title="Redis",
    client="redis-py",
    url_env="KINCIR_REDIS_URL",
    default_url="redis://127.0.0.1:6379/0",
    default_port=6379,
    port_env="KINCIR_REDIS_PORT",
    _classes=_redis,
)
RABBITMQ = BackendSpec(
    name="rabbitmq",
    title="RabbitMQ",
    client="aio-pika",
    url_env="KINCIR_RABBITMQ_URL",
    default_url="amqp://guest:guest@127.0.0.1:5672/",
    default_port=5672,
    port_env="KINCIR_AMQP_PORT",
    _classes=_rabbitmq,
)
KAFKA = BackendSpec(
    name="kafka",
    title="Kafka",
    client="aiokafka",
    url_env="KINCIR_KAFKA_URL",
    default_url="127.0.0.1:9092",
    default_port=9092,
    port_env="KINCIR_KAFKA_PORT",
    _classes=_kafka,
)

_ALL = {spec.name: spec for spec in (REDIS, RABBITMQ, KAFKA)}


def backends() -> tuple[BackendSpec, ...]:
    """Every server backend's descriptor, in a fixed order (redis, rabbitmq, kafka)."""
    return tuple(_ALL.values())


def get(name: str) -> BackendSpec:
    """The descriptor of backend ``name``; KeyError naming the known ones if there is none."""
    try:
        return _ALL[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; choose from {', '.join(_ALL)}") from None
