"""``kincir demo``: a real pipeline, end to end, that checks and reports what it saw.

Producers → a bounded ``block`` topic → a Router stage → an ack stage with a dead-letter topic
→ a sink, ended by ``close_topic`` and nothing else (see ``pipeline``). ``run_demo`` does the
work and returns a ``DemoReport`` without printing; ``run`` is the command-line handler that
prints it.
"""

from __future__ import annotations

from .checks import AuditCheck as AuditCheck
from .checks import ShippedCheck as ShippedCheck
from .cli import DESCRIPTION as DESCRIPTION
from .cli import HELP as HELP
from .cli import configure_parser as configure_parser
from .cli import run as run
from .pipeline import DemoReport as DemoReport
from .pipeline import run_demo as run_demo
from .report import format_report as format_report
from .report import summary_line as summary_line
from .settings import Check as Check
from .settings import DemoSettings as DemoSettings

__all__ = [
    "DESCRIPTION",
    "HELP",
    "AuditCheck",
    "Check",
    "DemoReport",
    "DemoSettings",
    "ShippedCheck",
    "configure_parser",
    "format_report",
    "run",
    "run_demo",
    "summary_line",
]
