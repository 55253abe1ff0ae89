"""kincir's command line: ``kincir`` (the console script) and ``python -m kincir``.

Each subcommand is a ``Command`` in ``COMMANDS``: a name, one line of help, a function that adds
its options to its subparser, and a function that runs it with the parsed options and returns
the exit code. Adding a subcommand is one more entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import kincir
from kincir import demo

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "kincir"


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One subcommand of ``kincir``."""

    #: The word that selects it: ``kincir NAME``.
    name: str
    #: One line shown by ``kincir --help``.
    help: str
    #: Adds the subcommand's options to its subparser.
    configure: Callable[[argparse.ArgumentParser], None]
    #: Runs it with the parsed options and returns the process exit code.
    run: Callable[[argparse.Namespace], int]
    #: Longer text for ``kincir NAME --help``; ``help`` when None.
    description: str | None = None


#: The subcommands, in the order ``kincir --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("demo", demo.HELP, demo.configure_parser, demo.run, demo.DESCRIPTION),
    Command(
        "bench",
        "measure kincir against the standard library's queues, with the project's goals",
        lambda parser: _bench_cli().configure_parser(parser),
        lambda args: _bench_cli().run(args),
    ),
)


def _bench_cli() -> ModuleType:
    """``kincir.bench.cli``, imported when the ``bench`` command is configured or run: the
    benchmark is a tool beside the library, never on its import path."""
    from kincir.bench import cli

    return cli


def version_text() -> str:
    """What ``kincir --version`` prints: the version and the engine in use."""
    return f"{PROG} {kincir.__version__} (engine: {kincir.IMPLEMENTATION})"


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="kincir: an in-process message broker for Python.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(
        title="commands",
        dest="command",
        metavar="COMMAND",
        required=True,
    )
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
        )
        command.configure(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the chosen command, return its exit code.

    ``--help``, ``--version`` and usage errors return argparse's exit code (0 or 2) instead of
    raising ``SystemExit``; Ctrl-C returns 130.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    run: Callable[[argparse.Namespace], int] = args._run
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
