"""Instructions per message of kincir's hot loops, counted by valgrind's callgrind.

Wall time on a shared machine is too noisy to decide a micro-optimisation; instruction counts are
steady. Each loop runs at two sizes under `valgrind --tool=callgrind`; the difference of the two
totals divided by the difference of the sizes is the cost of one message, free of start-up.

    python bench/callgrind.py            # every loop
    python bench/callgrind.py w1 w5      # some of them
    python bench/callgrind.py w1 w1o     # a dict payload against a bytes one
    python bench/callgrind.py w1 w1p     # send_nowait against a batch of one

Needs valgrind on PATH and kincir installed in the running interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

SMALL, LARGE = 20_000, 120_000

# What most loops start with: N from the command line, and a broker with one publisher and one
# subscriber of topic "t".
ONE_READER = """
import sys
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
pub, sub = InMemoryPublisher(broker), InMemorySubscriber(broker)
sub.subscribe("t")
"""

# Each loop is a program run as `python -c LOOP N`: N messages through the loop.
LOOPS = {
    "w1": (
        "send_nowait(t, p) + try_receive()",
        ONE_READER
        + """def loop(send=pub.send_nowait, take=sub.try_receive, payload=b"x" * 64):
    for _ in range(n):
        send("t", payload)
        take()
loop()
""",
    ),
    "w1p": (
        "publish_nowait(t, [Message(p)]) + try_receive(): a batch of one",
        ONE_READER
        + """from kincir import Message
def loop(publish=pub.publish_nowait, take=sub.try_receive, payload=b"x" * 64):
    for _ in range(n):
        publish("t", [Message(payload)])
        take()
loop()
""",
    ),
    # W2's kept-up shape: n messages as batches of 100 raw payloads
    "w2": (
        "publish_nowait(t, [p] * 100) + try_receive_batch(100), per message",
        ONE_READER
        + """def loop(publish=pub.publish_nowait, take=sub.try_receive_batch,
         batch=[b"x" * 64] * 100):
    for _ in range(n // 100):
        publish("t", batch)
        take(100)
loop()
""",
    ),
    # w1 with a dict for the payload, the loop otherwise the same: the difference per message is
    # what moving an object costs over moving bytes
    "w1o": (
        "send_nowait(t, d) + try_receive(), d a 4-key dict",
        ONE_READER
        + """def loop(send=pub.send_nowait, take=sub.try_receive,
         payload={"id": 1, "sku": "A-1", "qty": 3, "price": 9.5}):
    for _ in range(n):
        send("t", payload)
        take()
loop()
""",
    ),
    # w1 read by a member of a consumer group of 4: the difference per message is what the group
    # receive path costs over a plain reader's
    "g": (
        "send_nowait(t, p) + try_receive() of a group member",
        """
import sys
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
pub = InMemoryPublisher(broker)
members = [InMemorySubscriber(broker, group="g") for _ in range(4)]
for member in members:
    member.subscribe("t")
def loop(send=pub.send_nowait, take=members[0].try_receive, payload=b"x" * 64):
    for _ in range(n):
        send("t", payload)
        take()
loop()
""",
    ),
    # G's shape: a producer thread, 4 member threads blocked in receive_sync (the wake-ups and
    # waits included; valgrind runs one thread at a time, so the counts vary a little)
    "gt": (
        "producer thread -> group of 4 threads in receive_sync",
        """
import sys, threading
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
pub = InMemoryPublisher(broker)
members = [InMemorySubscriber(broker, group="g") for _ in range(4)]
for member in members:
    member.subscribe("t")
def produce(send=pub.send_nowait, payload=b"x" * 64):
    for _ in range(n):
        send("t", payload)
    broker.shutdown()
def work(member):
    for _ in member:
        pass
threads = [threading.Thread(target=produce)] + [
    threading.Thread(target=work, args=(m,)) for m in members]
for t in threads:
    t.start()
for t in threads:
    t.join()
""",
    ),
    # W3's shape: a producer thread running ahead of a consumer thread in receive_sync, and
    # the same with a SimpleQueue (valgrind runs one thread at a time: the counts vary a little)
    "w3": (
        "producer thread send_nowait -> consumer thread receive_sync",
        ONE_READER
        + """import threading
def produce(send=pub.send_nowait, payload=b"x" * 64):
    for _ in range(n):
        send("t", payload)
def consume(take=sub.receive_sync):
    for _ in range(n):
        take()
threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
for t in threads:
    t.start()
for t in threads:
    t.join()
""",
    ),
    "w3q": (
        "producer thread SimpleQueue.put -> consumer thread get",
        """
import queue, sys, threading
n = int(sys.argv[1])
q = queue.SimpleQueue()
def produce(put=q.put, payload=b"x" * 64):
    for _ in range(n):
        put(payload)
def consume(get=q.get):
    for _ in range(n):
        get()
threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
for t in threads:
    t.start()
for t in threads:
    t.join()
""",
    ),
    "w5": (
        "asyncio producer task -> consumer task: await send(t, p) / await receive()",
        """
import asyncio, sys
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
async def main():
    broker = InMemoryBroker.with_default_config()
    pub, sub = InMemoryPublisher(broker), InMemorySubscriber(broker)
    await sub.subscribe("t")
    async def produce():
        send, payload = pub.send, b"x" * 64
        for _ in range(n):
            await send("t", payload)
    async def consume():
        for _ in range(n):
            await sub.receive()
    await asyncio.gather(produce(), consume())
asyncio.run(main())
""",
    ),
    # W6's thread side: every receive blocks and is woken, so this counts the wait and wake path
    # (valgrind runs one thread at a time: the counts vary a little)
    "w6": (
        "ping-pong: two threads, send_nowait + receive_sync each",
        """
import sys, threading
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
pings, pongs = InMemorySubscriber(broker), InMemorySubscriber(broker)
pings.subscribe("ping")
pongs.subscribe("pong")
def side(receive, publish, topic, first, payload=b"x" * 64):
    if first:
        publish(topic, payload)
    for _ in range(n - 1 if first else n):
        receive()
        publish(topic, payload)
    if first:
        receive()
threads = [
    threading.Thread(target=side, args=(
        pongs.receive_sync, InMemoryPublisher(broker).send_nowait, "ping", True)),
    threading.Thread(target=side, args=(
        pings.receive_sync, InMemoryPublisher(broker).send_nowait, "pong", False)),
]
for t in threads:
    t.start()
for t in threads:
    t.join()
""",
    ),
    # R's shape: a Router stage with one worker thread (ack on success) between a producer and
    # a reader of its output (valgrind runs one thread at a time: the counts vary a little)
    "r": (
        "send_nowait -> Router(concurrency=1) -> receive_sync",
        """
import sys
from kincir import Router
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
out = InMemorySubscriber(broker)
out.subscribe("out")
router = Router(broker, "in", "out", lambda item: item, concurrency=1).start()
send, payload = InMemoryPublisher(broker).send_nowait, b"x" * 64
for _ in range(n):
    send("in", payload)
for _ in range(n):
    out.receive_sync(timeout=60)
router.stop(60)
broker.shutdown()
""",
    ),
    # R's baseline in the same shape: a worker thread between two queue.Queue (task_done)
    "rq": (
        "put -> queue.Queue stage (1 worker thread) -> get",
        """
import queue, sys, threading
n = int(sys.argv[1])
inbox, outbox = queue.Queue(), queue.Queue()
def stage():
    get, put, done = inbox.get, outbox.put, inbox.task_done
    while (item := get()) is not None:
        put((lambda i: i)(item))
        done()
worker = threading.Thread(target=stage)
worker.start()
payload = b"x" * 64
for _ in range(n):
    inbox.put(payload)
for _ in range(n):
    outbox.get(timeout=60)
inbox.put(None)
worker.join()
""",
    ),
    "ack": (
        "publish_nowait + try_receive_with_ack + ack",
        """
import sys
from kincir.memory import InMemoryAckSubscriber, InMemoryBroker, InMemoryPublisher
n = int(sys.argv[1])
broker = InMemoryBroker.with_default_config()
pub, sub = InMemoryPublisher(broker), InMemoryAckSubscriber(broker)
sub.subscribe("t")
def loop(publish=pub.publish_nowait, take=sub.try_receive_with_ack, ack=sub.ack, payload=b"x" * 64):
    for _ in range(n):
        publish("t", [payload])
        message, handle = take()
        ack(handle)
loop()
""",
    ),
    # w1's loop with both calls replaced by C functions that do almost nothing (two arguments,
    # then none): the floor any engine behind that call pair starts from
    "floor": (
        "w1's loop calling operator.is_(t, p) + {}.clear()",
        """
import operator, sys
n = int(sys.argv[1])
def loop(send=operator.is_, take={}.clear, payload=b"x" * 64):
    for _ in range(n):
        send("t", payload)
        take()
loop()
""",
    ),
    # the baseline of W1, for scale: what the stdlib's cheapest queue costs per message
    "sq": (
        "queue.SimpleQueue put(p) + get()",
        """
import queue, sys
n = int(sys.argv[1])
q = queue.SimpleQueue()
def loop(put=q.put, get=q.get, payload=b"x" * 64):
    for _ in range(n):
        put(payload)
        get()
loop()
""",
    ),
}


def instructions(program: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                program,
                str(count),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if run.returncode:
            raise RuntimeError(f"the loop failed under valgrind:\n{run.stderr[-2000:]}")
        with open(out) as f:
            summary = re.search(r"^summary:\s+(\d+)", f.read(), re.MULTILINE)
        if summary is None:
            raise RuntimeError("callgrind wrote no summary line")
        return int(summary.group(1))


def main(names: list[str]) -> None:
    for name in names or list(LOOPS):
        label, program = LOOPS[name]
        per_message = (instructions(program, LARGE) - instructions(program, SMALL)) / (
            LARGE - SMALL
        )
        print(f"{name:4} {per_message:10,.0f} instructions/message  {label}")


if __name__ == "__main__":
    main(sys.argv[1:])
