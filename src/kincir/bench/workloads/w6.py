"""W6: ping-pong round trip latency, two threads and two asyncio tasks."""

from __future__ import annotations

import asyncio
import queue
import threading

from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber

from ..drive import ping_pong_tasks, ping_pong_threads, together
from ..harness import PAYLOAD, PING, PONG, Sample, Sizes, clock, fast_broker, latency, subscriber


def _ping_pong_broker() -> tuple[
    InMemoryBroker, InMemorySubscriber, InMemorySubscriber, InMemoryPublisher, InMemoryPublisher
]:
    """A ``fast_broker()``, its subscribers of PING and of PONG, and two publishers (made in
    that order): what both kincir sides of W6 set up before their round trips."""
    broker = fast_broker()
    ping_sub = subscriber(broker, PING)
    pong_sub = subscriber(broker, PONG)
    return broker, ping_sub, pong_sub, InMemoryPublisher(broker), InMemoryPublisher(broker)


def kincir_threads(sizes: Sizes) -> Sample:
    trips = sizes.w6_thread_trips
    broker, ping_sub, pong_sub, ping_pub, pong_pub = _ping_pong_broker()

    def pong() -> None:
        receive = ping_sub.receive_sync
        send = pong_pub.send_nowait
        payload = PAYLOAD
        for _ in range(trips):
            receive()
            send(PONG, payload)

    def ping() -> list[int]:
        receive = pong_sub.receive_sync
        send = ping_pub.send_nowait
        payload = PAYLOAD
        now = clock
        times = [0] * trips
        for i in range(trips):
            started = now()
            send(PING, payload)
            receive()
            times[i] = now() - started
        return times

    sample = ping_pong_threads(ping, pong, broker.force_shutdown)
    broker.force_shutdown()
    return sample


def simple_queue_threads(sizes: Sizes) -> Sample:
    trips = sizes.w6_thread_trips
    pings: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    pongs: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def pong() -> None:
        get, put = pings.get, pongs.put
        payload = PAYLOAD
        for _ in range(trips):
            get()
            put(payload)

    def ping() -> list[int]:
        get, put = pongs.get, pings.put
        payload = PAYLOAD
        now = clock
        times = [0] * trips
        for i in range(trips):
            started = now()
            put(payload)
            get()
            times[i] = now() - started
        return times

    return ping_pong_threads(ping, pong, lambda: None)


def lock_handoff_threads(sizes: Sizes) -> Sample:
    """The floor under W6/threads: a round trip that is nothing but its two wake-ups, each
    thread releasing a bare ``threading.Lock`` the other waits to acquire (no payload, no
    queue). Both queues' round trips pay these two wake-ups."""
    trips = sizes.w6_thread_trips
    pinged, ponged = threading.Lock(), threading.Lock()
    pinged.acquire()
    ponged.acquire()

    def pong() -> None:
        wait, answer = pinged.acquire, ponged.release
        for _ in range(trips):
            wait()
            answer()

    def ping() -> list[int]:
        wait, signal = ponged.acquire, pinged.release
        now = clock
        times = [0] * trips
        for i in range(trips):
            started = now()
            signal()
            wait()
            times[i] = now() - started
        return times

    def abort() -> None:  # wake a side left waiting
        for lock in (pinged, ponged):
            if lock.locked():
                lock.release()

    return ping_pong_threads(ping, pong, abort)


def kincir_tasks(sizes: Sizes) -> Sample:
    trips = sizes.w6_async_trips

    async def main() -> list[int]:
        broker, ping_sub, pong_sub, ping_pub, pong_pub = _ping_pong_broker()
        times = await ping_pong_tasks(trips, ping_sub, pong_sub, ping_pub, pong_pub, PING, PONG)
        broker.force_shutdown()
        return times

    return latency(asyncio.run(main()))


def asyncio_queue_tasks(sizes: Sizes) -> Sample:
    trips = sizes.w6_async_trips

    async def main() -> list[int]:
        pings: asyncio.Queue[bytes] = asyncio.Queue()
        pongs: asyncio.Queue[bytes] = asyncio.Queue()

        async def pong() -> None:
            get, put = pings.get, pongs.put
            payload = PAYLOAD
            for _ in range(trips):
                await get()
                await put(payload)

        async def ping() -> list[int]:
            get, put = pongs.get, pings.put
            payload = PAYLOAD
            now = clock
            times = [0] * trips
            for i in range(trips):
                started = now()
                await put(payload)
                await get()
                times[i] = now() - started
            return times

        _, times = await together(pong(), ping())
        return list(times)

    return latency(asyncio.run(main()))
