"""Ctrl-C reaches a thread blocked in receive_sync or in a publish_sync waiting for room, on
both engines, promptly; the broker stays usable after."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from kincir.memory import InMemoryBroker, InMemoryConfig, InMemoryPublisher, InMemorySubscriber
broker = InMemoryBroker(InMemoryConfig(max_queue_size=1, overflow="block"))
sub = InMemorySubscriber(broker)
sub.subscribe("quiet")
if "{call}" == "publish_sync":
    InMemoryPublisher(broker).publish_nowait("quiet", [b"first"])
print("ready", flush=True)
started = time.monotonic()
try:
    if "{call}" == "publish_sync":
        InMemoryPublisher(broker).publish_sync("quiet", [b"blocked"], timeout={timeout})
    else:
        sub.receive_sync(timeout={timeout})
except KeyboardInterrupt:
    if "{call}" == "publish_sync":
        assert sub.receive_sync(timeout=1).payload == b"first"
        assert sub.try_receive() is None  # the interrupted publish wrote nothing
    print("interrupted %.3f" % (time.monotonic() - started), flush=True)
    # the broker is still usable after the interrupted wait
    from kincir.memory import InMemoryPublisher
    InMemoryPublisher(broker).publish_nowait("quiet", [b"after"])
    print("got", sub.receive_sync(timeout=1).payload.decode(), flush=True)
    sys.exit(0)
print("not interrupted", flush=True)
sys.exit(1)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
@pytest.mark.parametrize("engine", ["cython", "python"])
@pytest.mark.parametrize("timeout", ["None", "30"])
@pytest.mark.parametrize("call", ["receive_sync", "publish_sync"])
def test_ctrl_c_interrupts_a_blocked_call(
    engine: str,
    timeout: str,
    call: str,
    tmp_path: Path,
    engine_env: Callable[[str], dict[str, str]],
) -> None:
    env = engine_env(engine)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(timeout=timeout, call=call)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it block
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted")
    waited = float(lines[0].split()[1])
    # interrupted soon after the signal (sent ~0.3 s into the wait), not at the timeout: the
    # issue asks for 1 s after the signal; 2.5 s leaves room for this shared machine's noise
    assert waited < 2.8, waited
    assert lines[1] == "got after"
