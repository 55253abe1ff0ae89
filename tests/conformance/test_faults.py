"""Faults on the servers: refused connections and a server restarted mid-stream.

The restart tests need the ``.ci/servers`` script (``KINCIR_SERVERS`` names it; ``.ci/run`` sets
it) to restart a server on the same port with its data kept.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

import kincir

from .conftest import Backend, RemoteBackend

SERVERS = os.environ.get("KINCIR_SERVERS")


def remote_only(backend: Backend) -> RemoteBackend:
    if not isinstance(backend, RemoteBackend):
        pytest.skip("the in-memory broker has no server")
    return backend


def refused_url(name: str) -> str:
    return {
        "redis": "redis://127.0.0.1:1/0",
        "rabbitmq": "amqp://guest:guest@127.0.0.1:1/",
        "kafka": "127.0.0.1:1",
    }[name]


def test_connection_refused_is_a_clear_error(backend: Backend) -> None:
    remote = remote_only(backend)
    cls = getattr(remote.mod, f"{remote.prefix}Broker")

    async def body() -> None:
        broker = cls(refused_url(remote.name))
        started = time.monotonic()
        with pytest.raises(kincir.ConnectionFailed) as info:
            await broker.connect()
        assert info.value.backend == remote.name
        assert "127.0.0.1:1" in str(info.value)
        publisher = getattr(remote.mod, f"{remote.prefix}Publisher")(broker)
        with pytest.raises(kincir.ConnectionFailed):
            await publisher.publish("t", [b"x"])
        assert time.monotonic() - started < 30, "refused connections must not hang"
        await broker.shutdown()

    backend.run(body())


def silent_url(name: str, port: int) -> str:
    return refused_url(name).replace(":1", f":{port}")


def test_a_server_that_never_answers_is_a_clear_error(backend: Backend) -> None:
    """A server that accepts the connection and then says nothing (hung, or a firewall
    black-holing it): every call ends with ConnectionFailed after its timeout, never hangs."""
    remote = remote_only(backend)
    cls = getattr(remote.mod, f"{remote.prefix}Broker")

    async def body() -> None:
        held: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # read nothing, answer nothing

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            broker = cls(silent_url(remote.name, port), connect_timeout=1.0, operation_timeout=2.0)
            started = time.monotonic()
            with pytest.raises(kincir.ConnectionFailed) as info:
                await broker.connect()
            assert info.value.backend == remote.name
            assert time.monotonic() - started < 15, "a silent server must not hang the caller"
            await broker.shutdown()
        finally:
            for writer in held:
                writer.close()
            server.close()
            await server.wait_closed()

    backend.run(body())


def restart(name: str) -> None:
    assert SERVERS is not None
    subprocess.run([SERVERS, "restart", name], check=True, timeout=180)


@pytest.mark.slow
def test_server_restart_mid_stream_is_at_least_once(backend: Backend) -> None:
    remote = remote_only(backend)
    remote.requires("restart_durability")
    if SERVERS is None:
        if os.environ.get("KINCIR_REQUIRE_BACKENDS", "") not in ("", "0"):
            pytest.fail("KINCIR_REQUIRE_BACKENDS is set but KINCIR_SERVERS is not", pytrace=False)
        pytest.skip("KINCIR_SERVERS (the .ci/servers script) is not set")

    async def body() -> None:
        broker = await remote.broker()
        topic = remote.topic()
        sub = remote.ack_subscriber(broker, group="restart", ack_timeout=5.0, max_deliveries=None)
        await sub.subscribe(topic)
        pub = remote.publisher(broker)
        await pub.publish(topic, [f"before-{i}".encode() for i in range(10)])
        acked: list[bytes] = []
        for _ in range(5):
            msg, handle = await sub.receive_with_ack(timeout=10)
            await sub.ack(handle)
            acked.append(msg.payload)
        held, _ = await sub.receive_with_ack(timeout=10)  # in flight across the restart

        await asyncio.get_running_loop().run_in_executor(None, restart, remote.name)

        deadline = time.monotonic() + 60
        while True:  # the publisher reports the outage; the application retries
            try:
                await pub.publish(topic, [f"after-{i}".encode() for i in range(10)])
                break
            except kincir.ConnectionFailed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        got: dict[bytes, int] = {}
        while True:
            try:
                msg, handle = await sub.receive_with_ack(timeout=15)
            except TimeoutError:
                break
            got[msg.payload] = got.get(msg.payload, 0) + 1
            await sub.ack(handle)
        expected = {f"before-{i}".encode() for i in range(5, 10)} | {
            f"after-{i}".encode() for i in range(10)
        }
        assert held.payload in got, "the message in flight at the restart is redelivered"
        assert expected <= set(got), f"lost: {sorted(expected - set(got))}"
        assert not set(acked) & set(got), "acked messages are never redelivered"

    backend.run(body(), timeout=240)
