"""The registry of server backends (kincir._backends) agrees with the backends and .ci/servers."""

from __future__ import annotations

import inspect
import os
import pathlib
import shutil
import subprocess

import pytest

import kincir
from kincir import _backends

SERVERS = pathlib.Path(__file__).resolve().parents[1] / ".ci" / "servers"


def test_every_backend_has_one_descriptor() -> None:
    names = [spec.name for spec in _backends.backends()]
    assert names == ["redis", "rabbitmq", "kafka"]
    assert all(_backends.get(name).name == name for name in names)
    with pytest.raises(KeyError, match="choose from redis, rabbitmq, kafka"):
        _backends.get("nats")
    for spec in _backends.backends():
        assert spec.url_env == f"KINCIR_{spec.name.upper()}_URL"
        assert spec.address(spec.default_url) == ("127.0.0.1", spec.default_port)
        assert spec.address(spec.url_at(1)) == ("127.0.0.1", 1)


@pytest.mark.parametrize("spec", _backends.backends(), ids=lambda s: s.name)
def test_load_returns_the_backend_classes(spec: _backends.BackendSpec) -> None:
    try:
        classes = spec.load()
    except ImportError as exc:
        assert str(exc) == spec.install_hint
        pytest.skip(f"{spec.client} is not installed")
    module = __import__(spec.module, fromlist=["__all__"])
    roles = ("Broker", "Publisher", "Subscriber", "AckSubscriber")
    assert [c.__name__ for c in classes] == [f"{spec.title}{role}" for role in roles]
    assert all(getattr(module, c.__name__) is c and c.__module__ == spec.module for c in classes)
    assert sorted(module.__all__) == sorted(c.__name__ for c in classes)
    assert issubclass(classes.ack_subscriber, classes.subscriber)
    assert isinstance(classes.publisher(classes.broker()), kincir.Publisher)
    default = inspect.signature(classes.broker).parameters["url"].default
    assert default == spec.default_url == classes.broker().url


def test_url_reads_the_environment_variable() -> None:
    spec = _backends.REDIS
    assert spec.url({}) == spec.default_url
    assert spec.url({spec.url_env: ""}) == spec.default_url
    assert spec.url({spec.url_env: "redis://elsewhere:1/2"}) == "redis://elsewhere:1/2"


@pytest.mark.skipif(
    not SERVERS.exists() or shutil.which("bash") is None, reason="needs .ci/servers and bash"
)
def test_ci_servers_starts_the_servers_at_the_registry_defaults() -> None:
    """``.ci/servers env`` prints each backend's default URL, and its port variable moves it."""
    ports = {spec.port_env for spec in _backends.backends()}
    base = {k: v for k, v in os.environ.items() if k not in ports}

    def printed(env: dict[str, str]) -> list[str]:
        run = subprocess.run(
            [str(SERVERS), "env"], env=env, capture_output=True, text=True, check=True, timeout=30
        )
        return run.stdout.splitlines()

    specs = _backends.backends()
    assert printed(base) == [f"export {s.url_env}={s.default_url}" for s in specs]
    moved = printed({**base, **{s.port_env: str(40000 + i) for i, s in enumerate(specs)}})
    assert moved == [f"export {s.url_env}={s.url_at(40000 + i)}" for i, s in enumerate(specs)]
