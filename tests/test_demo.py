"""``kincir demo``: the pipeline's own checks catch what they claim to, and a run passes them."""

from __future__ import annotations

import pytest

from kincir import Message
from kincir.demo import AuditCheck, DemoSettings, ShippedCheck, format_report, run_demo


def _delivered(topic: str, sequence: int, payload: object) -> Message:
    """A message as a subscriber receives it (sequence, topic and _sequence metadata set)."""
    from kincir.memory import InMemoryBroker, InMemoryConfig, InMemoryPublisher, InMemorySubscriber

    broker = InMemoryBroker(InMemoryConfig(maintain_order=True))
    sub = InMemorySubscriber(broker)
    sub.subscribe(topic)
    if sequence > 1:
        InMemoryPublisher(broker).publish_nowait(topic, [None] * (sequence - 1))
        sub.try_receive_batch(sequence)
    InMemoryPublisher(broker).publish_nowait(topic, [payload])
    return sub.try_receive()


def _verdicts(check, total):
    return {c.name.split(": ", 1)[1]: c.ok for c in check.checks(total)}


def test_the_audit_passes_a_clean_stream_and_catches_gaps_order_and_payloads():
    clean = AuditCheck("a", "orders", [2])
    clean.feed([_delivered("orders", 1, {"producer": 0, "index": 0})])
    clean.feed([_delivered("orders", 2, {"producer": 0, "index": 1})])
    assert all(_verdicts(clean, 2).values())

    gap = AuditCheck("a", "orders", [2])
    gap.feed([_delivered("orders", 1, {"producer": 0, "index": 0})])
    gap.feed([_delivered("orders", 3, {"producer": 0, "index": 1})])
    assert _verdicts(gap, 2)["every message, sequences gapless"] is False
    assert gap.problems() == ["expected sequence 2, got 3"]

    swapped = AuditCheck("a", "orders", [2])
    swapped.feed([_delivered("orders", 1, {"producer": 0, "index": 1})])
    swapped.feed([_delivered("orders", 2, {"producer": 0, "index": 0})])
    assert _verdicts(swapped, 2)["per-producer order"] is False

    junk = AuditCheck("a", "orders", [1])
    junk.feed([_delivered("orders", 1, b"not an order")])
    assert _verdicts(junk, 1)["payloads and metadata"] is False


def _shipped(sequence, producer, index, price=None):
    order = {"producer": producer, "index": index, "qty": 2, "unit_price": 10}
    order["price"] = 20 if price is None else price
    return _delivered("orders.shipped", sequence, order)


def test_the_sink_check_catches_a_lost_repeated_mispriced_or_poisoned_order():
    good = ShippedCheck("s", [3], (0, 1))
    good.feed(_shipped(1, 0, 0))
    good.feed(_shipped(2, 0, 2))
    assert all(_verdicts(good, 3).values())

    lost = ShippedCheck("s", [3], (0, 1))
    lost.feed(_shipped(1, 0, 0))
    assert not _verdicts(lost, 3)["every order but the poisoned one, once"]

    twice = ShippedCheck("s", [3], (0, 1))
    for seq, index in ((1, 0), (2, 2), (3, 2)):
        twice.feed(_shipped(seq, 0, index))
    assert not _verdicts(twice, 3)["every order but the poisoned one, once"]

    poisoned = ShippedCheck("s", [3], (0, 1))
    for seq, index in ((1, 0), (2, 1), (3, 2)):
        poisoned.feed(_shipped(seq, 0, index))
    assert not _verdicts(poisoned, 3)["every order but the poisoned one, once"]

    mispriced = ShippedCheck("s", [3], (0, 1))
    mispriced.feed(_shipped(1, 0, 0, price=7))
    mispriced.feed(_shipped(2, 0, 2))
    assert not _verdicts(mispriced, 3)["priced, sequences gapless"]


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="--workers"):
        DemoSettings(workers=0)
    with pytest.raises(ValueError, match="--batch"):
        DemoSettings(batch=10, queue_size=5)
    assert DemoSettings(messages=3, producers=1).poisoned() == (0, 2)


def test_a_small_run_passes_every_check_and_reports_the_pipeline():
    report = run_demo(
        DemoSettings(messages=3_000, producers=3, batch=50, queue_size=200, workers=3)
    )
    text = format_report(report)
    assert report.ok, text
    assert report.published == 3_000
    assert report.shipped.received == 2_999
    assert len(report.dead_letters) == 1
    assert report.router.processed == 3_000
    assert report.health.is_healthy and report.health.total_queued_messages == 0
    assert report.drained
    assert "[FAIL]" not in text
    assert "end of stream reached every stage" in text
    assert "health_check()  (at the end of the stream, before shutdown)" in text
