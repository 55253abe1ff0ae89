"""W8: one producer process -> one consumer process, 64-byte payloads: a message per call
(W8), and batches of BATCH (W8b)."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

from ..harness import BATCH, PAYLOAD, TOPIC, Sample, Sizes, check, clock, throughput
from ..processes import Handshake, elapsed, run_processes

#: How many slots the rings of the shared-memory sides have (64-byte payloads fit 128-byte ones).
SLOTS, SLOT_SIZE = 4096, 128


def shared_broker() -> Any:
    """A new shared-memory broker for one run of a side (its creator closes it)."""
    from kincir.shm import SharedMemoryBroker

    return SharedMemoryBroker(f"bench-{uuid.uuid4().hex[:12]}", slots=SLOTS, slot_size=SLOT_SIZE)


# -- the jobs (module-level: spawned processes import them) --------------------------------------


def kincir_produce(broker: Any, n: int, batch: int, hand: Handshake) -> None:
    from kincir.shm import SharedMemoryPublisher

    pub = SharedMemoryPublisher(broker)
    hand.go()
    started = clock()
    if batch == 1:
        send = pub.send_sync
        payload = PAYLOAD
        for _ in range(n):
            send(TOPIC, payload)
    else:
        publish = pub.publish_sync
        messages = [PAYLOAD] * batch
        for _ in range(n // batch):
            publish(TOPIC, messages)
    hand.report(started)
    broker.close()


def kincir_consume(broker: Any, n: int, batch: int, hand: Handshake) -> None:
    from kincir.shm import SharedMemorySubscriber

    sub = SharedMemorySubscriber(broker)
    sub.subscribe(TOPIC)
    hand.ready()
    if batch == 1:
        receive = sub.receive_sync
        for _ in range(n):
            receive()
        got = n
    else:
        take = sub.receive_batch_sync
        got = 0
        while got < n:
            got += len(take(batch))
    hand.report(clock())
    check(got == n, f"the consumer got {got} of {n}")
    sub.close()
    broker.close()


def queue_produce(q: Any, n: int, hand: Handshake) -> None:
    put = q.put
    payload = PAYLOAD
    hand.go()
    started = clock()
    for _ in range(n):
        put(payload)
    hand.report(started)


def queue_consume(q: Any, n: int, hand: Handshake) -> None:
    get = q.get
    hand.ready()
    for _ in range(n):
        get()
    hand.report(clock())


def fifo_produce(q: Any, n: int, hand: Handshake) -> None:
    put_many = q.put_many
    messages = [PAYLOAD] * BATCH
    hand.go()
    started = clock()
    for _ in range(n // BATCH):
        put_many(messages, timeout=60)
    hand.report(started)


def fifo_consume(q: Any, n: int, hand: Handshake) -> None:
    get_many = q.get_many
    hand.ready()
    got = 0
    while got < n:
        got += len(get_many(timeout=60, max_messages_to_get=BATCH))
    hand.report(clock())


def zmq_produce(address: str, n: int, hand: Handshake) -> None:
    zmq = importlib.import_module("zmq")  # optional: the bench extra

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(address)
    send = push.send
    payload = PAYLOAD
    hand.go()
    started = clock()
    for _ in range(n):
        send(payload)
    hand.report(started)
    push.close(linger=-1)
    context.term()


def zmq_consume(address: str, n: int, hand: Handshake) -> None:
    zmq = importlib.import_module("zmq")  # optional: the bench extra

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(address)
    recv = pull.recv
    hand.ready()
    for _ in range(n):
        recv()
    hand.report(clock())
    pull.close()
    context.term()


# -- the sides -----------------------------------------------------------------------------------


def _kincir(n: int, batch: int) -> Sample:
    broker = shared_broker()
    try:
        reports = run_processes(
            (kincir_produce, (broker, n, batch)), [(kincir_consume, (broker, n, batch))]
        )
    finally:
        broker.close()
    return throughput(n, elapsed(reports))


def kincir_messages(sizes: Sizes) -> Sample:
    return _kincir(sizes.w8_messages, 1)


def kincir_batches(sizes: Sizes) -> Sample:
    return _kincir(sizes.w8b_messages // BATCH * BATCH, BATCH)


def mp_queue(sizes: Sizes) -> Sample:
    """``multiprocessing.Queue``: a pickle, a pipe write and a feeder thread per message."""
    from ..processes import _SPAWN

    n = sizes.w8_messages
    q = _SPAWN.Queue()
    reports = run_processes((queue_produce, (q, n)), [(queue_consume, (q, n))])
    return throughput(n, elapsed(reports))


def faster_fifo(sizes: Sizes) -> Sample:
    """faster-fifo's ``put_many`` / ``get_many`` of BATCH, a quarter of the messages (it is the
    slowest of the three: its rate is what counts)."""
    fifo = importlib.import_module("faster_fifo")
    n = max(1, sizes.w8b_messages // 4 // BATCH) * BATCH
    q = fifo.Queue(max_size_bytes=64 * 1024 * 1024)
    reports = run_processes((fifo_produce, (q, n)), [(fifo_consume, (q, n))])
    return throughput(n, elapsed(reports))


def pyzmq(sizes: Sizes) -> Sample:
    """pyzmq PUSH/PULL over ``ipc://``: zmq batches the frames itself."""
    import tempfile

    n = sizes.w8b_messages
    with tempfile.TemporaryDirectory() as where:
        address = f"ipc://{where}/w8b"
        reports = run_processes((zmq_produce, (address, n)), [(zmq_consume, (address, n))])
    return throughput(n, elapsed(reports))
