"""Payloads are Python objects: shared by reference in memory, never copied or serialized.

The sharing rule (README, "Payloads"): every subscriber receives the very object that was
published; ``bytes`` stay bytes; a ``bytearray`` or ``memoryview`` is snapshotted into ``bytes``
once. The log never drops an object payload's last reference while it holds its lock (its
finalizer may call the broker): the child-process cases below hung before that rule.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import pytest


class Order:
    """A payload with no buffer, no __eq__ and a weak reference slot."""

    def __init__(self, number: int) -> None:
        self.number = number


def test_every_subscriber_receives_the_published_object_itself(k):
    broker, pub, sub = k.setup(subscribe="t")
    other = k.subscriber(broker, "t")
    members = k.members(broker, "t")
    ack = k.ack_subscriber(broker, "t")
    order, data = Order(1), {"id": 7, "lines": [1, 2]}
    pub.publish_nowait("t", [order, k.Message(data, {"kind": "dict"})])
    for reader in (sub, other):
        got = k.drain(reader)
        assert [m.payload for m in got] == [order, data]
        assert got[0].payload is order and got[1].payload is data
        assert got[1].metadata["kind"] == "dict"
    by_group = k.drain(members[0]) + k.drain(members[1])
    assert sorted(id(m.payload) for m in by_group) == sorted([id(order), id(data)])
    first = ack.try_receive_with_ack()
    assert first is not None and first[0].payload is order
    ack.ack(first[1])


def test_objects_cross_to_asyncio_by_reference(k):
    _, pub, sub = k.setup(subscribe="t")
    data = {"id": 1}

    async def main():
        await pub.publish("t", [data])
        return await sub.receive()

    assert k.run(main()).payload is data


def test_pattern_subscribers_receive_the_object(k):
    broker, pub, _ = k.setup()
    sub = k.InMemorySubscriber(broker)
    sub.subscribe("orders.*")
    data = ["a", "b"]
    pub.publish_nowait("orders.eu", [data])
    got = sub.receive_sync(timeout=1.0)
    assert got.payload is data


def test_bytes_stay_bytes_and_mutable_buffers_are_snapshotted_on_publish(k):
    _, pub, sub = k.setup(subscribe="t")
    raw, buf = b"abc", bytearray(b"xyz")
    pub.publish_nowait("t", [raw, buf, memoryview(buf)])
    buf[0] = ord("J")  # the caller refills its buffer: published messages keep what was sent
    got = [m.payload for m in k.drain(sub)]
    assert got[0] is raw
    assert got[1:] == [b"xyz", b"xyz"] and all(type(p) is bytes for p in got)


def test_payloads_are_freed_once_every_reader_is_done(k):
    broker, pub, sub = k.setup(subscribe="t")
    other = k.subscriber(broker, "t")
    order = Order(1)
    alive = weakref.ref(order)
    pub.publish_nowait("t", [order])
    del order
    got = sub.try_receive()
    assert got is not None
    del got
    gc.collect()
    assert alive() is not None  # the other reader has not read it yet
    got = other.try_receive()
    del got
    gc.collect()
    assert alive() is None


def test_memory_estimate_counts_an_object_as_a_reference(k):
    """The estimate counts what the broker allocates: slots, its Messages and bytes payloads'
    lengths. An object payload is shared with the publisher, so it adds nothing of its own:
    N dicts weigh what N empty payloads weigh, and bytes add their length."""

    def estimate(payloads):
        broker, pub, _ = k.setup(subscribe="t")
        pub.publish_nowait("t", payloads)
        return broker.health_check().memory_usage_estimate

    empty = estimate([b""] * 100)
    assert estimate([{"id": i, "sku": "A-1"} for i in range(100)]) == empty
    assert estimate([Order(i) for i in range(100)]) == empty
    assert estimate([b"x" * 1000] * 100) == empty + 100 * 1000


# -- Router -----------------------------------------------------------------------------------


def test_router_handlers_receive_and_return_objects(k):
    broker = k.new_broker()
    out = k.subscriber(broker, "out")
    seen = []

    def handler(msg):
        seen.append(msg.payload)
        if msg.payload["kind"] == "split":  # a list: one output per item
            return [{"part": 1}, k.Message({"part": 2}, {"from": "split"})]
        if msg.payload["kind"] == "gen":  # any iterator too
            return (n for n in (3, 4))
        return {"total": msg.payload["qty"] * 2}  # any other object: one output

    router = k.Router(broker, "in", "out", handler)
    router.start()
    try:
        one, split, gen = {"kind": "one", "qty": 3}, {"kind": "split"}, {"kind": "gen"}
        k.InMemoryPublisher(broker).publish_nowait("in", [one, split, gen])
        got = [out.receive_sync(timeout=5.0) for _ in range(5)]
    finally:
        router.stop()
    assert seen[0] is one and seen[1] is split
    assert [m.payload for m in got] == [{"total": 6}, {"part": 1}, {"part": 2}, 3, 4]
    assert got[2].metadata["from"] == "split"


# -- wire fidelity: InMemoryConfig(codec=...) ----------------------------------------------------


def codecs(k):
    return k.modules["kincir.codecs"]


def test_wire_fidelity_sends_every_payload_through_the_codec(k):
    config = k.InMemoryConfig(codec=codecs(k).JsonCodec())
    _, pub, sub = k.setup(config, subscribe="t")
    data = {"id": 1, "pair": (1, 2)}
    message = k.Message({"a": 1}, {"m": "1"})
    pub.publish_nowait("t", [data, message])
    pub.publish_sync("t", [[1, 2]])
    k.run(pub.publish("t", [None]))
    got = k.drain(sub)
    # what a JSON wire delivers: a new object, tuples as lists; uuid and metadata kept
    assert got[0].payload == {"id": 1, "pair": [1, 2]} and got[0].payload is not data
    assert got[1].payload == {"a": 1} and got[1].uuid == message.uuid
    assert got[1].metadata["m"] == "1"
    assert [m.payload for m in got[2:]] == [[1, 2], None]


def test_wire_fidelity_reaches_router_outputs(k):
    broker = k.new_broker(codec=codecs(k).JsonCodec())
    out = k.subscriber(broker, "out")
    router = k.Router(broker, "in", "out", lambda msg: {"seen": msg.payload})
    router.start()
    try:
        k.InMemoryPublisher(broker).publish_nowait("in", [(1, 2)])
        got = out.receive_sync(timeout=5.0)
    finally:
        router.stop()
    assert got.payload == {"seen": [1, 2]}


class Unencodable:
    pass


def test_wire_fidelity_refuses_an_unencodable_batch_whole(k):
    config = k.InMemoryConfig(codec=codecs(k).JsonCodec(), enable_stats=True)
    broker, pub, sub = k.setup(config, subscribe="t")
    batch = [{"ok": 1}, Unencodable()]
    with pytest.raises(k.EncodeError, match="Unencodable") as info:
        pub.publish_nowait("t", batch)
    assert isinstance(info.value, TypeError) and info.value.content_type == "application/json"
    with pytest.raises(k.EncodeError):
        pub.publish_sync("t", batch)

    async def main():
        pending = pub.publish("t", batch)
        with pytest.raises(k.EncodeError):
            await pending

    k.run(main())
    assert sub.try_receive() is None  # nothing of any batch was published
    assert broker.stats().published == 0
    pub.publish_nowait("t", [{"ok": 2}])  # the broker is healthy
    assert sub.try_receive().payload == {"ok": 2}
    assert broker.health_check().is_healthy


def test_wire_fidelity_with_a_typed_codec_refuses_what_would_not_decode(k):
    msgspec = pytest.importorskip("msgspec")

    class Order(msgspec.Struct):
        id: int
        qty: int

    _, pub, sub = k.setup(k.InMemoryConfig(codec=codecs(k).MsgspecCodec(Order)), subscribe="t")
    pub.publish_nowait("t", [Order(1, 2)])
    got = sub.try_receive()
    assert got.payload == Order(1, 2)
    with pytest.raises(k.DecodeError, match="qty"):
        pub.publish_nowait("t", [Order(1, "two")])  # encodes; a subscriber could not decode it
    with pytest.raises(k.EncodeError, match="Order"):
        pub.publish_nowait("t", [{"id": 1, "qty": 2}])  # not the codec's type
    assert sub.try_receive() is None


def test_wire_fidelity_is_off_by_default_and_checked(k):
    assert k.InMemoryConfig().codec is None
    with pytest.raises(TypeError, match="codec"):
        k.InMemoryConfig(codec="json")
    config = k.InMemoryConfig().with_codec(codecs(k).PickleCodec())
    assert config.codec.content_type == "application/x-python-pickle"


# -- finalizers that call the broker ----------------------------------------------------------

REENTRY = """
import gc, sys, time
from kincir.memory import (
    InMemoryAckSubscriber, InMemoryBroker, InMemoryConfig, InMemoryPublisher,
    InMemorySubscriber,
)

ran = []

class Reentrant:
    # dropped by the broker: publishes to and reads from the very topic it left
    def __del__(self):
        pub.publish_nowait("t", [b"from a finalizer"])
        ran.append(reader.try_receive())

def build(**config):
    global broker, pub, reader
    broker = InMemoryBroker(InMemoryConfig(**config))
    pub = InMemoryPublisher(broker)
    reader = InMemorySubscriber(broker)
    reader.subscribe("t")

case = sys.argv[1]
if case == "drop_oldest":
    build(max_queue_size=1, overflow="drop_oldest")
    pub.publish_nowait("t", [Reentrant()])
    pub.publish_nowait("t", [b"pushes it out"])
elif case == "clear_topic":
    build()
    pub.publish_nowait("t", [Reentrant()])
    broker.clear_topic("t")
elif case == "delete_topic":
    build()
    keeper = InMemorySubscriber(broker)
    keeper.subscribe("u")
    reader.unsubscribe("t")
    reader.subscribe("u")
    pub.publish_nowait("u", [b"keep"])
    other = InMemorySubscriber(broker)
    other.subscribe("t")
    pub.publish_nowait("t", [Reentrant()])
    broker.delete_topic("t")
    ran.append("deleted")
elif case == "ttl":
    build(default_message_ttl=0.01)
    pub.publish_nowait("t", [Reentrant()])
    time.sleep(0.05)
    broker.expire_all()
elif case == "unsubscribe":
    build()
    lagging = InMemorySubscriber(broker)
    lagging.subscribe("t")
    pub.publish_nowait("t", [Reentrant()])
    assert reader.try_receive() is not None  # read by one, the other leaves unread
    lagging.unsubscribe("t")
elif case == "ack":
    build()
    acker = InMemoryAckSubscriber(broker)
    acker.subscribe("t")
    pub.publish_nowait("t", [Reentrant()])
    reader.try_receive()
    msg, handle = acker.try_receive_with_ack()
    del msg
    acker.ack(handle)
    del handle
gc.collect()
assert ran, "the finalizer did not run"
pub.publish_nowait("t", [b"after"])  # the broker still works
print("ok", case, len(ran))
"""


@pytest.mark.parametrize(
    "case", ["drop_oldest", "clear_topic", "delete_topic", "ttl", "unsubscribe", "ack"]
)
@pytest.mark.parametrize("engine", ["cython", "python"])
def test_a_payload_finalizer_may_call_the_broker(engine_env, engine, case):
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(REENTRY), case],
            env=engine_env(engine),
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: the broker hung when a payload's finalizer called it")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok {case}"), done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_quick_start_moves_a_dict_by_reference(run_readme_example, engine):
    out = run_readme_example("## Quick start", engine)
    assert out.startswith("{'id': 1234, 'sku': 'A-1', 'qty': 3} 1 {"), out


@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_a_batch_that_changes_size_while_published_is_refused_whole(k, change):
    # bytes() of a bytearray subclass calls its __bytes__: code that runs mid-batch
    batch: list[object] = []

    class Changing(bytearray):
        def __bytes__(self) -> bytes:
            if change == "shrink":
                batch.clear()
            else:
                batch.append(b"more")
            return b"evil"

    broker, pub, sub = k.setup(subscribe="t")
    batch.extend([Changing(b"a"), b"b", b"c"])
    with pytest.raises(RuntimeError, match="changed size"):
        pub.publish_nowait("t", batch)
    assert sub.try_receive() is None
    assert pub.stats() == k.PublisherStats(published=0, refused=0)
    pub.publish_nowait("t", [b"after"])
    assert sub.try_receive().payload == b"after"
    assert broker.health_check().is_healthy
