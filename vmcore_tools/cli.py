"""The ``vmcore-tools`` command line.

Every command takes the same target options (live kernel by default, or
``-c VMCORE``) and ``--json``.  Exit codes: 0 ok, 2 usage or input error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
import drgn

from .target import TargetError, open_program


def target_options(f: Callable) -> Callable:
    f = click.option("-c", "--core", type=click.Path(dir_okay=False),
                     help="vmcore to analyze (ELF or kdump-compressed); default: the running kernel")(f)
    f = click.option("-s", "--vmlinux", type=click.Path(dir_okay=False),
                     help="kernel debug info (vmlinux with DWARF)")(f)
    f = click.option("-d", "--debug-dir", "debug_dirs", multiple=True, type=click.Path(),
                     help="module debug info: a .ko file or a directory of them (repeatable)")(f)
    f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    return f


def _open(core, vmlinux, debug_dirs) -> drgn.Program:
    try:
        return open_program(core, vmlinux, debug_dirs)
    except TargetError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(2)


def _emit(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    click.echo(json.dumps(data, indent=1) if as_json else text(data))


@click.group()
@click.version_option(package_name="vmcore-tools")
def main() -> None:
    """Where did every page go, and who leaked it?"""


@main.command()
@target_options
def info(core, vmlinux, debug_dirs, as_json) -> None:
    """Kernel release, memory size and what debug info is loaded."""
    prog = _open(core, vmlinux, debug_dirs)
    uts = prog["init_uts_ns"].name
    page_size = prog["PAGE_SIZE"].value_() if _has(prog, "PAGE_SIZE") else 4096
    data = {
        "target": core or "/proc/kcore",
        "release": uts.release.string_().decode(),
        "machine": uts.machine.string_().decode(),
        "page_size": page_size,
        "totalram_pages": _totalram_pages(prog),
        "i40e_types": _has_type(prog, "struct i40e_ring"),
    }
    _emit(data, as_json, lambda d: "\n".join(f"{k:15} {v}" for k, v in d.items()))


def _has(prog: drgn.Program, name: str) -> bool:
    try:
        prog[name]
        return True
    except KeyError:
        return False


def _has_type(prog: drgn.Program, name: str) -> bool:
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def _totalram_pages(prog: drgn.Program) -> int:
    """``_totalram_pages`` is an atomic_long_t since 5.0 (``totalram_pages`` before)."""
    if _has(prog, "_totalram_pages"):
        return prog["_totalram_pages"].counter.value_()
    return prog["totalram_pages"].value_()
