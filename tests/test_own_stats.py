"""A publisher's and a subscriber's own counts: ``stats()`` returns PublisherStats and
SubscriberStats, whether or not the broker's ``enable_stats`` is on."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

# -- publishers ---------------------------------------------------------------------------------


def test_stats_are_frozen_snapshots(k):
    _, pub, sub = k.setup(subscribe="t")
    stats = pub.stats()
    assert type(stats) is k.PublisherStats
    assert type(sub.stats()) is k.SubscriberStats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.published = 1  # type: ignore[misc]
    assert k.PublisherStats.__module__ == "kincir"
    assert k.SubscriberStats.__module__ == "kincir"
    assert not hasattr(stats, "__dict__")


def test_publisher_counts_the_messages_it_published(k):
    _, pub, _ = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    pub.publish_sync("t", [b"3"])
    k.run(pub.publish("t", [b"4", b"5", b"6"]))
    k.run(pub.publish("t", [b"7"], timeout=1))
    pub.publish_nowait("t", [])
    assert pub.stats() == k.PublisherStats(published=7, refused=0)


def test_counts_are_kept_with_stats_off(k):
    broker, pub, sub = k.setup(subscribe="t")
    assert broker.config.enable_stats is False
    pub.publish_nowait("t", [b"1", b"2"])
    sub.try_receive()
    assert broker.stats() is None
    assert pub.stats().published == 2
    assert sub.stats().received == 1


def test_queue_full_refuses_the_whole_batch(k):
    _, pub, _ = k.setup(subscribe="t", max_queue_size=2, overflow="error")
    pub.publish_nowait("t", [b"1"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"2", b"3"])
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"4", b"5", b"6"])
    assert pub.stats() == k.PublisherStats(published=1, refused=5)


def test_a_block_timeout_refuses(k):
    _, pub, _ = k.setup(subscribe="t", max_queue_size=1, overflow="block")
    pub.publish_nowait("t", [b"1"])
    with pytest.raises(k.QueueFull):
        pub.publish_nowait("t", [b"2"])
    with pytest.raises(k.QueueFull):
        pub.publish_sync("t", [b"3"], timeout=0.01)
    with pytest.raises(k.QueueFull):
        k.run(pub.publish("t", [b"4", b"5"], timeout=0.01))
    assert pub.stats() == k.PublisherStats(published=1, refused=4)


def test_a_blocked_publish_counts_once_it_goes_through(k):
    _, pub, sub = k.setup(subscribe="t", max_queue_size=1, overflow="block")
    pub.publish_nowait("t", [b"1"])
    worker = k.spawn_blocked(pub.publish_sync, "t", [b"2"], 5)
    assert sub.receive_sync(timeout=1).payload == b"1"
    worker.join()
    assert pub.stats() == k.PublisherStats(published=2, refused=0)


def test_shutdown_and_deleted_topics_refuse(k):
    broker = k.new_broker(max_topics=1)
    pub = k.InMemoryPublisher(broker)
    pub.publish_nowait("a", [b"1"])
    with pytest.raises(k.MaxTopicsReached):
        pub.publish_nowait("b", [b"2", b"3"])
    broker.shutdown()
    with pytest.raises(k.BrokerShutdown):
        pub.publish_nowait("a", [b"4"])
    with pytest.raises(k.BrokerShutdown):
        k.run(pub.publish("a", (b"5", b"6")))
    assert pub.stats() == k.PublisherStats(published=1, refused=5)


def test_bad_arguments_are_not_counted(k):
    _, pub, _ = k.setup(subscribe="t")
    with pytest.raises(TypeError):
        pub.publish_nowait("t", b"not a list")  # type: ignore[arg-type]
    with pytest.raises(k.InvalidTopicName):
        pub.publish_nowait("", [b"1"])
    assert pub.stats() == k.PublisherStats()


def test_drops_on_arrival_count_as_published(k):
    # the broker accepted them; the topic's own counters say it dropped them
    broker, pub, _ = k.setup(enable_stats=True, enable_persistence=False)
    pub.publish_nowait("nobody", [b"1", b"2"])
    assert pub.stats() == k.PublisherStats(published=2)
    assert broker.stats().messages_dropped() == 2


def test_two_publishers_keep_separate_counts(k):
    _, first, _ = k.setup(subscribe="t", max_queue_size=3, overflow="error")
    second = type(first)(first.broker)
    first.publish_nowait("t", [b"1", b"2"])
    second.publish_nowait("t", [b"3"])
    with pytest.raises(k.QueueFull):
        second.publish_nowait("t", [b"4"])
    assert first.stats() == k.PublisherStats(published=2)
    assert second.stats() == k.PublisherStats(published=1, refused=1)


def test_codec_publisher_counts_too(k):
    broker = k.new_broker(codec=k.kincir.codecs.JsonCodec())
    pub = k.InMemoryPublisher(broker)
    sub = k.subscriber(broker, "t")
    pub.publish_nowait("t", [{"a": 1}])
    pub.publish_sync("t", [{"a": 2}])
    k.run(pub.publish("t", [{"a": 3}]))
    assert pub.stats().published == 3
    assert len(sub.try_receive_batch(10)) == 3
    assert sub.stats().received == 3


# -- subscribers --------------------------------------------------------------------------------


def test_subscriber_counts_every_receive(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"%d" % i for i in range(12)])
    assert sub.try_receive() is not None
    sub.receive_sync(timeout=1)
    assert len(sub.try_receive_batch(2)) == 2
    assert len(sub.receive_batch_sync(2, timeout=1)) == 2
    k.run(sub.receive())
    k.run(sub.receive(timeout=1))
    assert len(k.run(sub.receive_batch(2))) == 2
    assert sub.stats().received == 10
    assert sub.try_receive_batch(0) == []
    assert sub.try_receive_batch(5)  # the last two
    assert sub.try_receive() is None
    assert sub.stats() == k.SubscriberStats(received=12)


def test_iteration_counts(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.shutdown()
    assert len(list(sub)) == 3
    assert sub.stats().received == 3


def test_async_iteration_counts(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2"])
    broker.shutdown()

    async def collect():
        return [msg async for msg in sub]

    assert len(k.run(collect())) == 2
    assert sub.stats().received == 2


def test_a_waiting_receive_counts(k):
    _, pub, sub = k.setup(subscribe="t")

    async def scenario():
        waiting = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0.01)
        pub.publish_nowait("t", [b"1"])
        return await waiting

    assert k.run(scenario()).payload == b"1"
    worker = k.spawn_blocked(sub.receive_sync, 5)
    pub.publish_nowait("t", [b"2"])
    assert worker.join().payload == b"2"
    assert sub.stats().received == 2


def test_several_topics_count_together(k):
    _, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    pub.publish_nowait("a", [b"1"])
    pub.publish_nowait("b", [b"2", b"3"])
    assert sub.try_receive() is not None
    assert sub.try_receive() is not None
    assert len(sub.try_receive_batch(5)) == 1
    assert sub.stats().received == 3


def test_fan_out_counts_for_each_reader(k):
    broker, pub, sub = k.setup(subscribe="t")
    other = k.subscriber(broker, "t")
    pub.publish_nowait("t", [b"1", b"2"])
    k.drain(sub)
    assert other.try_receive() is not None
    assert sub.stats().received == 2
    assert other.stats().received == 1


def test_group_members_count_separately(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    first, second = k.members(broker, "t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    assert first.try_receive() is not None
    assert len(second.try_receive_batch(5)) == 2
    assert first.stats().received == 1
    assert second.stats().received == 2


def test_lagged_counts_drop_oldest_losses(k):
    _, pub, sub = k.setup(subscribe="t", max_queue_size=2, overflow="drop_oldest")
    pub.publish_nowait("t", [b"1", b"2", b"3", b"4"])
    assert sub.stats().lagged == 2 == sub.messages_lagged()
    assert len(sub.try_receive_batch(5)) == 2
    assert sub.stats() == k.SubscriberStats(received=2, lagged=2)


def test_plain_subscriber_reports_no_acknowledgements(k):
    _, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    sub.try_receive()
    stats = sub.stats()
    assert (stats.acked, stats.nacked, stats.redelivered, stats.dead_lettered) == (0, 0, 0, 0)


# -- acknowledging subscribers ------------------------------------------------------------------


def test_ack_subscriber_counts_acks_nacks_and_redeliveries(k):
    _, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    _, h1 = sub.try_receive_with_ack()
    sub.nack(h1)
    _, again = sub.try_receive_with_ack()
    assert again.delivery_count == 2
    sub.ack(again)
    _, h2 = sub.receive_with_ack_sync(timeout=1)
    _, h3 = k.run(sub.receive_with_ack(timeout=1))
    sub.nack_batch([h2, h3])
    _, h4 = sub.try_receive_with_ack()
    _, h5 = sub.try_receive_with_ack()
    sub.ack_batch([h4, h5])
    assert sub.stats() == k.SubscriberStats(received=6, acked=3, nacked=3, redelivered=3)


def test_ack_subscriber_counts_its_dead_letters(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    sub = k.ack_subscriber(broker, "t", max_deliveries=2, dead_letter_topic="dead")
    letters = k.subscriber(broker, "dead")
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = sub.try_receive_with_ack()
    sub.nack(h1, requeue=False)  # rejected: dead-lettered at once
    _, h2 = sub.try_receive_with_ack()
    sub.nack(h2)
    _, again = sub.try_receive_with_ack()
    sub.nack(again)  # its second delivery: past max_deliveries
    assert len(letters.try_receive_batch(5)) == 2
    assert sub.stats() == k.SubscriberStats(received=3, nacked=3, redelivered=1, dead_lettered=2)


def test_a_rejection_without_dead_letter_topic_is_no_dead_letter(k):
    _, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1"])
    _, handle = sub.try_receive_with_ack()
    sub.nack(handle, requeue=False)
    assert sub.stats() == k.SubscriberStats(received=1, nacked=1)


def test_plain_receives_of_an_ack_subscriber_ack(k):
    _, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"%d" % i for i in range(6)])
    sub.try_receive()
    sub.receive_sync(timeout=1)
    k.run(sub.receive())
    assert len(sub.try_receive_batch(2)) == 2
    assert len(sub.receive_batch_sync(5, timeout=1)) == 1
    assert sub.stats() == k.SubscriberStats(received=6, acked=6)


def test_a_refused_settle_is_not_counted(k):
    _, pub, sub = k.ack_setup()
    pub.publish_nowait("t", [b"1"])
    _, handle = sub.try_receive_with_ack()
    sub.ack(handle)
    with pytest.raises(k.AckError):
        sub.ack(handle)
    with pytest.raises(k.AckError):
        sub.nack_batch([handle])
    assert sub.stats() == k.SubscriberStats(received=1, acked=1)


def test_ack_group_members_count_separately(k):
    broker = k.new_broker()
    pub = k.InMemoryPublisher(broker)
    first, second = k.ack_group(broker)
    pub.publish_nowait("t", [b"1", b"2"])
    _, h1 = first.try_receive_with_ack()
    first.nack(h1)
    _, redelivery = second.try_receive_with_ack()
    assert redelivery.delivery_count == 2
    second.ack(redelivery)
    _, h2 = second.try_receive_with_ack()
    second.ack(h2)
    assert first.stats() == k.SubscriberStats(received=1, nacked=1)
    assert second.stats() == k.SubscriberStats(received=2, acked=2, redelivered=1)


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_the_readme_example_prints_what_it_says(readme_blocks, run_readme_example, engine):
    start = "A publisher's and a subscriber's `stats()`"
    expected = [line[2:] for line in readme_blocks(start)[0].splitlines() if line[:2] == "# "]
    assert run_readme_example(start, engine).splitlines() == expected
