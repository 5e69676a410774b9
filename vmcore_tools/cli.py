"""The ``vmcore-tools`` command line.

Every command takes the same target options (live kernel by default, or
``-c VMCORE``) and ``--json``.  Exit codes: 0 ok, 2 usage or input error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import click
import drgn
from tabulate import tabulate

from .census import Census, census as run_census
from .classify import KERNEL_CLASSES
from .features import has_object, has_type
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


@contextmanager
def _reading(target: str | None):
    """Turn a fault while reading kernel memory into a one-line error (exit 2)."""
    try:
        yield
    except drgn.FaultError as e:
        hint = "the core is truncated" if "short read" in str(e) else "the core lacks memory the analysis needs"
        click.echo(f"vmcore-tools: error: {target or '/proc/kcore'}: {hint} ({e})", err=True)
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
    with _reading(core):
        _info(prog, core, as_json)


def _info(prog: drgn.Program, core: str | None, as_json: bool) -> None:
    uts = prog["init_uts_ns"].name
    page_size = prog["PAGE_SIZE"].value_() if has_object(prog, "PAGE_SIZE") else 4096
    data = {
        "target": core or "/proc/kcore",
        "release": uts.release.string_().decode(),
        "machine": uts.machine.string_().decode(),
        "page_size": page_size,
        "totalram_pages": _totalram_pages(prog),
        "i40e_types": has_type(prog, "struct i40e_ring"),
    }
    _emit(data, as_json, lambda d: "\n".join(f"{k:15} {v}" for k, v in d.items()))


def _totalram_pages(prog: drgn.Program) -> int:
    """``_totalram_pages`` is an atomic_long_t since 5.0 (``totalram_pages`` before)."""
    if has_object(prog, "_totalram_pages"):
        return prog["_totalram_pages"].counter.value_()
    return prog["totalram_pages"].value_()


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(what: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        click.echo(f"\r{what}: {done * 100 // max(total, 1):3d}% ({done}/{total} pages)", err=True, nl=False)
        if end:
            click.echo("", err=True)
    return show


def _mib(pages: int, page_size: int) -> str:
    return f"{pages * page_size / 2**20:,.1f}"


def census_text(c: Census) -> str:
    d = c.to_json()
    ps = d["page_size"]
    total = d["total_pages"]
    rows = sorted(d["classes"].items(), key=lambda kv: -kv[1])
    kernel = {k.label for k in KERNEL_CLASSES}
    out = [f"Page census of {d['release']}: {total} pages ({_mib(total, ps)} MiB)", ""]
    out.append(tabulate(
        [(name + (" *" if name in kernel else ""), n, _mib(n, ps), f"{100 * n / total:.1f}")
         for name, n in rows if n],
        headers=["class (* kernel)", "pages", "MiB", "%"], intfmt=",", disable_numparse=True))
    dec = d["decomposition"]
    out += ["", "T = U + K + S + C + F  (total = user + kernel + shared + cache + free)",
            "  " + " + ".join(f"{k} {_mib(dec[k], ps)}" for k in "UKSCF") + f"  =  T {_mib(dec['T'], ps)} MiB"]
    un = d["classes"]["unattributed"]
    out.append(f"  unexplained kernel memory: \033[1m{_mib(un, ps)} MiB ({un} pages)\033[0m"
               if sys.stdout.isatty() else f"  unexplained kernel memory: {_mib(un, ps)} MiB ({un} pages)")
    out += ["", "Free memory by zone (buddyinfo: free blocks per order)"]
    out.append(tabulate([(f"Node {z['node']}, zone {z['zone']}", *z["free_blocks"], z["pcp_pages"])
                         for z in d["zones"]],
                        headers=["zone", *range(len(d["zones"][0]["free_blocks"])), "pcp pages"]))
    cmp_rows = [(name, value, _ours(d["classes"], name, ps)) for name, value in d["counters"].items()]
    out += ["", "Census against the kernel's own counters (pages)"]
    out.append(tabulate(cmp_rows, headers=["counter", "kernel", "census"]))
    if d["problems"]:
        out += ["", "Problems found:"] + [f"  - {p}" for p in d["problems"]]
    return "\n".join(out)


def _ours(classes: dict[str, int], counter: str, page_size: int) -> int | str:
    """The census figure a kernel counter should be compared with."""
    return {
        "free": classes["free"],
        "slab": classes["slab"],
        "file": classes["file"] + classes["shmem"],
        "shmem": classes["shmem"],
        "anon": classes["anon"],
        "page_tables": classes["page_table"],
        "kernel_stack_kb": classes["kernel_stack"] * page_size // 1024,
        "vmalloc": classes["vmalloc"] + classes["kernel_stack"],
    }.get(counter, "")


@main.command()
@target_options
@click.option("--quiet", is_flag=True, help="no progress on stderr")
def census(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Every physical page classified by owner, reconciled with the kernel's counters."""
    prog = _open(core, vmlinux, debug_dirs)
    with _reading(core):
        c = run_census(prog, _progress(quiet))
    _emit(c.to_json(), as_json, lambda _: census_text(c))
if __name__ == "__main__":
    main()
