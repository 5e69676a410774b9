"""The ``vmcore-tools`` commands inside drgn: a drgn plugin.

drgn imports every module named in the ``drgn.plugins`` entry-point group
when it starts (pyproject.toml names this one), so the commands are there in
the drgn REPL and in ``drgn-crash`` with no setup::

    >>> %vmcore-tools report
    >>> %vmcore-tools page 0x3fe22 --json > page.json
    crash> vmcore-tools orphans --top 5

The command line is the shell's (``vmcore-tools --help``), run on the
program the session already has open, so ``-c``/``-s``/``-d`` are not taken.
drgn does the redirections and pipes.

drgn 0.3.0 exports ``command`` but keeps its crash-command namespace in a
private module (``drgn.commands._crash.common``).  That one import is
guarded: a drgn that moves it loses the ``crash>`` form of the command, not
the plugin.
"""

from __future__ import annotations

import argparse
from typing import Any

from drgn import Program
from drgn.commands import argument, command

try:
    from drgn.commands._crash.common import crash_command
except ImportError:             # a drgn that keeps its crash namespace elsewhere
    crash_command = None

from vmcore_tools.cli.main import run_on

_ARGUMENTS = (argument("args", nargs=argparse.REMAINDER, help="a vmcore-tools command line"),)
_DESCRIPTION = "where did every page go, and who leaked it (vmcore-tools)"


def _run(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> int:
    return run_on(prog, args.args or ["--help"])


command(name="vmcore-tools", description=_DESCRIPTION, arguments=_ARGUMENTS)(_run)
if crash_command is not None:
    crash_command(name="vmcore-tools", description=_DESCRIPTION, arguments=_ARGUMENTS)(_run)
