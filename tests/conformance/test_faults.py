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

from .conftest import Backend, RemoteBackend, Scene

SERVERS = os.environ.get("KINCIR_SERVERS")


def remote_only(backend: Backend) -> RemoteBackend:
    if not isinstance(backend, RemoteBackend):
        pytest.skip(f"{backend.name}: no server")
    return backend


def test_connection_refused_is_a_clear_error(backend: Backend) -> None:
    remote = remote_only(backend)
    classes = remote.classes

    async def body() -> None:
        broker = classes.broker(remote.spec.url_at(1))  # nothing listens on port 1
        started = time.monotonic()
        with pytest.raises(kincir.ConnectionFailed) as info:
            await broker.connect()
        assert info.value.backend == remote.name
        assert "127.0.0.1:1" in str(info.value)
        publisher = classes.publisher(broker)
        with pytest.raises(kincir.ConnectionFailed):
            await publisher.publish("t", [b"x"])
        assert time.monotonic() - started < 30, "refused connections must not hang"
        await broker.shutdown()

    backend.run(body())


def test_a_server_that_never_answers_is_a_clear_error(backend: Backend) -> None:
    """A server that accepts the connection and then says nothing (hung, or a firewall
    black-holing it): every call ends with ConnectionFailed after its timeout, never hangs."""
    remote = remote_only(backend)
    cls = remote.classes.broker

    async def body() -> None:
        held: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # read nothing, answer nothing

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            broker = cls(remote.spec.url_at(port), connect_timeout=1.0, operation_timeout=2.0)
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

    async def body(s: Scene) -> None:
        sub = await s.ack_subscriber(group="restart", ack_timeout=5.0, max_deliveries=None)
        await s.publish([f"before-{i}".encode() for i in range(10)])
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
                await s.publish([f"after-{i}".encode() for i in range(10)])
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

    backend.play(body, timeout=240)


class Proxy:
    """A TCP relay to a server, which the test can cut (every connection aborted, new ones
    refused) and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()
        await self.server.wait_closed()


def test_a_lost_connection_is_reported_and_recovered(backend: Backend) -> None:
    remote = remote_only(backend)
    if remote.name == "kafka":
        pytest.skip("kafka clients reconnect to the advertised listener, not through a relay")
    cls = remote.classes.broker
    host, port = remote.spec.address(remote.url)

    async def body() -> None:
        proxy = Proxy((host, port))
        await proxy.start()
        url = remote.url.replace(f":{port}", f":{proxy.port}")
        options = {**remote.broker_options(), "connect_timeout": 1.0, "reconnect_timeout": 2.0}
        broker = cls(url, operation_timeout=3.0, **options)
        remote.brokers.append(broker)
        topic = remote.topic()
        sub = remote.subscriber(broker)
        await sub.subscribe(topic)
        pub = remote.publisher(broker)
        await pub.publish(topic, [b"before"])
        assert (await sub.receive(timeout=10)).payload == b"before"

        await proxy.cut()
        started = time.monotonic()
        with pytest.raises(kincir.ConnectionFailed):
            await sub.receive()  # no timeout of its own: reconnect_timeout ends it
        assert time.monotonic() - started < 15
        started = time.monotonic()
        with pytest.raises(kincir.ConnectionFailed):
            await pub.publish(topic, [b"during"])
        assert time.monotonic() - started < 15

        await proxy.start()  # the server is back, on the same address
        deadline = time.monotonic() + 30
        while True:
            try:
                await pub.publish(topic, [b"after"])
                got = await sub.receive(timeout=5)
                break
            except (kincir.ConnectionFailed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert got.payload in (b"during", b"after")
        await sub.close()
        await broker.shutdown()
        await proxy.cut()

    backend.run(body(), timeout=120)
