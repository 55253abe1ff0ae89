"""W1: one thread, a one-message send per payload, vs ``queue.SimpleQueue`` put x N, get x N.

W1o: the same with a distinct dict per message (``harness.orders``), vs ``SimpleQueue`` and
``queue.Queue`` putting the same dicts.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from ..harness import (
    PAYLOAD,
    TOPIC,
    Order,
    Sample,
    Sizes,
    check,
    clock,
    fast_setup,
    orders,
    throughput,
)


def kincir_messages(sizes: Sizes) -> Sample:
    n = sizes.w1_messages
    broker, (sub,), pub = fast_setup()
    send = pub.send_nowait
    receive = sub.try_receive
    payload = PAYLOAD
    msg = None
    started = clock()
    for _ in range(n):
        send(TOPIC, payload)
    for _ in range(n):
        msg = receive()
    elapsed = clock() - started
    check(msg is not None and sub.try_receive() is None, "W1: kincir lost or kept messages")
    broker.force_shutdown()
    return throughput(n, elapsed)


def simple_queue(sizes: Sizes) -> Sample:
    n = sizes.w1_messages
    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    put, get = q.put, q.get
    payload = PAYLOAD
    started = clock()
    for _ in range(n):
        put(payload)
    for _ in range(n):
        get()
    elapsed = clock() - started
    return throughput(n, elapsed)


def kincir_objects(sizes: Sizes) -> Sample:
    """W1o: ``kincir_messages`` with a dict per message.

    The loop walks the list of dicts where W1 counts a range, about 3 ns per message cheaper in
    CPython 3.11; the baselines walk the same list, so only the ratio to W1 carries that.
    """
    n = sizes.w1_messages
    payloads = orders(n)
    broker, (sub,), pub = fast_setup()
    send = pub.send_nowait
    receive = sub.try_receive
    msg = None
    started = clock()
    for payload in payloads:
        send(TOPIC, payload)
    for _ in range(n):
        msg = receive()
    elapsed = clock() - started
    # by reference: a copy or a conversion would be measuring something other than W1o claims
    check(
        msg is not None and msg.payload is payloads[-1] and sub.try_receive() is None,
        "W1o: kincir lost, kept or copied messages",
    )
    broker.force_shutdown()
    return throughput(n, elapsed)


def stdlib_objects(
    factory: Callable[[], queue.SimpleQueue[Order] | queue.Queue[Order]],
) -> Callable[[Sizes], Sample]:
    """W1o's baselines: put every dict of ``orders``, then get as many, on one thread."""

    def run(sizes: Sizes) -> Sample:
        n = sizes.w1_messages
        payloads = orders(n)
        q = factory()
        put, get = q.put, q.get
        started = clock()
        for payload in payloads:
            put(payload)
        for _ in range(n):
            get()
        elapsed = clock() - started
        return throughput(n, elapsed)

    return run
