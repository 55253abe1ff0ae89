"""Run every behaviour test against both engines, through the public package only.

``kincir`` binds to one engine when it is imported (``kincir.IMPLEMENTATION``). To test both, this
file imports the package normally and then loads a second, private copy of it bound to the
pure-Python twin (``KINCIR_NO_EXTENSIONS=1``). The copies have distinct classes, so behaviour tests
never import public names directly: they use the ``k`` fixture, a namespace holding every public
name of ``kincir`` and ``kincir.memory`` of one copy (``k.InMemoryBroker``, ``k.QueueFull`` ...).

The ``cython`` parameter is skipped when ``KINCIR_NO_EXTENSIONS`` asks for the twin, and fails
when the compiled engine is missing without being asked for (an unbuilt extension must not pass
silently as "tested").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import kincir
import kincir.memory

_ENV = "KINCIR_NO_EXTENSIONS"
IMPLEMENTATIONS = ("cython", "python")


def _is_ours(name: str) -> bool:
    return name == "kincir" or name.startswith("kincir.") or name.startswith("kincir_core")


def _env_asks_for_twin() -> bool:
    # The same rule as kincir_core's selector: set to anything but "" or "0".
    return os.environ.get(_ENV, "") not in ("", "0")


def _capture() -> dict[str, types.ModuleType]:
    return {name: mod for name, mod in sys.modules.items() if _is_ours(name)}


def _load_twin() -> tuple[types.ModuleType, types.ModuleType, dict[str, types.ModuleType]]:
    """Import a second copy of kincir bound to the pure-Python twin; leave sys.modules as found."""
    saved = _capture()
    for name in saved:
        del sys.modules[name]
    old_env = os.environ.get(_ENV)
    os.environ[_ENV] = "1"
    try:
        import kincir as twin_kincir
        import kincir.memory as twin_memory

        modules = _capture()
    finally:
        for name in [n for n in sys.modules if _is_ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        if old_env is None:
            del os.environ[_ENV]
        else:
            os.environ[_ENV] = old_env
    return twin_kincir, twin_memory, modules


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stress",
        action="store_true",
        default=False,
        help="run tests/test_stress_scenarios.py at full size (1M messages per scenario)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis' pytest plugin touches mypy_extensions' deprecated TypedDict while it reports a
    # falsifying example; under filterwarnings=error that turns a test failure into an
    # INTERNALERROR that hides the example.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


class Kincir(types.SimpleNamespace):
    """The public names of one copy of kincir (short repr: it shows up in failure reports)."""

    def __repr__(self) -> str:
        return f"<kincir names, {self.impl} engine>"


_MAIN_MODULES = _capture()
COPIES: dict[str, tuple[types.ModuleType, types.ModuleType, dict[str, types.ModuleType]]] = {}
if kincir.IMPLEMENTATION == "cython":
    COPIES["cython"] = (kincir, kincir.memory, _MAIN_MODULES)
    COPIES["python"] = _load_twin()
    assert COPIES["python"][0].IMPLEMENTATION == "python"
else:
    COPIES["python"] = (kincir, kincir.memory, _MAIN_MODULES)


class Worker:
    """A daemon thread running ``fn``; ``join`` returns its result or re-raises its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self.thread = threading.Thread(target=self._run, daemon=True, name="kincir-test-worker")
        self.thread.start()

    def _run(self) -> None:
        self.started.set()
        try:
            self.value = self._fn(*self._args, **self._kwargs)
        except BaseException as exc:  # handed to the test thread by join()
            self.error = exc

    def join(self, timeout: float = 5.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker thread still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value

    def is_alive(self) -> bool:
        return self.thread.is_alive()


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    """Run a coroutine on a fresh event loop, failing instead of hanging after ``timeout``."""

    async def guarded() -> Any:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise AssertionError(f"coroutine still running after {timeout} s")
        return task.result()

    return asyncio.run(guarded())


def _namespace(impl: str) -> types.SimpleNamespace:
    pkg, memory, modules = COPIES[impl]
    ns = Kincir()
    for module in (pkg, memory):
        for name in module.__all__:
            setattr(ns, name, getattr(module, name))
    ns.impl = impl
    ns.kincir = pkg
    ns.memory = memory
    ns.core = modules["kincir_core"]
    ns.modules = modules
    ns.run = run

    @contextlib.contextmanager
    def activated() -> Iterator[None]:
        """Make this copy the one ``sys.modules`` resolves (pickle looks classes up there)."""
        saved = _capture()
        for name in saved:
            del sys.modules[name]
        sys.modules.update(modules)
        try:
            yield
        finally:
            for name in [n for n in sys.modules if _is_ours(n)]:
                del sys.modules[name]
            sys.modules.update(saved)

    ns.activated = activated
    return ns


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def engine_env() -> Callable[[str], dict[str, str]]:
    """``engine_env(engine)``: the environment for a child process on ``engine`` ("cython" or
    "python"); skips the test when the compiled engine is asked for but not loaded here."""

    def env_for(engine: str) -> dict[str, str]:
        env = dict(os.environ)
        if engine == "python":
            env[_ENV] = "1"
        elif kincir.IMPLEMENTATION != "cython":
            pytest.skip("the compiled engine is not loaded in this run")
        return env

    return env_for


README = Path(__file__).parents[1] / "README.md"


def _readme_blocks(start: str, end: str = "\n## ") -> list[str]:
    text = README.read_text()
    first = text.index(start)
    last = text.find(end, first + len(start))
    section = text[first : last if last >= 0 else len(text)]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


@pytest.fixture
def readme_blocks() -> Callable[..., list[str]]:
    """``readme_blocks(start, end="\\n## ")``: the README's ```python blocks from the text
    ``start`` up to ``end`` (the next section by default)."""
    return _readme_blocks


@pytest.fixture
def python_child() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``python_child(code, *args, stdin=False)``: run ``python -P -c code args`` in a child
    process, its standard output a text pipe (and its standard input, with ``stdin=True``).
    ``-P`` keeps the working directory off the child's ``sys.path``, so a child started from the
    checkout imports the kincir that is installed (the compiled engine with it), as the tests
    do. Every child is killed if still running, reaped and its pipes closed at teardown."""
    children: list[subprocess.Popen[str]] = []

    def start(code: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-P", "-c", code, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else None,
            text=True,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(30)
        for pipe in (child.stdout, child.stdin):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def run_readme_example(engine_env: Callable[[str], dict[str, str]]) -> Callable[..., str]:
    """``run_readme_example(start, engine, index=0)``: run the ``index``-th ```python block of
    the README after the text ``start`` in a child process on ``engine``; its standard output
    (the test fails if it exits with an error)."""

    def run(start: str, engine: str, index: int = 0) -> str:
        code = _readme_blocks(start)[index]
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=engine_env(engine),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


@pytest.fixture
def quiet_router_log(caplog: pytest.LogCaptureFixture) -> None:
    """Keep the router's expected handler failures out of the captured log."""
    caplog.set_level(logging.CRITICAL, logger="kincir.router")


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows for the test, to shake thread schedules."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture(scope="session", autouse=True)
def _no_segments_left_behind() -> Iterator[None]:
    """The suite leaves nothing in /dev/shm: every shared-memory segment a test made (or a
    child process it started) is gone when the session ends."""
    shm = Path("/dev/shm")
    before = set(shm.glob("kincir-*")) if shm.is_dir() else set()
    yield
    left = (set(shm.glob("kincir-*")) if shm.is_dir() else set()) - before
    assert not left, f"shared-memory segments left behind: {sorted(map(str, left))}"


@pytest.fixture(autouse=True)
def _engine_clock() -> Iterator[None]:
    """Tests may step the engines' clocks (TTL, ack deadlines); every test starts on real time."""
    yield
    for _, _, modules in COPIES.values():
        modules["kincir_core"]._reset_clock()


@pytest.fixture(params=IMPLEMENTATIONS)
def k(request: pytest.FixtureRequest) -> Iterator[types.SimpleNamespace]:
    """Every public name of ``kincir`` and ``kincir.memory``, from one engine's copy.

    Extras: ``k.impl`` (the parameter id), ``k.new_broker(config=None, **config_fields)``
    (shut down at teardown), ``k.spawn(fn, *args)`` (a ``Worker`` joined at teardown),
    ``k.spawn_blocked(fn, *args)`` (``k.spawn``, then checks that the worker still runs 50 ms
    later), ``k.run(coro)`` (``asyncio.run`` with a hang guard), ``k.activated()`` (pickling),
    ``k.core``, ``k.wait_for(predicate)``, ``k.receive_payloads(sub, n)`` (``n`` payloads,
    then any that follow within 0.1 s), ``k.drain(sub)`` (what ``sub`` can take without
    waiting, one ``try_receive`` at a time).

    Set-ups: ``k.subscriber(broker, topic, **kwargs)`` and ``k.ack_subscriber(...)`` (a new
    subscriber of ``topic``), ``k.members(broker, topic, n=2, group="g")`` (a consumer group of
    ``n`` plain subscribers of ``topic``), ``k.setup(config=None, subscribe=None, **fields)`` (a
    new broker, a publisher and a subscriber, subscribed to ``subscribe`` if given),
    ``k.ack_setup(**kwargs)`` (a broker with stats, a publisher and an ack subscriber on
    ``"t"``), ``k.ack_group(broker, *member_kwargs)`` (ack subscribers of group ``"g"`` on
    ``"t"``, one a dict of keywords; two by default).
    """
    impl = request.param
    if impl not in COPIES:
        if _env_asks_for_twin():
            pytest.skip(f"{_ENV} is set: only the pure-Python engine is loaded")
        pytest.fail(
            "the compiled engine is not built: kincir_core._broker / kincir_core._message did "
            "not import, so kincir fell back to the pure-Python twin. Build it "
            "(pip install -e . or python setup.py build_ext --inplace), or set "
            f"{_ENV}=1 to test the twin only.",
            pytrace=False,
        )
    ns = _namespace(impl)
    brokers: list[Any] = []
    workers: list[Worker] = []

    def new_broker(config: Any = None, **fields: Any) -> Any:
        if fields:
            assert config is None, "pass a config or config fields, not both"
            config = ns.InMemoryConfig(**fields)
        broker = ns.InMemoryBroker(config)
        brokers.append(broker)
        return broker

    def track(broker: Any) -> Any:
        brokers.append(broker)
        return broker

    def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Worker:
        worker = Worker(fn, *args, **kwargs)
        workers.append(worker)
        return worker

    def spawn_blocked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Worker:
        worker = spawn(fn, *args, **kwargs)
        time.sleep(0.05)
        assert worker.is_alive()
        return worker

    def subscriber(broker: Any, topic: str, **kwargs: Any) -> Any:
        sub = ns.InMemorySubscriber(broker, **kwargs)
        sub.subscribe(topic)
        return sub

    def ack_subscriber(broker: Any, topic: str, **kwargs: Any) -> Any:
        sub = ns.InMemoryAckSubscriber(broker, **kwargs)
        sub.subscribe(topic)
        return sub

    def members(broker: Any, topic: str, n: int = 2, *, group: str = "g") -> list[Any]:
        subs = [ns.InMemorySubscriber(broker, group=group) for _ in range(n)]
        for sub in subs:
            sub.subscribe(topic)
        return subs

    def drain(sub: Any) -> list[Any]:
        got = []
        while (msg := sub.try_receive()) is not None:
            got.append(msg)
        return got

    def receive_payloads(sub: Any, count: int, quiet: float = 0.1) -> list[Any]:
        """The next ``count`` payloads ``sub`` receives, and any more that follow within
        ``quiet`` seconds."""
        got = [sub.receive_sync(timeout=5).payload for _ in range(count)]
        while True:
            try:
                got.append(sub.receive_sync(timeout=quiet).payload)
            except TimeoutError:
                return got

    def setup(
        config: Any = None, *, subscribe: str | None = None, **fields: Any
    ) -> tuple[Any, Any, Any]:
        broker = new_broker(config, **fields)
        pub, sub = ns.InMemoryPublisher(broker), ns.InMemorySubscriber(broker)
        if subscribe is not None:
            sub.subscribe(subscribe)
        return broker, pub, sub

    def ack_setup(**sub_kwargs: Any) -> tuple[Any, Any, Any]:
        broker = new_broker(enable_stats=True)
        pub = ns.InMemoryPublisher(broker)
        sub = ns.InMemoryAckSubscriber(broker, **sub_kwargs)
        sub.subscribe("t")
        return broker, pub, sub

    def ack_group(broker: Any, *member_kwargs: dict[str, Any]) -> list[Any]:
        members = [
            ns.InMemoryAckSubscriber(broker, group="g", **kwargs)
            for kwargs in member_kwargs or ({}, {})
        ]
        for member in members:
            member.subscribe("t")
        return members

    helpers = (new_broker, track, spawn, spawn_blocked, wait_for, drain, receive_payloads)
    set_ups = (subscriber, ack_subscriber, members, setup, ack_setup, ack_group)
    for helper in (*helpers, *set_ups):
        setattr(ns, helper.__name__, helper)
    yield ns
    # Shutting the brokers down first wakes any receive a failed test left blocked.
    for broker in brokers:
        broker.force_shutdown()
    hung = []
    for worker in workers:
        worker.thread.join(5.0)
        if worker.thread.is_alive():
            hung.append(worker.thread.name)
    assert not hung, f"threads still running at teardown: {hung}"
