"""W1: one thread, a Message per publish, vs ``queue.SimpleQueue`` put x N, get x N."""

from __future__ import annotations

import queue

from kincir import Message

from ..harness import PAYLOAD, TOPIC, Sample, Sizes, check, clock, fast_setup, throughput


def kincir_messages(sizes: Sizes) -> Sample:
    n = sizes.w1_messages
    broker, (sub,), pub = fast_setup()
    publish = pub.publish_nowait
    receive = sub.try_receive
    payload = PAYLOAD
    msg = None
    started = clock()
    for _ in range(n):
        publish(TOPIC, [Message(payload)])
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
