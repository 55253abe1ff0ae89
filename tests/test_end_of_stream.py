"""End of stream: ``close_topic`` ends a topic's readers once they drained it, and ``join``
waits until every reader has received and settled what was published."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import pytest


def _ended(k, call):
    with pytest.raises(k.TopicClosed) as info:
        call()
    assert info.value.reading is True
    return info.value


# -- close_topic: what publishers see ------------------------------------------------------------


def test_a_closed_topic_refuses_every_publish_form(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    broker.close_topic("t")
    for call in (
        lambda: pub.publish_nowait("t", [b"x"]),
        lambda: pub.publish_sync("t", [b"x"]),
        lambda: k.run(pub.publish("t", [b"x"])),
    ):
        with pytest.raises(k.TopicClosed) as info:
            call()
        assert info.value.topic == "t" and info.value.reading is False
    assert [m.payload for m in sub] == [b"1"]
    info = broker.topic_info("t")
    assert info.total_published == 1 and info.next_sequence == 2
    assert broker.health_check().is_healthy


def test_topic_closed_is_part_of_the_error_vocabulary(k):
    err = k.modules["kincir.memory"].TopicClosed("t", reading=True)
    assert isinstance(err, k.modules["kincir"].TopicClosed)
    assert isinstance(err, k.InMemoryError) and not isinstance(err, k.BrokerShutdown)
    from kincir.memory import TopicClosed  # the importable copy (k's may be a twin's)

    err = TopicClosed("t", reading=True)
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.topic, again.reading, str(again)) == (
        type(err),
        "t",
        True,
        str(err),
    )


def test_close_is_idempotent_and_needs_an_existing_topic(k):
    broker, pub, _ = k.setup(subscribe="t")
    broker.close_topic("t")
    broker.close_topic("t")
    pub.close_topic("t")
    with pytest.raises(k.TopicNotFound):
        broker.close_topic("nope")
    with pytest.raises(TypeError):
        broker.close_topic(3)


def test_publisher_close_topic_may_be_awaited(k):
    _broker, pub, sub = k.setup(subscribe="t")

    async def main():
        await pub.publish("t", [{"n": 1}])
        await pub.close_topic("t")
        return [m.payload async for m in sub]

    assert k.run(main()) == [{"n": 1}]


def test_a_deleted_closed_topic_starts_afresh(k):
    broker, pub, _sub = k.setup(subscribe="t")
    broker.close_topic("t")
    broker.delete_topic("t")
    pub.publish_nowait("t", [b"new"])
    assert broker.topic_info("t").total_published == 1


# -- close_topic: what readers see ---------------------------------------------------------------


def test_readers_get_everything_then_topic_closed_in_every_receive_form(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1", b"2", b"3"])
    broker.close_topic("t")
    assert sub.receive_sync(timeout=1).payload == b"1"
    assert [m.payload for m in sub.try_receive_batch(10)] == [b"2", b"3"]
    _ended(k, lambda: sub.receive_sync(timeout=1))
    _ended(k, sub.try_receive)
    _ended(k, lambda: sub.try_receive_batch(3))
    _ended(k, lambda: sub.receive_batch_sync(3, timeout=1))
    _ended(k, lambda: k.run(sub.receive()))
    _ended(k, lambda: k.run(sub.receive(timeout=1)))
    _ended(k, lambda: k.run(sub.receive_batch(3)))
    assert list(sub) == []
    assert broker.health_check().is_healthy
    assert not broker.is_shutdown()


def test_iteration_ends_sync_and_async(k):
    broker, pub, sub = k.setup(subscribe="t")
    other = k.subscriber(broker, "t")
    pub.publish_nowait("t", list(range(5)))
    broker.close_topic("t")
    assert [m.payload for m in sub] == [0, 1, 2, 3, 4]

    async def read():
        return [m.payload async for m in other]

    assert k.run(read()) == [0, 1, 2, 3, 4]


def test_a_waiting_receive_wakes_when_the_topic_closes(k):
    broker, _pub, sub = k.setup(subscribe="t")
    outcome = []

    def reader():
        try:
            sub.receive_sync(timeout=10)
        except k.TopicClosed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.05)
    broker.close_topic("t")
    thread.join(5)
    assert not thread.is_alive() and len(outcome) == 1


def test_an_awaiting_receive_wakes_when_the_topic_closes(k):
    broker, _pub, sub = k.setup(subscribe="t")

    async def main():
        task = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0.01)
        broker.close_topic("t")
        with pytest.raises(k.TopicClosed):
            await task

    k.run(main())


def test_a_closed_topic_closed_from_another_thread_wakes_an_event_loop(k):
    broker, _pub, sub = k.setup(subscribe="t")

    async def main():
        threading.Timer(0.05, broker.close_topic, ("t",)).start()
        return [m async for m in sub]

    assert k.run(main()) == []


def test_every_group_member_ends_once_the_group_passed_the_last_message(k):
    broker, pub, _ = k.setup()
    members = k.members(broker, "t", 4)
    got = []
    lock = threading.Lock()

    def work(sub):
        for msg in sub:
            with lock:
                got.append(msg.payload)

    threads = [threading.Thread(target=work, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for i in range(200):
        pub.publish_nowait("t", [i])
    broker.close_topic("t")
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    assert sorted(got) == list(range(200))


def test_group_members_on_an_event_loop_all_end(k):
    broker, pub, _ = k.setup()
    members = k.members(broker, "t", 3)

    async def main():
        async def work(sub):
            return [m.payload async for m in sub]

        tasks = [asyncio.ensure_future(work(m)) for m in members]
        for i in range(50):
            await pub.publish("t", [i])
        broker.close_topic("t")
        return await asyncio.gather(*tasks)

    parts = k.run(main())
    assert sorted(p for part in parts for p in part) == list(range(50))


def test_a_late_subscriber_gets_the_held_messages_then_the_end(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("t", [b"held"])  # held for the first reader (persistence)
    broker.close_topic("t")
    sub = k.subscriber(broker, "t")
    assert [m.payload for m in sub] == [b"held"]


def test_a_subscriber_of_several_topics_ends_when_all_ended(k):
    broker, pub, sub = k.setup(subscribe="a")
    sub.subscribe("b")
    pub.publish_nowait("a", [b"a"])
    broker.close_topic("a")
    assert sub.receive_sync(timeout=1).payload == b"a"
    assert sub.try_receive() is None  # b may still deliver
    pub.publish_nowait("b", [b"b"])
    broker.close_topic("b")
    assert [m.payload for m in sub] == [b"b"]


def test_a_pattern_subscriber_ends_with_the_topics_it_reads(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("logs.a", [b"a"])
    sub = k.InMemorySubscriber(broker)
    sub.subscribe("logs.*")
    pub.publish_nowait("logs.b", [b"b"])  # created after the pattern: joined
    pub.publish_nowait("logs.a", [b"a2"])
    broker.close_topic("logs.a")
    # logs.a held its first message for its first reader: the pattern's
    assert sorted(m.payload for m in iter(sub.try_receive, None)) == [b"a", b"a2", b"b"]
    assert sub.try_receive() is None
    broker.close_topic("logs.b")
    assert list(sub) == []
    # a topic the pattern matches later is read: the subscription goes on
    pub.publish_nowait("logs.c", [b"c"])
    assert sub.receive_sync(timeout=1).payload == b"c"


def test_an_ack_reader_ends_only_once_everything_is_settled(k):
    broker, pub, sub = k.ack_setup(max_deliveries=None)
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1"])
    broker.close_topic("t")
    msg, handle = sub.receive_with_ack_sync(timeout=1)
    assert sub.try_receive_with_ack() is None  # in flight: it may come back
    sub.nack(handle)
    msg, handle = sub.receive_with_ack_sync(timeout=1)
    assert handle.is_retry and msg.payload == b"1"
    outcome = []

    def waiter():
        try:
            sub.receive_with_ack_sync(timeout=10)
        except k.TopicClosed:
            outcome.append("ended")

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive()  # waits while the message is unsettled
    sub.ack(handle)
    thread.join(5)
    assert outcome == ["ended"]
    assert list(sub) == []


def test_ack_group_members_end_when_the_last_unsettled_message_is_acked(k):
    broker, pub, _ = k.ack_setup()
    a = k.ack_subscriber(broker, "t", group="g")
    b = k.ack_subscriber(broker, "t", group="g")
    pub.publish_nowait("t", [b"1"])
    broker.close_topic("t")
    _msg, handle = a.receive_with_ack_sync(timeout=1)

    async def other():
        return await b.receive_with_ack()

    async def main():
        task = asyncio.ensure_future(other())
        await asyncio.sleep(0.05)
        assert not task.done()
        a.ack(handle)
        with pytest.raises(k.TopicClosed):
            await asyncio.wait_for(task, 5)

    k.run(main())


def test_a_closed_dead_letter_topic_takes_dead_letters_and_ends_when_none_can_come(k):
    broker, pub, _ = k.ack_setup()
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq", max_deliveries=1)
    letters = k.subscriber(broker, "dlq")
    pub.publish_nowait("t", [b"poison"])
    broker.close_topic("t")
    broker.close_topic("dlq")
    _msg, handle = sub.receive_with_ack_sync(timeout=1)
    assert letters.try_receive() is None  # a message in flight may still be dead-lettered
    sub.nack(handle)
    assert [m.payload for m in letters] == [b"poison"]
    assert list(sub) == []


def test_close_racing_publishers_loses_nothing(k):
    broker, pub, _ = k.setup()
    readers = [k.subscriber(broker, "t"), *k.members(broker, "t", 3)]
    accepted: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(5)

    def publisher(n):
        start.wait()
        for i in range(10_000):
            try:
                pub.publish_nowait("t", [(n, i)])
            except k.TopicClosed:
                return
            accepted[n].append(i)

    got: list[list[object]] = [[] for _ in readers]

    def reader(j):
        got[j].extend(m.payload for m in readers[j])

    pubs = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    subs = [threading.Thread(target=reader, args=(j,)) for j in range(len(readers))]
    for thread in pubs + subs:
        thread.start()
    start.wait()
    time.sleep(0.01)
    broker.close_topic("t")
    for thread in pubs + subs:
        thread.join(20)
    assert not any(t.is_alive() for t in pubs + subs)
    expected = sorted((n, i) for n in range(4) for i in accepted[n])
    assert sorted(got[0]) == expected  # the plain reader: everything accepted
    assert sorted(got[1] + got[2] + got[3]) == expected  # the group: each once
    assert broker.topic_info("t").total_published == len(expected)


def test_a_publisher_blocked_for_room_wakes_with_topic_closed(k):
    broker, pub, sub = k.setup(max_queue_size=1, overflow="block")
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1"])
    outcome = []

    def blocked():
        try:
            pub.publish_sync("t", [b"2"], timeout=10)
        except k.TopicClosed:
            outcome.append("refused")

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.05)
    broker.close_topic("t")
    thread.join(5)
    assert outcome == ["refused"]
    assert [m.payload for m in sub] == [b"1"]


def test_shutdown_after_close_still_ends_readers(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"1"])
    broker.close_topic("t")
    broker.shutdown()
    assert sub.receive_sync(timeout=1).payload == b"1"
    with pytest.raises(k.BrokerShutdown):
        sub.receive_sync(timeout=1)


# -- join ---------------------------------------------------------------------------------------


def test_join_waits_for_every_reader_to_receive(k):
    broker, pub, sub = k.setup(subscribe="t")
    group = k.members(broker, "t", 2)
    pub.publish_nowait("t", list(range(100)))
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    got = []

    def work(reader):
        for msg in reader:
            got.append(msg.payload)

    threads = [threading.Thread(target=work, args=(r,)) for r in (sub, *group)]
    for thread in threads:
        thread.start()
    broker.join("t", timeout=10)
    assert len(got) == 200
    broker.close_topic("t")
    for thread in threads:
        thread.join(5)


def test_join_waits_for_acks(k):
    broker, pub, sub = k.ack_setup()
    sub.subscribe("t")
    pub.publish_nowait("t", [b"1", b"2"])
    held = [sub.receive_with_ack_sync(timeout=1) for _ in range(2)]
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    sub.ack(held[1][1])
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    threading.Timer(0.05, sub.ack, (held[0][1],)).start()
    broker.join("t", timeout=5)


def test_join_counts_a_dead_lettered_message_as_settled(k):
    broker, pub, _ = k.ack_setup()
    sub = k.ack_subscriber(broker, "t", dead_letter_topic="dlq", max_deliveries=1)
    pub.publish_nowait("t", [b"poison"])
    _, handle = sub.receive_with_ack_sync(timeout=1)
    sub.nack(handle)
    broker.join("t", timeout=1)
    assert broker.topic_info("dlq").queue_size == 1


def test_join_async(k):
    broker, pub, sub = k.setup(subscribe="t")
    got = []

    async def main():
        async def consume():
            async for msg in sub:
                got.append(msg.payload)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(consume())
        for i in range(50):
            await pub.publish("t", [i])
        await broker.join_async("t", timeout=5)
        assert got == list(range(50))
        broker.close_topic("t")
        await task

    k.run(main())


def test_join_async_times_out(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"x"])

    async def main():
        with pytest.raises(TimeoutError):
            await broker.join_async("t", timeout=0.05)

    k.run(main())
    assert sub.try_receive().payload == b"x"
    k.run(broker.join_async("t", timeout=1))


def test_join_with_no_reader_waits_for_the_held_messages(k):
    broker, pub, _ = k.setup()
    pub.publish_nowait("t", [b"held"])
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    sub = k.subscriber(broker, "t")
    assert sub.try_receive().payload == b"held"
    broker.join("t", timeout=1)
    off, opub, _ = k.setup(enable_persistence=False)
    opub.publish_nowait("u", [b"dropped"])
    off.join("u", timeout=1)  # nothing is held: nothing to wait for


def test_join_waits_for_a_durable_group_without_members(k):
    broker, pub, sub = k.setup(subscribe="t")
    member = k.subscriber(broker, "t", group="g")
    member.close()  # the group's cursor stays and holds what comes
    pub.publish_nowait("t", [b"x"])
    assert sub.try_receive().payload == b"x"
    with pytest.raises(TimeoutError):
        broker.join("t", timeout=0.05)
    broker.delete_group("t", "g")
    broker.join("t", timeout=1)


def test_join_ignores_what_is_published_after_it_began(k):
    broker, pub, sub = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"before"])
    done = threading.Event()

    def joiner():
        broker.join("t", timeout=10)
        done.set()

    thread = threading.Thread(target=joiner)
    thread.start()
    time.sleep(0.05)
    pub.publish_nowait("t", [b"after"])
    assert sub.receive_sync(timeout=1).payload == b"before"
    assert done.wait(5)
    thread.join()
    assert sub.try_receive().payload == b"after"


def test_join_returns_when_the_topic_is_deleted_and_raises_on_force_shutdown(k):
    broker, pub, _ = k.setup(subscribe="t")
    pub.publish_nowait("t", [b"x"])
    threading.Timer(0.05, broker.delete_topic, ("t",)).start()
    broker.join("t", timeout=5)
    pub.publish_nowait("u", [b"x"])
    threading.Timer(0.05, broker.force_shutdown).start()
    with pytest.raises(k.BrokerShutdown):
        broker.join("u", timeout=5)


def test_join_rejects_bad_input(k):
    broker, _pub, _ = k.setup(subscribe="t")
    with pytest.raises(k.TopicNotFound):
        broker.join("nope")
    with pytest.raises(ValueError):
        broker.join("t", timeout=-1)
    with pytest.raises(TypeError):
        broker.join("t", timeout="soon")
    with pytest.raises(k.TopicNotFound):
        k.run(broker.join_async("nope"))
    assert broker.health_check().is_healthy


def test_join_from_an_event_loop_warns(k):
    broker, _pub, _ = k.setup(subscribe="t")

    async def main():
        with pytest.warns(RuntimeWarning, match="join_async"):
            broker.join("t", timeout=0.01)

    k.run(main())


def test_join_under_a_ttl_counts_expired_messages_as_settled(k):
    broker, pub, _ = k.setup(default_message_ttl=0.05)
    k.subscriber(broker, "t")  # never reads: its message expires
    pub.publish_nowait("t", [b"x"])
    broker.join("t", timeout=5)


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_readme_end_of_stream_example_runs(run_readme_example, engine):
    assert run_readme_example("**End of stream.**", engine) == "1000 LINE 0\n"
