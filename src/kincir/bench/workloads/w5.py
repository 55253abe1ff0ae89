"""W5: asyncio producer task -> consumer task. W5o: the same with a dict per message
(``harness.orders``), ``asyncio.Queue`` putting the same dicts."""

from __future__ import annotations

import asyncio

from ..drive import together
from ..harness import PAYLOAD, TOPIC, Order, Sample, Sizes, clock, fast_setup, orders, throughput


def kincir_messages(sizes: Sizes) -> Sample:
    n = sizes.w5_messages

    async def main() -> int:
        broker, (sub,), pub = fast_setup()

        async def consume() -> int:
            receive = sub.receive
            for _ in range(n):
                await receive()
            return clock()

        async def produce() -> None:
            send = pub.send
            payload = PAYLOAD
            for _ in range(n):
                await send(TOPIC, payload)

        started = clock()
        finished, _ = await together(consume(), produce())
        broker.force_shutdown()
        return int(finished) - started

    return throughput(n, asyncio.run(main()))


def asyncio_queue(sizes: Sizes) -> Sample:
    n = sizes.w5_messages

    async def main() -> int:
        q: asyncio.Queue[bytes] = asyncio.Queue()

        async def consume() -> int:
            get = q.get
            for _ in range(n):
                await get()
            return clock()

        async def produce() -> None:
            put = q.put
            payload = PAYLOAD
            for _ in range(n):
                await put(payload)

        started = clock()
        finished, _ = await together(consume(), produce())
        return int(finished) - started

    return throughput(n, asyncio.run(main()))


def kincir_objects(sizes: Sizes) -> Sample:
    """W5o: ``kincir_messages`` with a dict per message."""
    n = sizes.w5_messages
    payloads = orders(n)

    async def main() -> int:
        broker, (sub,), pub = fast_setup()

        async def consume() -> int:
            receive = sub.receive
            for _ in range(n):
                await receive()
            return clock()

        async def produce() -> None:
            send = pub.send
            for payload in payloads:
                await send(TOPIC, payload)

        started = clock()
        finished, _ = await together(consume(), produce())
        broker.force_shutdown()
        return int(finished) - started

    return throughput(n, asyncio.run(main()))


def asyncio_objects(sizes: Sizes) -> Sample:
    """W5o's baseline: ``asyncio_queue`` putting the dicts of ``orders``."""
    n = sizes.w5_messages
    payloads = orders(n)

    async def main() -> int:
        q: asyncio.Queue[Order] = asyncio.Queue()

        async def consume() -> int:
            get = q.get
            for _ in range(n):
                await get()
            return clock()

        async def produce() -> None:
            put = q.put
            for payload in payloads:
                await put(payload)

        started = clock()
        finished, _ = await together(consume(), produce())
        return int(finished) - started

    return throughput(n, asyncio.run(main()))
