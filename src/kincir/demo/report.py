"""The demo's report: what ran, how fast, the checks, health and statistics."""

from __future__ import annotations

from collections.abc import Sequence

import kincir

from .pipeline import MAX_DELIVERIES, DemoReport
from .settings import TOPICS

__all__ = ["format_report", "summary_line"]


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "n/a"


def _table(title: str, rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in rows)
    return [title, *(f"  {key:<{width}}  {value}" for key, value in rows)]


def summary_line(report: DemoReport) -> str:
    """One line: verdict, engine, counts, time and rate."""
    verdict = "OK" if report.ok else "FAILED"
    return (
        f"kincir demo [{report.engine}]: {verdict} - {report.published:,} orders through 4 "
        f"stages, {report.shipped.received:,} shipped, {len(report.dead_letters)} "
        f"dead-lettered in {report.elapsed:.2f} s "
        f"({_rate(report.published, report.elapsed)} orders/s end to end)"
    )


def format_report(report: DemoReport) -> str:
    """The full report: pipeline, throughput, checks, health, stats, then the summary line."""
    s = report.settings
    plan = s.plan()
    share = f"{plan[0]:,}" if len(set(plan)) == 1 else f"{plan[-1]:,}-{plan[0]:,}"
    lines = [
        f"kincir {kincir.__version__} demo - engine: {report.engine}",
        f"pipeline: {s.producers} producer threads x {share} order dicts "
        f"(publish_sync, batches of {s.batch})",
        f"  -> {TOPICS.orders!r} (max_queue_size={s.queue_size:,}, overflow=block)",
        "       -> auditor: thread, receive_batch_sync(), checks order and sequences",
        f"       -> Router stage 'pricing': {s.workers} workers, handler price()",
        f"  -> {TOPICS.priced!r}",
        f"       -> ack stage: asyncio task, receive_with_ack(), max_deliveries={MAX_DELIVERIES},"
        f" dead_letter_topic={TOPICS.dead!r}",
        f"  -> {TOPICS.shipped!r} -> sink: thread, for msg in sub",
        f"  -> {TOPICS.dead!r} -> dead-letter reader",
        "end of stream: close_topic('orders') after the producers; each stage closes its output "
        "when its input ends",
        "",
    ]
    r = report.router
    lines += _table(
        "throughput",
        [
            (
                "published",
                f"{report.published:,} orders in {report.publish_seconds:.3f} s "
                f"({_rate(report.published, report.publish_seconds)}/s)",
            ),
            (
                "backpressure",
                f"producers spent {report.blocked_seconds:.3f} s in publish_sync waiting for room",
            ),
            (
                "auditor",
                f"{report.audit.received:,} orders in {report.audit.batches:,} batches, "
                f"caught up at {report.audit.last_message_at:.3f} s",
            ),
            (
                "Router stage",
                f"{r.processed:,} processed, {r.published:,} published, {r.failed:,} failed",
            ),
            (
                "ack stage",
                f"{report.ack_stage.received:,} received, {report.ack_stage.acked:,} acked, "
                f"{report.ack_stage.nacked} nacked (its own stats())",
            ),
            (
                "sink",
                f"{report.shipped.received:,} shipped orders, ended at "
                f"{report.shipped.last_message_at:.3f} s",
            ),
            (
                "wall time",
                f"{report.elapsed:.3f} s until the end reached every stage "
                f"({_rate(report.published, report.elapsed)} orders/s end to end)",
            ),
        ],
    )
    lines.append("")
    lines.append("checks")
    lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks]
    lines += [f"  [FAIL] {error}" for error in report.errors]
    for stream in (report.audit, report.shipped):
        lines += [f"         {stream.label}: {problem}" for problem in stream.problems()]
    lines.append("")
    h = report.health
    lines += _table(
        "health_check()  (at the end of the stream, before shutdown)",
        [
            ("is_healthy", f"{h.is_healthy}"),
            ("topic_count", f"{h.topic_count:,}"),
            ("total_queued_messages", f"{h.total_queued_messages:,}"),
            ("total_subscribers", f"{h.total_subscribers:,}"),
            ("uptime", f"{h.uptime:.3f} s"),
            (
                "memory_usage_estimate",
                f"{h.memory_usage_estimate:,} bytes ({h.memory_usage_mb():.3f} MiB)",
            ),
        ],
    )
    lines.append("")
    st = report.stats
    if st is None:
        lines.append("stats()  None (stats disabled)")
    else:
        lines += _table(
            "stats()",
            [
                ("messages_published", f"{st.messages_published():,}"),
                ("messages_consumed", f"{st.messages_consumed():,}"),
                ("messages_dropped", f"{st.messages_dropped():,}"),
                ("messages_expired", f"{st.messages_expired():,}"),
                ("messages_lagged", f"{st.messages_lagged():,}"),
                ("messages_redelivered", f"{st.messages_redelivered():,}"),
                ("messages_dead_lettered", f"{st.messages_dead_lettered():,}"),
                ("queue_full_errors", f"{st.queue_full_errors():,}"),
                ("uptime", f"{st.uptime():.3f} s"),
            ],
        )
    if report.topics:
        lines.append("")
        lines += _table(
            "list_topic_info()",
            [
                (
                    t.name,
                    f"published {t.total_published:,}, consumed {t.total_consumed:,}, "
                    f"queued {t.queue_size:,}",
                )
                for t in report.topics
            ],
        )
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)
