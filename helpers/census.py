"""drgn script: page census of the program drgn opened.

    drgn -c vmcore -s vmlinux helpers/census.py
    drgn -s vmlinux helpers/census.py            # live, /proc/kcore

In a drgn REPL: ``exec(open("helpers/census.py").read())`` or
``from vmcore_tools import census; c = census(prog)``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmcore_tools.census.census import census  # noqa: E402
from vmcore_tools.cli.texts import census_text  # noqa: E402

c = census(prog)  # noqa: F821 (drgn provides prog)
print(census_text(c))
