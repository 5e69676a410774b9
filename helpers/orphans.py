"""drgn script: orphaned pages (allocated, unowned, unreferenced) with suspects.

    drgn -c vmcore -s vmlinux helpers/orphans.py
    drgn -s vmlinux helpers/orphans.py           # live, /proc/kcore

In a drgn REPL: ``from vmcore_tools import orphans; r = orphans(prog)``, then
``r.suspects``, ``r.orphans`` (pfn, order, refcount, frame, suspect, and
``page_owner``: the allocating task and stack when the kernel runs with
``page_owner=on``) and ``r.referenced`` (pages someone still points at, and
where).  ``from vmcore_tools.mm.page_owner import PageOwners`` reads the record
of any page: ``PageOwners(prog).lookup([pfn])``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmcore_tools.cli.texts import orphans_text  # noqa: E402
from vmcore_tools.leaks.orphans import orphans  # noqa: E402

r = orphans(prog)  # noqa: F821 (drgn provides prog)
print(orphans_text(r, top=20))
