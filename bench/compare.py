"""Side-by-side ratios of kincir against the standard library's queues, from a checkout.

    python bench/compare.py --quick
    python bench/compare.py --only W1,W3 --repeat 7 --json results.json

The same instrument as ``kincir bench`` (``kincir.bench``), with the same options; this script
only puts the checkout's ``src/`` and engine ahead of any installed kincir, so that it measures
the code in front of you (the table's first line names the engine that was loaded: build the
extension in place with ``python setup.py build_ext --inplace`` to measure the compiled one).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for entry in (ROOT, ROOT / "src"):  # src/ ends up first: kincir, then kincir_core
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from kincir.__main__ import main  # noqa: E402  (after the path set-up above)

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
