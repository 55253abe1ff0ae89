"""``kincir bench --backend``: the B1-B4 workloads, in memory and on a backend, side by side.

Smoke tests, never timing tests: ``--quick --scale 0.1`` moves a few hundred messages per
repetition. The Redis test runs against ``KINCIR_REDIS_URL`` (default redis://127.0.0.1:6379/0,
as ``kincir bench`` itself); an unreachable server skips it, unless ``KINCIR_REQUIRE_BACKENDS=1``
(then it fails). A stand-in ``kincir.kafka`` built on the in-memory broker checks, with no server,
that backends are found by name and that every repetition closes and deletes what it made.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from test_bench_cli import bench_ok, table_rows

import kincir
from kincir import _backends, bench
from kincir.__main__ import main
from kincir.bench import backends as bench_backends
from kincir.memory import (
    InMemoryAckSubscriber,
    InMemoryBroker,
    InMemoryPublisher,
    InMemorySubscriber,
)

ROWS = ["B1", "B2", "B3", "B4"]
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?[kM]? ")
TINY = ["--quick", "--repeat", "1", "--scale", "0.1"]
SRC = Path(__file__).resolve().parents[1] / "src"


def _check_output(out: str, backend: str) -> None:
    rows = table_rows(out)
    assert list(rows) == ROWS, out
    for row_id, line in rows.items():
        numbers = [float(m.group().replace(",", "").rstrip("kM ")) for m in NUMBER.finditer(line)]
        assert len(numbers) >= 2 and all(x > 0 for x in numbers[:2]), f"{row_id}: {line}"
        assert f"kincir {backend} " in line, line
        ratio = re.search(r"\s(\d[\d,]*(\.\d+)?)x\s", line)
        assert ratio and float(ratio.group(1).replace(",", "")) > 0, f"{row_id}: {line}"
    assert f"memory/{backend}" in rows["B1"] and f"{backend}/memory" in rows["B4"]
    assert "goals met: 0 of 0; 4 workloads" in out


def _check_json(path: Path, backend: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert data["settings"]["only"] == ROWS
    assert [w["id"] for w in data["workloads"]] == ROWS
    for workload in data["workloads"]:
        assert workload["error"] is None, workload
        [row] = workload["rows"]
        assert row["id"] == workload["id"]
        assert row["met"] is None and row["goal"] is None
        assert isinstance(row["ratio"], float) and math.isfinite(row["ratio"]) and row["ratio"] > 0
        labels = [m["label"] for m in row["measurements"]]
        assert labels == ["kincir memory", f"kincir {backend}"]
        for measurement in row["measurements"]:
            assert math.isfinite(measurement["median"]) and measurement["median"] > 0
            assert len(measurement["values"]) == 1
        latency = row["id"] == "B4"
        units = {m["unit"] for m in row["measurements"]}
        assert units == ({"us"} if latency else {"deliveries/s" if row["id"] == "B2" else "msg/s"})
        assert row["ratio_definition"] == (f"{backend}/memory" if latency else f"memory/{backend}")
    return data


# -- against a Redis server -----------------------------------------------------------------------


def _redis_url() -> str:
    """The server to use, or skip (fail with KINCIR_REQUIRE_BACKENDS=1) if it does not answer."""
    url = _backends.REDIS.url()
    try:
        asyncio.run(bench_backends.load_backend("redis", url).check())
    except (bench_backends.BackendUnavailable, kincir.KincirError) as exc:
        why = f"no redis for kincir bench --backend: {exc}"
        if os.environ.get("KINCIR_REQUIRE_BACKENDS", "") not in ("", "0"):
            pytest.fail(f"KINCIR_REQUIRE_BACKENDS is set but {why}", pytrace=False)
        pytest.skip(why)
    return url


async def _redis_keys(url: str, pattern: str) -> list[bytes]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return [key async for key in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()


def test_redis_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _redis_url()
    path = tmp_path / "backends.json"
    out, err = bench_ok(capsys, "--backend", "redis", "--url", url, *TINY, "--json", str(path))
    _check_output(out, "redis")
    assert "B3 ack group of 2 members: repetition 1/1, kincir redis" in err  # progress
    data = _check_json(path, "redis")
    notes = data["workloads"][0]["notes"]
    assert notes[0].startswith(f"kincir redis: {url} (key prefix kincir-bench-"), notes
    prefix = re.search(r"key prefix (kincir-bench-[0-9a-f]+:)", notes[0])
    assert prefix, notes
    # every repetition deleted its streams: nothing of this run is left on the server
    assert asyncio.run(_redis_keys(url, prefix.group(1) + "*")) == []


def test_unreachable_server_is_one_line_and_exit_2() -> None:
    pytest.importorskip("redis")
    url = "redis://127.0.0.1:1/0"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "kincir", "bench", "--backend", "redis", "--url", url, *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    expected = str(kincir.ConnectionFailed("redis", url))  # "redis at URL is unreachable"
    assert lines[0].startswith(f"kincir bench: error: {expected}: "), lines[0]


# -- the options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "redis://127.0.0.1:6379/0"], "--url needs --backend"),
        (["--backend", "redis", "--only", "W1"], "--backend runs B1-B4"),
        (["--backend", "nats"], "invalid choice"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_backend_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kincir.kafka", None)  # import kincir.kafka -> ImportError
    assert main(["bench", "--backend", "kafka", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kincir bench: error: --backend kafka: ") and "kincir.kafka" in err
    assert len(err.splitlines()) == 1


def test_default_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("redis", "rabbitmq", "kafka"):
        monkeypatch.delenv(_backends.get(name).url_env, raising=False)
    assert _backends.get("redis").url() == "redis://127.0.0.1:6379/0"
    assert _backends.get("rabbitmq").url() == "amqp://guest:guest@127.0.0.1:5672/"
    assert _backends.get("kafka").url() == "127.0.0.1:9092"
    monkeypatch.setenv("KINCIR_KAFKA_URL", "broker.example:9093")
    assert _backends.get("kafka").url() == "broker.example:9093"


def test_sizes() -> None:
    full, quick = bench.Sizes(), bench.Sizes.quick()
    assert (full.b1_messages, full.b3_messages, full.b4_trips) == (20_000, 5_000, 500)
    assert quick.b1_messages == full.b1_messages // 10
    assert quick.b2_messages == full.b2_messages // 10
    assert quick.b3_messages == full.b3_messages // 10
    assert quick.b4_trips == full.b4_trips // 10


# -- a stand-in backend, found by name ------------------------------------------------------------


class _Log:
    def __init__(self) -> None:
        self.brokers: list[FakeBroker] = []
        self.subscribers: list[Any] = []
        self.deleted_topics: list[str] = []
        self.deleted_groups: list[tuple[str, str]] = []


LOG = _Log()


class FakeBroker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.inner = InMemoryBroker()
        self.connected = False
        self.closed = False
        LOG.brokers.append(self)

    async def connect(self) -> None:
        if self.url == "refuse":
            raise kincir.ConnectionFailed("kafka", self.url, "refused")
        self.connected = True

    async def shutdown(self) -> None:
        self.closed = True
        self.inner.force_shutdown()

    def is_shutdown(self) -> bool:
        return self.closed

    async def delete_topic(self, topic: str) -> None:
        LOG.deleted_topics.append(topic)

    def delete_group(self, topic: str, group: str) -> None:  # not a coroutine: also allowed
        LOG.deleted_groups.append((topic, group))


class FakePublisher:
    def __init__(self, broker: FakeBroker) -> None:
        self.inner = InMemoryPublisher(broker.inner)

    async def publish(self, topic: str, messages: list[Any]) -> None:
        await self.inner.publish(topic, messages)

    async def send(self, topic: str, payload: Any) -> None:
        await self.inner.send(topic, payload)


class FakeSubscriber:
    inner_type: Any = InMemorySubscriber

    def __init__(self, broker: FakeBroker, group: str | None = None) -> None:
        self.inner = self.inner_type(broker.inner, group)
        self.closed = False
        LOG.subscribers.append(self)

    async def subscribe(self, topic: str) -> None:
        await self.inner.subscribe(topic)

    def __getattr__(self, name: str) -> Any:  # receive, receive_batch, receive_with_ack, ack
        return getattr(self.inner, name)

    async def close(self) -> None:
        self.closed = True


class FakeAckSubscriber(FakeSubscriber):
    inner_type = InMemoryAckSubscriber


def _fake_kafka() -> types.ModuleType:
    module = types.ModuleType("kincir.kafka")
    module.KafkaBroker = FakeBroker  # type: ignore[attr-defined]
    module.KafkaPublisher = FakePublisher  # type: ignore[attr-defined]
    module.KafkaSubscriber = FakeSubscriber  # type: ignore[attr-defined]
    module.KafkaAckSubscriber = FakeAckSubscriber  # type: ignore[attr-defined]
    return module


def test_a_backend_found_by_name_runs_and_is_cleaned_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kincir.kafka", _fake_kafka())
    monkeypatch.setattr(__name__ + ".LOG", _Log())
    monkeypatch.setenv("KINCIR_KAFKA_URL", "kafka.test:9092")
    path = tmp_path / "kafka.json"
    out, _ = bench_ok(capsys, "--backend", "kafka", *TINY, "--repeat", "2", "--json", str(path))
    _check_output(out, "kafka")
    assert "\nkincir kafka: kafka.test:9092\n" in out
    assert "\nratio: memory/kafka for throughput, kafka/memory for latency (B4)" in out
    data = json.loads(path.read_text(encoding="utf-8"))
    assert all(
        len(m["values"]) == 2 for w in data["workloads"] for m in w["rows"][0]["measurements"]
    )
    # the connection check, then per workload a warm-up and 2 repetitions, each its own broker
    assert len(LOG.brokers) == 1 + 4 * 3
    assert all(b.url == "kafka.test:9092" and b.closed for b in LOG.brokers)
    assert LOG.subscribers and all(s.closed for s in LOG.subscribers)
    # per repetition: B1 1 topic, B2 1, B3 1 (and its group), B4 2; names never reused
    topics = LOG.deleted_topics
    assert len(topics) == 3 * (1 + 1 + 1 + 2) and len(set(topics)) == len(topics)
    run_id = topics[0].split(".")[1]
    assert all(t.startswith(f"kincir-bench.{run_id}.") for t in topics)
    assert len(LOG.deleted_groups) == 3 and {t for t, _ in LOG.deleted_groups} <= set(topics)


def test_a_refused_connection_stops_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kincir.kafka", _fake_kafka())
    assert main(["bench", "--backend", "kafka", "--url", "refuse", *TINY]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "kincir bench: error: kafka at refuse is unreachable: refused\n"


def test_a_backend_without_a_class(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _fake_kafka()
    del module.KafkaAckSubscriber  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kincir.kafka", module)
    assert main(["bench", "--backend", "kafka", *TINY]) == 2
    assert "kincir.kafka has no KafkaAckSubscriber" in capsys.readouterr().err


def test_printed_urls_hide_passwords() -> None:
    redact = bench_backends._redact
    assert redact("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert redact("redis://:secret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("127.0.0.1:9092") == "127.0.0.1:9092"
    assert redact("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"
