"""The command line of ``kincir bench``: its options, progress on stderr, the table printed.

Without ``--backend`` it runs the in-process workloads (``kincir.bench.suite``); with
``--backend redis|rabbitmq|kafka [--url URL]`` the B1-B4 workloads of ``kincir.bench.backends``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from kincir import _backends
from kincir._argtypes import positive_float, positive_int
from kincir.errors import KincirError

from .backends import BackendUnavailable, load_backend, workloads
from .report import PlotUnavailable, format_table, import_pyplot, plot_ratios, report_json
from .runner import BY_KEY, BenchSettings, run_bench
from .suite import Workload

__all__ = ["DESCRIPTION", "configure_parser", "run"]

#: The command, as its messages name it.
PROG = "kincir bench"
#: The text of ``kincir bench --help``: the in-process benchmark's, and ``--backend``'s.
DESCRIPTION = (
    "Run the benchmark workloads for kincir and for the standard-library baselines "
    "(queue.SimpleQueue, queue.Queue, asyncio.Queue; janus too when installed) in the same run: "
    "a warm-up, then --repeat timed repetitions per side, median reported. Prints a table of "
    "medians, ratios to the baselines and the goals met or not; progress goes to stderr. "
    "Workloads: W1 one-thread publish/receive, W2 batches, W3 thread to thread, W4 fan-out, "
    "W5 asyncio tasks, W6 ping-pong latency, W7 thread to asyncio, M memory per queued message, "
    "H health/stats cost, G consumer group, R Router stage; W1o, W3o, W5o are W1, W3, W5 with a "
    "dict per message (the baselines put the same dicts), their /bytes rows kincir's dict rate "
    "over its bytes rate. Exits 0 when every workload ran (goals met or not), 1 when one failed, "
    "2 on a usage error."
    " With --backend redis|rabbitmq|kafka [--url URL]: run instead the async workloads B1 "
    "producer -> subscriber, B2 fan-out to 4 subscribers, B3 ack group of 2 members, B4 round "
    "trip latency, on the in-memory broker and on the backend side by side (ratio: how many "
    "times faster in-process is); exits 2 when the server cannot be reached."
)


#: Keys as typed, any case ("w1o", "W1O") -> as the suite spells them ("W1o").
_KEYS = {key.upper(): key for key in BY_KEY}


def _workload_list(text: str) -> tuple[str, ...]:
    keys = tuple(
        dict.fromkeys(
            _KEYS.get(part.strip().upper(), part.strip().upper())
            for part in text.split(",")
            if part.strip()
        )
    )
    if not keys:
        raise argparse.ArgumentTypeError("name at least one workload")
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown)} (choose from {','.join(BY_KEY)})"
        )
    return keys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Give ``kincir bench``'s subparser its description and options (``--backend`` and
    ``--url`` included)."""
    parser.description = DESCRIPTION
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=5,
        metavar="N",
        help="timed repetitions per side, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads: the whole run takes well under 30 s",
    )
    parser.add_argument(
        "--only",
        type=_workload_list,
        default=None,
        metavar="W1,W3,...",
        help=f"run only these workloads ({','.join(BY_KEY)})",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write every repetition's raw numbers and the machine's "
        "description to PATH as JSON",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="also draw the ratios as a bar chart PNG at PATH (needs matplotlib)",
    )
    parser.add_argument(
        "--scale",
        type=positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply every workload size by FACTOR, after --quick; meant for "
        "tests (tiny sizes measure noise) (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=[spec.name for spec in _backends.backends()],
        default=None,
        help="run the async workloads B1-B4 on the in-memory broker and on this backend, side "
        "by side, instead of the in-process benchmark",
    )
    parser.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="the backend's server (default: "
        + "; ".join(f"{s.name}: ${s.url_env} or {s.default_url}" for s in _backends.backends())
        + ")",
    )


class _StderrProgress:
    """Progress on stderr: one line rewritten in place on a terminal, else a line per step."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self._started:6.1f}s] {text}"
        if self._tty:
            sys.stderr.write(f"\r\x1b[K{line}")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _error(text: str) -> int:
    print(f"{PROG}: error: {' '.join(text.splitlines())}", file=sys.stderr)
    return 2


def _run_suite(args: argparse.Namespace, suite: tuple[Workload, ...] | None = None) -> int:
    """Run the workloads with parsed options; print the table; 0 when every workload ran.

    ``suite``: the workloads to run instead of ``WORKLOADS`` (``kincir bench --backend``).
    """
    try:
        settings = BenchSettings(
            repeat=args.repeat, quick=args.quick, scale=args.scale, only=args.only, suite=suite
        )
    except ValueError as exc:
        return _error(str(exc))
    if args.plot is not None:
        try:
            import_pyplot()
        except PlotUnavailable as exc:
            return _error(str(exc))
    for option, target in (("--json", args.json), ("--plot", args.plot)):
        if target is not None and not Path(target).resolve().parent.is_dir():
            return _error(f"{option}: no such directory: {Path(target).parent}")
    progress = _StderrProgress()
    try:
        report = run_bench(settings, progress)
    finally:
        progress.close()
    print(format_table(report))
    status = 0 if report.ok else 1
    if args.json is not None:
        try:
            Path(args.json).write_text(
                json.dumps(report_json(report), indent=2) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            print(f"{PROG}: error: cannot write {args.json}: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"raw results: {args.json}")
    if args.plot is not None:
        try:
            plot_ratios(report, args.plot)
        except (PlotUnavailable, OSError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"chart: {args.plot}")
    return status


def run(args: argparse.Namespace) -> int:
    """Run ``kincir bench`` (``--backend``: B1-B4 against a backend); the exit code."""
    name: str | None = getattr(args, "backend", None)
    url: str | None = getattr(args, "url", None)
    if name is None:
        if url is not None:
            return _error("--url needs --backend")
        return _run_suite(args)
    if args.only is not None:
        return _error("--only selects in-process workloads; --backend runs B1-B4")
    try:
        backend = load_backend(name, url)
    except BackendUnavailable as exc:
        return _error(str(exc))
    # a client library may log its failure too (aiormq does): the error line says it all
    logging.disable(logging.CRITICAL)
    try:
        asyncio.run(backend.check())
    except (KincirError, ValueError, TypeError) as exc:  # ConnectionFailed, a malformed URL
        return _error(str(exc))
    finally:
        logging.disable(logging.NOTSET)
    return _run_suite(args, suite=workloads(backend))
