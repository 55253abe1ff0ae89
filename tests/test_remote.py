"""The shared layer of the server backends (kincir._remote), without a server."""

from __future__ import annotations

import asyncio
import pickle

import pytest

import kincir
from kincir import _remote


class FakeBroker(_remote.RemoteBroker):
    backend = "fake"

    async def _connect(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    async def _probe(self) -> None:
        pass

    async def _publish(self, topic: str, messages: list[kincir.Message]) -> None:
        pass

    async def _close_topic(self, topic: str) -> None:
        pass

    async def _join(self, topic: str) -> None:
        pass


async def forever() -> None:
    await asyncio.Event().wait()


async def fail(exc: Exception) -> None:
    raise exc


def test_a_call_the_server_never_answers_ends_with_connection_failed() -> None:
    async def body() -> None:
        broker = FakeBroker("fake://x", operation_timeout=0.05)
        with pytest.raises(kincir.ConnectionFailed, match=r"no answer in 0\.05 s"):
            await _remote.guarded(broker, forever())

    asyncio.run(body())


def test_the_callers_own_timeout_stays_a_timeout_error() -> None:
    async def body() -> None:
        broker = FakeBroker("fake://x", operation_timeout=5)
        with pytest.raises(TimeoutError) as info:
            await _remote.guarded(broker, asyncio.wait_for(forever(), 0.01))
        assert not isinstance(info.value, kincir.KincirError)

    asyncio.run(body())


def test_client_errors_are_translated() -> None:
    async def body() -> None:
        broker = FakeBroker("fake://x")
        with pytest.raises(kincir.ConnectionFailed) as refused:
            await _remote.guarded(broker, fail(ConnectionRefusedError("refused")))
        assert refused.value.backend == "fake" and refused.value.address == "fake://x"
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
        with pytest.raises(kincir.BackendError, match="fake: WRONGTYPE"):
            await _remote.guarded(broker, fail(RuntimeError("WRONGTYPE")))
        await broker.connect()
        await broker.shutdown()
        with pytest.raises(kincir.BrokerShutdown):
            await _remote.guarded(broker, fail(RuntimeError("closed under us")))
        with pytest.raises(kincir.BrokerShutdown):
            await broker.connect()

    asyncio.run(body())


@pytest.mark.parametrize(
    "error",
    [
        kincir.ConnectionFailed("redis", "redis://h:1/0", "refused"),
        kincir.BackendError("kafka", "x"),
        kincir.Unsupported("kafka", "close topic 't' (end of stream)", "no atomic end"),
    ],
)
def test_errors_pickle_with_their_fields(error: kincir.KincirError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert again.backend == error.backend  # type: ignore[attr-defined]


def test_unsupported_says_what_and_why() -> None:
    error = kincir.Unsupported("rabbitmq", "join topic 't'", "a queue cannot tell")
    assert isinstance(error, kincir.BackendError)
    assert (error.backend, error.operation, error.reason) == (
        "rabbitmq",
        "join topic 't'",
        "a queue cannot tell",
    )
    assert str(error) == "rabbitmq: cannot join topic 't': a queue cannot tell"


def test_topic_closed_is_raised_with_its_fields_by_every_backend() -> None:
    error = kincir.TopicClosed("jobs", reading=True)
    again = pickle.loads(pickle.dumps(error))
    assert (again.topic, again.reading) == ("jobs", True) and str(again) == str(error)
    assert not kincir.TopicClosed("jobs").reading


@pytest.mark.parametrize(
    ("options", "exc"),
    [
        ({"operation_timeout": 0}, ValueError),
        ({"reconnect_timeout": -1}, ValueError),
        ({"operation_timeout": "1"}, TypeError),
        ({"reconnect_timeout": None}, ValueError),
    ],
)
def test_bad_timeouts_are_refused(options: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        FakeBroker("fake://x", **options)  # type: ignore[arg-type]


def test_a_url_builds_a_private_broker_and_anything_else_is_refused() -> None:
    broker, owned = _remote.resolve_broker(FakeBroker, "fake://x")
    assert isinstance(broker, FakeBroker) and owned
    same, owned = _remote.resolve_broker(FakeBroker, broker)
    assert same is broker and not owned
    with pytest.raises(TypeError, match="FakeBroker or a URL"):
        _remote.resolve_broker(FakeBroker, 42)
    with pytest.raises(TypeError):
        FakeBroker("")


def test_the_envelope_round_trips_uuid_metadata_and_stamps() -> None:
    sent = kincir.Message(b"p", {"k": "v"})
    payload, headers = _remote.encode_message(sent)
    got = _remote.decode_message(payload, headers, "t", 7)
    assert (got.payload, got.uuid, got.topic, got.sequence) == (b"p", sent.uuid, "t", 7)
    assert got.metadata["k"] == "v" and got.metadata["_sequence"] == "7"
    # a delivered message published again gets fresh stamps, not its old ones
    _, again = _remote.encode_message(got)
    assert "_sequence" not in again and "_enqueued_at" not in again
    # a foreign record (no kincir envelope) still decodes, with a fresh uuid
    foreign = _remote.decode_message(b"x", {"kincir-uuid": "not-a-uuid"}, "t", None)
    assert foreign.payload == b"x" and len(foreign.uuid) == 36


# -- own statistics -----------------------------------------------------------------------------


class QueueBroker(FakeBroker):
    """A fake server: one in-process queue per topic; ``refuse`` makes publishes fail."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queues: dict[str, list[_remote.Delivered]] = {}
        self.refuse = False

    async def _publish(self, topic: str, messages: list[kincir.Message]) -> None:
        if self.refuse:
            raise OSError("the server refused the batch")
        queue = self.queues.setdefault(topic, [])
        for m in messages:
            payload, headers = _remote.encode_message(m)
            queue.append(_remote.Delivered(_remote.decode_message(payload, headers, topic, None)))


class QueuePublisher(_remote.RemotePublisher[QueueBroker]):
    broker_type = QueueBroker


class QueueSubscriber(_remote.RemoteSubscriber[QueueBroker, bytes]):
    broker_type = QueueBroker

    async def _subscribe(self, topic: str) -> None:
        pass

    async def _unsubscribe(self, topic: str) -> None:
        pass

    async def _fetch(self, wait: float) -> list[_remote.Delivered]:
        fetched: list[_remote.Delivered] = []
        for topic in self._topics:
            queue = self.broker.queues.setdefault(topic, [])
            fetched += queue[: self.prefetch - len(fetched)]
            del queue[: len(fetched)]
        if not fetched:
            await asyncio.sleep(min(wait, 0.01))
        return fetched


class QueueAckSubscriber(_remote.RemoteAckSubscriber[QueueBroker, bytes], QueueSubscriber):
    broker_type = QueueBroker

    async def _requeue(self, delivered: list[_remote.Delivered]) -> None:
        for d in delivered:
            queue = self.broker.queues.setdefault(d.message.topic or "", [])
            queue.insert(0, _remote.Delivered(d.message, count=d.count + 1))


def test_remote_publishers_and_subscribers_keep_their_own_counts() -> None:
    async def body() -> None:
        broker = QueueBroker("fake://x")
        publisher = QueuePublisher(broker)
        subscriber = QueueSubscriber(broker)
        await subscriber.subscribe("t")
        await publisher.publish("t", [b"1", b"2", b"3"])
        broker.refuse = True
        with pytest.raises(kincir.ConnectionFailed):
            await publisher.publish("t", [b"4", b"5"])
        assert publisher.stats() == kincir.PublisherStats(published=3, refused=2)
        assert isinstance(publisher, kincir.Publisher)
        assert (await subscriber.receive(timeout=1)).payload == b"1"
        assert len(await subscriber.receive_batch(5, timeout=1)) == 2
        assert subscriber.stats() == kincir.SubscriberStats(received=3)
        assert isinstance(subscriber, kincir.Subscriber)

    asyncio.run(body())


def test_remote_ack_subscribers_count_their_settles() -> None:
    async def body() -> None:
        broker = QueueBroker("fake://x")
        subscriber = QueueAckSubscriber(broker, max_deliveries=2, dead_letter_topic="dead")
        await subscriber.subscribe("t")
        await QueuePublisher(broker).publish("t", [b"%d" % i for i in range(4)])
        _, first = await subscriber.receive_with_ack(timeout=1)
        await subscriber.nack(first)
        _, again = await subscriber.receive_with_ack(timeout=1)
        assert again.delivery_count == 2
        await subscriber.nack(again)  # past max_deliveries: dead-lettered
        _, second = await subscriber.receive_with_ack(timeout=1)
        await subscriber.ack(second)
        _, third = await subscriber.receive_with_ack(timeout=1)
        await subscriber.nack(third, requeue=False)
        await subscriber.receive(timeout=1)  # a plain receive acks what it hands out
        assert len(broker.queues["dead"]) == 2
        assert subscriber.stats() == kincir.SubscriberStats(
            received=5, acked=2, nacked=3, redelivered=1, dead_lettered=2
        )

    asyncio.run(body())
