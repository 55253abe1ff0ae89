"""A KINCIR_DEBUG=1 build counts the engine's live objects; after a workload that touches every
feature, and once everything is dropped, every count is back to zero.

The debug build (no optimisation, assertions on) is compiled from a copy of this checkout's build
sources (setup.py, pyproject.toml and the engine's .pyx/.pxi/.pxd/.h/.py files, never its generated
.c files) in pytest's temporary directory, so the checkout is never written: the coverage job
keeps its line-traced kincir_core/*.c there. The test needs Cython and a C compiler (the ``test``
extra installs Cython); it runs the workload in a child process against that build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = r"""
import asyncio, gc, json, time
import kincir_core._broker as engine
assert engine._live_objects() is not None, "not a debug build"
import kincir
from kincir.memory import (InMemoryAckSubscriber, InMemoryBroker, InMemoryConfig,
                           InMemoryPublisher, InMemorySubscriber)

def workload():
    broker = InMemoryBroker(InMemoryConfig(max_queue_size=50, overflow="block",
                                           default_message_ttl=30, enable_stats=True))
    pub = InMemoryPublisher(broker)
    plain = InMemorySubscriber(broker); plain.subscribe("t")
    group = [InMemorySubscriber(broker, group="g") for _ in range(2)]
    for m in group: m.subscribe("t")
    acker = InMemoryAckSubscriber(broker, group="a", max_deliveries=2, dead_letter_topic="dlq")
    acker.subscribe("t")
    pattern = InMemorySubscriber(broker); pattern.subscribe("p.*")
    for i in range(200):
        pub.publish_sync("t", [str(i).encode()], timeout=5)
        plain.try_receive(); group[i % 2].try_receive()
        while (got := acker.try_receive_with_ack()) is not None:
            if got[1].sequence % 3 == 0 and not got[1].is_retry: acker.nack(got[1])
            else: acker.ack(got[1])
    pub.publish_nowait("p.x", [b"1", b"2"])
    pattern.receive_batch_sync(10, timeout=1)
    router = kincir.Router(broker, "t", "out", lambda m: m, concurrency=2).start()
    pub.publish_nowait("t", [b"r"] * 10)
    time.sleep(0.2); router.stop(5)
    async def aio():
        sub = InMemorySubscriber(broker); sub.subscribe("aio")
        task = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0)
        await pub.publish("aio", [b"1"])
        await task
        try:
            await asyncio.wait_for(sub.receive(), 0.01)
        except TimeoutError:
            pass
    asyncio.run(aio())
    broker.configure_topic("b", max_queue_size=1)
    pub.publish_nowait("b", [b"1"])
    broker.delete_group("t", "g")
    broker.shutdown(timeout=1)
    broker.force_shutdown()

workload()
for _ in range(3):
    gc.collect()
print(json.dumps({"engine": engine.__file__, "live": engine._live_objects()}))
"""


# What the build reads, copied from the checkout: the build scripts and the README that
# pyproject.toml names, and the engine's sources (not the generated .c, nor a built .so).
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md")
ENGINE_SOURCES = ("*.pyx", "*.pxi", "*.pxd", "*.h", "*.py", "*.pyi", "py.typed")


def copy_build_sources(dest: Path) -> None:
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, dest / name)
    (dest / "kincir_core").mkdir()
    for pattern in ENGINE_SOURCES:
        for source in (ROOT / "kincir_core").glob(pattern):
            shutil.copy2(source, dest / "kincir_core" / source.name)


def run_ok(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``args``; fail the test with their output unless they exit 0."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.skipif(
    os.name == "nt" or (shutil.which("cc") is None and shutil.which("gcc") is None),
    reason="needs a C compiler",
)
def test_debug_build_leaves_no_live_engine_objects(tmp_path: Path) -> None:
    pytest.importorskip("Cython")
    if not all((ROOT / name).exists() for name in BUILD_FILES):
        pytest.skip("the sources are not next to the tests")
    tree = tmp_path / "tree"
    tree.mkdir()
    copy_build_sources(tree)
    env = dict(os.environ, KINCIR_DEBUG="1", PYTHONDONTWRITEBYTECODE="1")
    for name in ("KINCIR_NO_EXTENSIONS", "KINCIR_TRACE"):
        env.pop(name, None)
    build = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
    run_ok([*build, "--build-temp", str(tmp_path / "temp")], tree, env, timeout=600)
    # kincir from the checkout's src/, its engine from the debug build
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(ROOT / "src")])
    out = run_ok([sys.executable, "-c", WORKLOAD], tmp_path, env, timeout=300)
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["engine"]).resolve().is_relative_to(tree.resolve()), result["engine"]
    live = result["live"]
    assert live, "the debug build counts no objects"
    assert live == dict.fromkeys(live, 0), live
