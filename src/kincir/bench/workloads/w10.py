"""W10: ping-pong between two processes: the round trip of one 64-byte message each way."""

from __future__ import annotations

from typing import Any

from ..harness import PAYLOAD, PING, PONG, Sample, Sizes, clock, latency
from ..processes import _SPAWN, Handshake, run_processes
from .w8 import shared_broker


def kincir_ping(broker: Any, trips: int, hand: Handshake) -> None:
    from kincir.shm import SharedMemoryPublisher, SharedMemorySubscriber

    sub = SharedMemorySubscriber(broker)
    sub.subscribe(PONG)
    send = SharedMemoryPublisher(broker).send_sync
    receive = sub.receive_sync
    payload = PAYLOAD
    times = [0] * trips
    hand.go()
    for i in range(trips):
        started = clock()
        send(PING, payload)
        receive()
        times[i] = clock() - started
    hand.report(times)
    sub.close()
    broker.close()


def kincir_pong(broker: Any, trips: int, hand: Handshake) -> None:
    from kincir.shm import SharedMemoryPublisher, SharedMemorySubscriber

    sub = SharedMemorySubscriber(broker)
    sub.subscribe(PING)
    send = SharedMemoryPublisher(broker).send_sync
    receive = sub.receive_sync
    payload = PAYLOAD
    hand.ready()
    for _ in range(trips):
        receive()
        send(PONG, payload)
    hand.report(0)
    sub.close()
    broker.close()


def pipe_ping(end: Any, trips: int, hand: Handshake) -> None:
    send, receive = end.send_bytes, end.recv_bytes
    payload = PAYLOAD
    times = [0] * trips
    hand.go()
    for i in range(trips):
        started = clock()
        send(payload)
        receive()
        times[i] = clock() - started
    hand.report(times)


def pipe_pong(end: Any, trips: int, hand: Handshake) -> None:
    send, receive = end.send_bytes, end.recv_bytes
    payload = PAYLOAD
    hand.ready()
    for _ in range(trips):
        receive()
        send(payload)
    hand.report(0)


def kincir_round_trips(sizes: Sizes) -> Sample:
    trips = sizes.w10_trips
    broker = shared_broker()
    broker._topic(PING)  # both made before either process subscribes to the other's
    broker._topic(PONG)
    try:
        reports = run_processes((kincir_ping, (broker, trips)), [(kincir_pong, (broker, trips))])
    finally:
        broker.close()
    return latency(reports[0])  # type: ignore[arg-type]


def pipe_round_trips(sizes: Sizes) -> Sample:
    """``multiprocessing.Pipe``: ``send_bytes`` / ``recv_bytes`` (no pickling at all)."""
    trips = sizes.w10_trips
    ping_end, pong_end = _SPAWN.Pipe()
    reports = run_processes((pipe_ping, (ping_end, trips)), [(pipe_pong, (pong_end, trips))])
    return latency(reports[0])  # type: ignore[arg-type]
