"""drgn script: NIC rx rings and the pages they hold.

    drgn -c vmcore -s vmlinux helpers/rings.py

In a drgn REPL: ``from vmcore_tools import rings; scan = rings(prog)``; each
``scan.rings[i]`` has ``slot``, ``pfn``, ``offset`` and ``bias`` arrays.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmcore_tools.census.census import census  # noqa: E402
from vmcore_tools.cli.texts import rings_text  # noqa: E402

c = census(prog)  # noqa: F821 (drgn provides prog)
print(rings_text({"rings": c.ring_rows(), "walked": c.rings.walked, "problems": c.rings.problems}))
