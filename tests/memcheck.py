"""Run a short workload of kincir's compiled engine under valgrind's memcheck.

    python tests/memcheck.py                 # exit 0: no definite leak from the engine
    python tests/memcheck.py --rounds 50     # a longer workload
    python tests/memcheck.py --inject-leak --rounds 0   # self-test: leaks Messages (exit 1)
    python tests/memcheck.py --workload      # the workload alone, without valgrind

Exit status 2: it could not run (valgrind is not installed, or the compiled engine is not built).

The workload (this file run with ``--workload``) goes through every part of the engine
(publish and receive, batches, fan-out, groups, the pull group, acknowledgement, redelivery,
dead letters, the four overflow policies, TTL, topic management, dropped subscribers, patterns,
asyncio and threads, shutdown), then drops every broker and collects. It runs under
``valgrind --tool=memcheck --leak-check=full`` with ``PYTHONMALLOC=malloc``, so every Python
object is its own malloc block that valgrind tracks. The report lists the "definitely lost"
records whose allocation stack goes through kincir_core (``_broker`` or ``_message``), and the
memory errors (invalid reads and writes, uses of uninitialised values, bad frees) with kincir_core
in their stack; either makes the exit status 1. Leaks with no kincir_core frame are the
interpreter's own (it does not free everything at exit) and are only counted.

What memcheck cannot see: a leaked *reference* to an object the engine did not allocate (a
user's payload kept alive by a missing decref) has a stack without kincir_core; the refcount
tests in test_leaks_refcounts.py cover that.

valgrind runs the real interpreter binary: a pyenv shim or other wrapper script is resolved to
the ELF file behind it (``sys.executable``, its realpath, then ``sys._base_executable``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPRESSIONS = Path(__file__).with_name("valgrind-python.supp")
ENGINE_FILES = ("_broker.c", "_message.c", "_broker.pyx", "_message.pyx", "_lock.h", ".pxi")
IMPORT_MARKERS = ("__pyx_pymod_exec_", "PyInit__", "__Pyx_modinit_")
MEMORY_ERRORS = (
    "InvalidRead",
    "InvalidWrite",
    "InvalidFree",
    "MismatchedFree",
    "UninitCondition",
    "UninitValue",
    "InvalidMemPool",
    "Overlap",
    "SyscallParam",
    "ClientCheck",
    "FishyValue",
)
NOT_COMPILED = 3  # the workload's exit status when kincir did not load the compiled engine
NOT_RUN = 2  # this script's exit status when it could not run (no valgrind, no compiled engine)


# -- the workload (runs inside valgrind) --------------------------------------------------------


def workload(rounds: int, inject_leak: bool) -> None:
    import asyncio
    import gc
    import pickle
    import threading

    import kincir
    from kincir.memory import (
        AckError,
        BrokerShutdown,
        InMemoryAckSubscriber,
        InMemoryBroker,
        InMemoryConfig,
        InMemoryPublisher,
        InMemorySubscriber,
        InvalidTopicName,
        MaxSubscribersReached,
        MaxTopicsReached,
        QueueFull,
        TopicNotFound,
    )

    if kincir.IMPLEMENTATION != "cython":
        print(
            "memcheck: kincir loaded its pure-Python engine, not the compiled one", file=sys.stderr
        )
        sys.exit(NOT_COMPILED)
    Message = kincir.Message
    payload = os.urandom(48)
    meta = {"key": "value " + os.urandom(4).hex()}

    def drain(sub: InMemorySubscriber) -> int:
        n = 0
        try:
            while sub.try_receive() is not None:
                n += 1
        except BrokerShutdown:
            pass
        return n

    def basics() -> None:
        broker = InMemoryBroker(InMemoryConfig(enable_stats=True))
        pub = InMemoryPublisher(broker)
        subs = [InMemorySubscriber(broker) for _ in range(3)]
        for sub in subs:
            sub.subscribe("a")
        subs[0].subscribe("b")
        for i in range(rounds):
            msg = Message(payload, meta) if i % 2 else Message(payload)
            pub.publish_nowait("a", [msg, payload, bytearray(payload), memoryview(payload)])
            pub.publish_sync("b", (msg.with_metadata("i", str(i)),))
            for sub in subs:
                got = sub.try_receive_batch(3)
                for m in got:
                    _ = (m.uuid, m.metadata, m.topic, m.sequence, m.enqueued_at, repr(m))
                pickle.loads(pickle.dumps(got[0]))
                drain(sub)
            sub = subs[1]
            pub.publish_nowait("a", [payload])
            sub.receive_sync(timeout=1.0)
            pub.publish_nowait("a", [payload] * 3)
            sub.receive_batch_sync(2, timeout=1.0)
            for s in subs:
                drain(s)
        try:
            subs[2].receive_sync(timeout=0.001)
        except TimeoutError:
            pass
        broker.health_check()
        broker.stats()
        broker.list_topic_info()
        broker.shutdown()
        for sub in subs:
            drain(sub)

    def groups() -> None:
        broker = InMemoryBroker()
        pub = InMemoryPublisher(broker)
        members = [InMemorySubscriber(broker, group="g") for _ in range(2)]
        for member in members:
            member.subscribe("t")
        broker.consume("t")
        for _ in range(rounds):
            pub.publish_nowait("t", [payload, Message(payload, meta)])
            members[0].try_receive()
            members[1].try_receive()
            broker.consume("t")
            broker.consume("t")
        temp = InMemorySubscriber(broker, group="h")
        temp.subscribe("t")
        pub.publish_nowait("t", [payload] * 5)
        broker.list_groups("t")
        broker.delete_group("t", "h")
        broker.force_shutdown()

    def acks() -> None:
        broker = InMemoryBroker(InMemoryConfig(max_queue_size=64))
        pub = InMemoryPublisher(broker)
        sub = InMemoryAckSubscriber(broker, max_deliveries=2, dead_letter_topic="dlq")
        a = InMemoryAckSubscriber(broker, "g", ack_timeout=0.001)
        b = InMemoryAckSubscriber(broker, "g", dead_letter_topic="dlq.full")
        broker.configure_topic("dlq.full", max_queue_size=1)
        pub.publish_nowait("dlq.full", [payload])
        letters = InMemorySubscriber(broker)
        letters.subscribe("dlq")
        sub.subscribe("t")
        a.subscribe("u")
        b.subscribe("u")
        for i in range(rounds):
            pub.publish_nowait("t", [Message(payload, meta), payload, payload])
            _, h1 = sub.try_receive_with_ack()
            sub.nack(h1)
            _, h1 = sub.try_receive_with_ack()
            sub.nack(h1)  # past max_deliveries: dead-lettered
            _, h2 = sub.try_receive_with_ack()
            _, h3 = sub.receive_with_ack_sync(timeout=1.0)
            sub.ack_batch([h2])
            sub.nack_batch([h3], requeue=False)
            try:
                sub.ack(h2)
            except AckError:
                pass
            drain(letters)
            pub.publish_nowait("u", [payload, payload])
            a.try_receive_with_ack()
            if i % 10 == 0:
                time.sleep(0.002)  # a's delivery misses its deadline
            got = b.try_receive_with_ack()
            while got is not None:
                b.nack(got[1], requeue=False)
                got = b.try_receive_with_ack()
            a.try_receive()
        a.close()
        b.in_flight()
        broker.force_shutdown()

    def overflow() -> None:
        broker = InMemoryBroker(
            InMemoryConfig(max_queue_size=8, max_topics=6, max_subscribers_per_topic=2)
        )
        pub = InMemoryPublisher(broker)
        readers = {}
        for policy in ("error", "block", "drop_oldest", "drop_newest"):
            broker.configure_topic(policy, overflow=policy)
            readers[policy] = InMemorySubscriber(broker)
            readers[policy].subscribe(policy)
        acker = InMemoryAckSubscriber(broker)
        acker.subscribe("drop_oldest")
        for i in range(rounds):
            for policy in ("error", "block", "drop_oldest", "drop_newest"):
                for batch in ([payload] * 5, [Message(payload, meta)] * 5, [payload] * 12):
                    try:
                        pub.publish_nowait(policy, batch)
                    except QueueFull:
                        pass
            try:
                pub.publish_sync("block", [payload], timeout=0)
            except QueueFull:
                pass
            got = acker.try_receive_with_ack()
            pub.publish_nowait("drop_oldest", [payload] * 8)
            if got is not None:
                acker.ack(got[1])
            for bad in ("not a list", payload, 42):
                try:
                    pub.publish_nowait("error", bad)
                except TypeError:
                    pass
            for topic, error in (("bad..name", InvalidTopicName), (f"new{i}", MaxTopicsReached)):
                try:
                    pub.publish_nowait(topic, [payload, payload])
                except error:
                    pass
            try:
                InMemorySubscriber(broker).subscribe("error")
                InMemorySubscriber(broker).subscribe("error")
            except MaxSubscribersReached:
                pass
            for sub in readers.values():
                if i % 3 == 0:
                    drain(sub)
            readers["error"].try_receive_batch(4)
        broker.configure_topic("block", max_queue_size=None)

        blocked = InMemoryBroker(InMemoryConfig(max_queue_size=4, overflow="block"))
        bpub, bsub = InMemoryPublisher(blocked), InMemorySubscriber(blocked)
        bsub.subscribe("t")

        def producer() -> None:
            for _ in range(rounds):
                bpub.publish_sync("t", [payload, Message(payload, meta)], timeout=5.0)

        worker = threading.Thread(target=producer)
        worker.start()
        received = 0
        while received < 2 * rounds:
            received += len(bsub.receive_batch_sync(3, timeout=5.0))
        worker.join()
        bpub.publish_nowait("t", [payload] * 4)
        waiter = threading.Thread(target=lambda: _expect(bpub.publish_sync, BrokerShutdown))
        waiter.start()
        time.sleep(0.05)
        blocked.force_shutdown()
        waiter.join()
        broker.force_shutdown()

    def ttl_and_topics() -> None:
        broker = InMemoryBroker(
            InMemoryConfig(default_message_ttl=0.001, max_queue_size=32, cleanup_interval=0.005)
        )
        pub = InMemoryPublisher(broker)
        sub = InMemorySubscriber(broker)
        acker = InMemoryAckSubscriber(broker)
        sub.subscribe("t")
        acker.subscribe("t")
        for i in range(max(1, rounds // 4)):
            pub.publish_nowait("full", [payload] * 16)
            pub.publish_nowait("t", [Message(payload, meta)] * 8)
            pub.publish_nowait("orphan", [payload] * 8)
            time.sleep(0.002)
            sub.try_receive()
            acker.try_receive_with_ack()
            if i % 2:
                broker.expire_all()
        broker.force_shutdown()

        broker = InMemoryBroker()
        pub = InMemoryPublisher(broker)
        sub = InMemorySubscriber(broker)
        patterned = InMemorySubscriber(broker)
        patterned.subscribe("p.*")
        sub.subscribe("keep")
        for i in range(rounds):
            for name in ("d", "e"):
                sub.subscribe(name)
            pub.publish_nowait("keep", [payload] * 3)
            pub.publish_nowait("d", [payload, Message(payload, meta)])
            pub.publish_nowait("e", [payload])
            pub.publish_nowait(f"p.{i % 3}", [payload])
            broker.clear_topic("keep")
            broker.delete_topic("d")
            sub.unsubscribe("e")
            drain(patterned)
            try:
                broker.topic_info("d")
            except TopicNotFound:
                pass
        patterned.unsubscribe("p.*")
        broker.cleanup_idle_topics(0)
        for _ in range(rounds):
            # dropped without close(), one with a delivery in flight
            plain, member, acker = (
                InMemorySubscriber(broker),
                InMemorySubscriber(broker, "g"),
                InMemoryAckSubscriber(broker),
            )
            for s in (plain, member, acker):
                s.subscribe("keep")
            pub.publish_nowait("keep", [payload, payload])
            member.try_receive_batch(2)
            acker.try_receive_with_ack()
            del plain, member, acker
            drain(sub)
        gc.collect()
        broker.shutdown()

    def asyncio_paths() -> None:
        broker = InMemoryBroker(InMemoryConfig(max_queue_size=2, overflow="block"))
        pub, sub = InMemoryPublisher(broker), InMemorySubscriber(broker)
        acker = InMemoryAckSubscriber(broker)
        sub.subscribe("t")
        acker.subscribe("u")

        async def main() -> None:
            for _ in range(rounds):
                await pub.publish("t", [payload, Message(payload, meta)])
                await sub.receive()
                await sub.receive_batch(4)
                waiting = asyncio.ensure_future(sub.receive())
                await asyncio.sleep(0)
                await pub.publish("t", [payload])
                await waiting
                cancelled = asyncio.ensure_future(sub.receive())
                await asyncio.sleep(0)
                cancelled.cancel()
                await asyncio.gather(cancelled, return_exceptions=True)
                try:
                    await sub.receive(timeout=0.0001)
                except TimeoutError:
                    pass
                pub.publish_nowait("t", [payload, payload])
                blocked = asyncio.ensure_future(pub.publish("t", [payload]))
                await asyncio.sleep(0)
                await sub.receive()
                await blocked
                try:
                    await pub.publish("t", [payload], timeout=0.0001)
                except QueueFull:
                    pass
                sub.try_receive_batch(4)
                sub.receive().close()  # made, never awaited
                pub.publish("t", [payload]).close()
                await pub.publish("u", [payload])
                _, handle = await acker.receive_with_ack(timeout=1.0)
                acker.ack(handle)
            pending = asyncio.ensure_future(sub.receive())
            await asyncio.sleep(0)
            broker.force_shutdown()
            await asyncio.gather(pending, return_exceptions=True)

        asyncio.run(main())

    steps = (basics, groups, acks, overflow, ttl_and_topics, asyncio_paths) if rounds else ()
    for step in steps:
        step()
        gc.collect()
    if inject_leak:
        import ctypes

        broker = InMemoryBroker()
        pub, sub = InMemoryPublisher(broker), InMemorySubscriber(broker)
        sub.subscribe("t")
        for _ in range(100):  # many: a stale pointer somewhere may keep a few "reachable"
            pub.publish_nowait("t", [payload])
            leaked = sub.try_receive()  # built by the engine (delivered_copy)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))
        del leaked
        broker.shutdown()
    for _ in range(3):
        gc.collect()
    print(f"memcheck workload: {len(steps)} parts x {rounds} rounds done", file=sys.stderr)


def _expect(call, error) -> None:  # type: ignore[no-untyped-def]
    try:
        call("t", [b"x"])
    except error:
        return
    raise AssertionError(f"expected {error.__name__}")


# -- running valgrind and reading its report -----------------------------------------------------


@dataclass
class Record:
    kind: str
    what: str
    frames: list[str] = field(default_factory=list)
    bytes: int = 0
    blocks: int = 0

    @property
    def ours(self) -> bool:
        return any(_is_engine_frame(f) for f in self.frames)

    @property
    def at_import(self) -> bool:
        """Allocated while the module was being imported (Cython's module init: interned
        names, exported C functions): made once per process and kept by the interpreter until
        exit, which 3.12+ does not free; not a leak that grows."""
        return any(marker in f for f in self.frames for marker in IMPORT_MARKERS)


def _is_engine_frame(frame: str) -> bool:
    return "kincir_core" in frame or any(name in frame for name in ENGINE_FILES)


def _frame_text(frame: ET.Element) -> str:
    fn = frame.findtext("fn") or "???"
    obj = frame.findtext("obj") or ""
    where = frame.findtext("file")
    line = frame.findtext("line")
    loc = f"{where}:{line}" if where else os.path.basename(obj)
    return f"{fn} ({loc})" if "kincir_core" not in fn or not obj else f"{fn} ({loc}; {obj})"


def parse(xml_path: Path) -> list[Record]:
    records = []
    for error in ET.parse(xml_path).getroot().iter("error"):
        kind = error.findtext("kind") or "?"
        what = error.findtext("what") or error.findtext("xwhat/text") or ""
        rec = Record(kind, what)
        rec.bytes = int(error.findtext("xwhat/leakedbytes") or 0)
        rec.blocks = int(error.findtext("xwhat/leakedblocks") or 0)
        for stack in error.findall("stack"):
            rec.frames.extend(_frame_text(f) for f in stack.findall("frame"))
            # the engine's own frames carry the path of the .so in obj: keep it matchable
            rec.frames.extend(
                f.findtext("obj") or ""
                for f in stack.findall("frame")
                if "kincir_core" in (f.findtext("obj") or "")
            )
        records.append(rec)
    return records


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def real_python() -> str:
    """The interpreter binary itself (not a shim script), for valgrind to run."""
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    base = getattr(sys, "_base_executable", "")
    if base:
        candidates += [base, os.path.realpath(base)]
    for candidate in candidates:
        if candidate and _is_elf(candidate):
            return candidate
    print(f"memcheck: no interpreter binary found among {candidates}", file=sys.stderr)
    sys.exit(NOT_RUN)


def engine_path() -> list[str]:
    """sys.path entries that import the same compiled kincir as this process (the checkout's
    src/ and root when kincir is not importable as installed)."""
    try:
        import kincir
        import kincir_core._broker  # is the extension built?
    except ImportError:
        sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
        for name in [
            n for n in sys.modules if n == "kincir" or n.startswith(("kincir.", "kincir_core"))
        ]:
            del sys.modules[name]
        try:
            import kincir
            import kincir_core._broker
        except ImportError as exc:
            print(f"memcheck: the compiled engine does not import: {exc}", file=sys.stderr)
            sys.exit(NOT_RUN)
    import kincir_core

    dirs = [
        str(Path(kincir.__file__).resolve().parent.parent),
        str(Path(kincir_core.__file__).resolve().parent.parent),
    ]
    return list(dict.fromkeys(dirs))


def run_valgrind(rounds: int, inject_leak: bool, keep: Path | None) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("memcheck: valgrind is not installed", file=sys.stderr)
        return NOT_RUN
    python = real_python()
    env = {key: value for key, value in os.environ.items() if key != "KINCIR_NO_EXTENSIONS"}
    env["PYTHONMALLOC"] = "malloc"
    env["PYTHONPATH"] = os.pathsep.join(
        engine_path() + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    with tempfile.TemporaryDirectory(prefix="kincir-memcheck-") as tmp:
        out = keep if keep is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        xml_path, log_path = out / "memcheck.xml", out / "memcheck.log"
        command = [
            valgrind,
            "--tool=memcheck",
            "--leak-check=full",
            "--show-leak-kinds=definite,possible",
            "--errors-for-leak-kinds=definite",
            "--num-callers=50",
            "--xml=yes",
            f"--xml-file={xml_path}",
            f"--log-file={log_path}",
        ]
        if SUPPRESSIONS.exists():
            command.append(f"--suppressions={SUPPRESSIONS}")
        command += [python, str(Path(__file__).resolve()), "--workload", "--rounds", str(rounds)]
        if inject_leak:
            command.append("--inject-leak")
        started = time.monotonic()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        if proc.returncode == NOT_COMPILED:
            print(proc.stderr, file=sys.stderr)
            return NOT_RUN
        if proc.returncode != 0 or not xml_path.exists():
            print(
                f"memcheck: the workload failed under valgrind (exit {proc.returncode})\n"
                f"{proc.stdout}{proc.stderr}",
                file=sys.stderr,
            )
            if log_path.exists():
                print(log_path.read_text()[-4000:], file=sys.stderr)
            return 1
        records = parse(xml_path)
    return report(records, python, elapsed, proc.stderr.strip())


def report(records: list[Record], python: str, elapsed: float, workload_note: str) -> int:
    lost = [r for r in records if r.kind == "Leak_DefinitelyLost"]
    ours = [r for r in lost if r.ours and not r.at_import]
    errors = [r for r in records if r.kind in MEMORY_ERRORS and r.ours]
    print(f"memcheck: {python} under valgrind, PYTHONMALLOC=malloc, {elapsed:.1f} s")
    if workload_note:
        print(f"  {workload_note.splitlines()[-1]}")
    print(
        f"  definitely lost, all records: {sum(r.bytes for r in lost)} bytes in "
        f"{sum(r.blocks for r in lost)} blocks ({len(lost)} records; the interpreter's own "
        "unless listed below)"
    )
    print(
        f"  definitely lost through kincir_core: {len(ours)} records, "
        f"{sum(r.bytes for r in ours)} bytes"
    )
    print(f"  memory errors through kincir_core: {len(errors)}")
    possible = [r for r in records if r.kind == "Leak_PossiblyLost" and r.ours]
    print(
        f"  possibly lost through kincir_core (interior pointers, not counted as leaks): "
        f"{len(possible)} records, {sum(r.bytes for r in possible)} bytes"
    )
    for rec in ours + errors:
        print(f"\n{rec.kind}: {rec.what}")
        for frame in rec.frames[:30]:
            if frame.startswith("/"):
                continue
            print(f"    {frame}")
    return 1 if ours or errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=40,
        help="iterations of each part (0: no workload, for --inject-leak)",
    )
    parser.add_argument("--workload", action="store_true", help="run the workload only")
    parser.add_argument(
        "--inject-leak",
        action="store_true",
        help="leak one engine-built Message on purpose (self-test: exit 1)",
    )
    parser.add_argument("--keep", type=Path, help="write memcheck.xml and memcheck.log here")
    args = parser.parse_args(argv)
    if args.workload:
        workload(args.rounds, args.inject_leak)
        return 0
    return run_valgrind(args.rounds, args.inject_leak, args.keep)


if __name__ == "__main__":
    sys.exit(main())
