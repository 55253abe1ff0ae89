"""Which kernel runs: the compiled one (``_broker``/``_message``) or its pure-Python twin.

The kernel is the only part of the engine written twice; everything above it (``_topics.py``,
``_subscriptions.py``, ``_validate.py``) is written once and runs on either.
``KINCIR_NO_EXTENSIONS`` set to anything but ``""`` or ``"0"`` asks for the twin; so does a
missing extension.
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING

if _os.environ.get("KINCIR_NO_EXTENSIONS", "") not in ("", "0"):
    _compiled = False
else:
    try:
        from . import _broker, _message  # noqa: F401  (probe: are the extensions built?)
    except ImportError:
        _compiled = False
    else:
        _compiled = True

if TYPE_CHECKING or _compiled:
    from . import _broker as kernel
    from ._message import Message, restore_message

    IMPLEMENTATION = "cython"
else:
    from . import _broker_py as kernel  # type: ignore[no-redef]
    from ._message_py import Message, restore_message  # type: ignore[assignment]

    IMPLEMENTATION = "python"

__all__ = ["IMPLEMENTATION", "Message", "kernel", "restore_message"]
