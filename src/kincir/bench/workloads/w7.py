"""W7: producer thread -> asyncio consumer task."""

from __future__ import annotations

import asyncio

from ..drive import close_janus, load_janus, put_payloads, send_messages, thread_to_loop
from ..harness import PAYLOAD, Sample, Sizes, clock, fast_setup, throughput


def kincir_messages(sizes: Sizes) -> Sample:
    n = sizes.w7_messages

    async def main() -> int:
        broker, (sub,), pub = fast_setup()

        def produce() -> None:
            send_messages(pub.send_nowait, n)

        async def consume() -> int:
            receive = sub.receive
            for _ in range(n):
                await receive()
            return clock()

        try:
            return await thread_to_loop(produce, consume())
        finally:
            broker.force_shutdown()

    return throughput(n, asyncio.run(main()))


def asyncio_queue(sizes: Sizes) -> Sample:
    n = sizes.w7_messages

    async def main() -> int:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes] = asyncio.Queue()

        def produce() -> None:
            call = loop.call_soon_threadsafe
            put = q.put_nowait
            payload = PAYLOAD
            for _ in range(n):
                call(put, payload)

        async def consume() -> int:
            get = q.get
            for _ in range(n):
                await get()
            return clock()

        return await thread_to_loop(produce, consume())

    return throughput(n, asyncio.run(main()))


def janus_queue(sizes: Sizes) -> Sample:
    """janus: ``sync_q.put`` on the producer thread, ``await async_q.get()`` on the loop."""
    janus = load_janus()
    n = sizes.w7_messages

    async def main() -> int:
        q = janus.Queue()
        try:

            def produce() -> None:
                put_payloads(q.sync_q.put, n)

            async def consume() -> int:
                get = q.async_q.get
                for _ in range(n):
                    await get()
                return clock()

            return await thread_to_loop(produce, consume())
        finally:
            await close_janus(q)

    return throughput(n, asyncio.run(main()))
