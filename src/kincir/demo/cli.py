"""``kincir demo`` on the command line: its options and its handler."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .._argtypes import positive_float, positive_int
from .pipeline import run_demo
from .report import format_report, summary_line
from .settings import DemoSettings

__all__ = ["DESCRIPTION", "HELP", "configure_parser", "run"]

#: One line for ``kincir --help``.
HELP = "run a four-stage pipeline end to end and check what arrived"
#: The text of ``kincir demo --help``.
DESCRIPTION = (
    "Publish order dicts from several producer threads to a bounded topic under the block "
    "policy; an auditor checks the stream, a Router stage prices the orders, an ack stage "
    "ships them and dead-letters one poisoned order, and a sink reads what was shipped. "
    "close_topic ends the stream and the end flows down every stage. Prints throughput, the "
    "checks, and the broker's health (before shutdown) and statistics. Exits 0 when every "
    "check passed, 1 otherwise."
)


def _options() -> list[tuple[str, Callable[[str], object], str, str]]:
    """The demo's options, one per ``DemoSettings`` field: flag, type, metavar, help."""
    return [
        ("--producers", positive_int, "N", "producer threads"),
        ("--messages", positive_int, "M", "orders in total, split among the producers"),
        ("--batch", positive_int, "B", "orders per publish"),
        ("--queue-size", positive_int, "N", "every topic's max_queue_size"),
        ("--workers", positive_int, "N", "worker threads of the Router stage"),
        ("--receive-batch", positive_int, "N", "most messages the auditor takes per receive"),
        (
            "--drain-timeout",
            positive_float,
            "SECONDS",
            "how long each stage may take to see the end of its input",
        ),
    ]


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to its subparser."""
    defaults = DemoSettings()
    for flag, kind, metavar, text in _options():
        parser.add_argument(
            flag,
            type=kind,
            default=getattr(defaults, _field(flag)),
            metavar=metavar,
            help=f"{text} (default: %(default)s)",
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")


def run(args: argparse.Namespace) -> int:
    """Run ``kincir demo`` with parsed options; print the report; 0 if every check passed."""
    try:
        settings = DemoSettings(
            **{_field(flag): getattr(args, _field(flag)) for flag, *_ in _options()}
        )
    except ValueError as exc:
        print(f"kincir demo: error: {exc}", file=sys.stderr)
        return 2
    report = run_demo(settings)
    print(summary_line(report) if args.quiet else format_report(report))
    return 0 if report.ok else 1
