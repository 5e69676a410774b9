"""Module debug info and module symbols, loaded when an analysis needs them.

vmlinux's DWARF is loaded when a program is opened (:func:`target.open_program`).
A module's DWARF is loaded the first time a walker needs its types, which is
when a device is bound to its driver.  The other modules' DWARF is never
read.

Fact: a production kernel has dozens to hundreds of modules loaded, and their
debug info is large.  Debian's ``ice.ko`` alone carries 30 MB of DWARF.  On
the sample cores, which load five Intel drivers that bind no device, loading
every module cost 80 MB of RSS before a single page was read (see
benchmarks/RESULTS.md).

Symbols need no DWARF: a loaded module keeps its own ELF symbol table in
kernel memory for kallsyms (``struct module.kallsyms``, CONFIG_KALLSYMS).
:func:`use_module_kallsyms` makes drgn consult it, module by module, for an
address no debug info covers.  So a reference in a module's data or a vmalloc
caller in its text gets a name even when that module's debug info was never
loaded, or is not available at all.

drgn's module API does the loading: ``Program.load_module_debug_info`` asks
the enabled debug info finders in order.  The first is ours
(:func:`use_module_files`), which tries the files given with ``-d``.  When no
vmlinux was given, drgn's standard finder (``/usr/lib/debug``, build ids)
comes after it.

    >>> from vmcore_tools.debuginfo import load_module_debug_info
    >>> load_module_debug_info(prog, ["ice"])     # for a REPL session
    []
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import drgn
from drgn.helpers.linux.kallsyms import module_kallsyms
from drgn.helpers.linux.module import find_module

FILE_FINDER = "vmcore-tools files"
KALLSYMS_FINDER = "vmcore-tools module kallsyms"

_SUFFIXES = (".ko.debug", ".ko")


def module_name_of_file(path: str | os.PathLike) -> str | None:
    """The name a module file's module has in the kernel, or None for a file
    that is not a module.

    Fact: the kernel names a module after its file, without ``.ko``, with
    every ``-`` turned into ``_`` (``i2c-algo-bit.ko`` is ``i2c_algo_bit``).
    """
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("-", "_")
    return None


def module_files(paths: Iterable[str | os.PathLike]) -> dict[str, list[str]]:
    """Module name -> the given files that may be its debug info.  A
    directory is searched for ``*.ko`` and ``*.ko.debug``."""
    out: dict[str, list[str]] = {}
    for p in paths:
        path = Path(p)
        files = sorted(f for suffix in _SUFFIXES for f in path.rglob("*" + suffix)) if path.is_dir() else [path]
        for f in files:
            name = module_name_of_file(f)
            if name is not None:
                out.setdefault(name, []).append(str(f))
    return out


def use_module_files(prog: drgn.Program, files: dict[str, list[str]], *, only: bool) -> None:
    """Make ``files`` (from :func:`module_files`) the first place drgn looks
    for a module's debug info.  ``only``: the sole place (the user named the
    kernel's debug info, so nothing is searched behind their back)."""
    def find(modules: Sequence[drgn.Module]) -> None:
        for module in modules:
            for path in files.get(module.name, ()):
                if not module.wants_debug_file():
                    break
                module.try_file(path)      # ignored unless its build id matches

    prog.register_debug_info_finder(FILE_FINDER, find, enable_index=0)
    if only:
        prog.set_enabled_debug_info_finders([FILE_FINDER])


@contextmanager
def quiet_drgn() -> Iterator[None]:
    """drgn's log below errors: it warns about every module whose debug info
    is not found, and a missing module is reported by the analysis that
    needed it."""
    log = logging.getLogger("drgn")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def module_at(prog: drgn.Program, address: int) -> str | None:
    """Name of the loadable module whose memory holds ``address``; None for
    the kernel itself (drgn's main module, "kernel" or "vmlinux") or no module."""
    try:
        name = prog.module(address).name
    except LookupError:
        return None
    return None if name in ("vmlinux", "kernel") else name


def load_module_debug_info(prog: drgn.Program, names: Iterable[str]) -> list[str]:
    """Load the debug info of the loaded modules named ``names`` that lack
    it.  Returns the names still without debug info; a module that is not
    loaded has none to load and is not listed."""
    wanted = []
    for name in dict.fromkeys(names):
        try:
            module = prog.module(name)
        except LookupError:
            continue
        if module.wants_debug_file():
            wanted.append(module)
    if wanted:
        with quiet_drgn():
            prog.load_module_debug_info(*wanted)
    return [m.name for m in wanted if m.wants_debug_file()]


def use_module_kallsyms(prog: drgn.Program) -> None:
    """Let drgn name an address in a module whose debug info is not loaded,
    from the module's kallsyms table (parsed once per module, on first use).

    Only lookups by address are answered: a lookup by name would have to
    parse every module's table, and our analyses look modules' symbols up by
    address only.  The finder comes last, so loaded debug info wins.
    """
    if KALLSYMS_FINDER in prog.registered_symbol_finders():
        return
    tables: dict[str, drgn.SymbolIndex | None] = {}

    def find(prog: drgn.Program, name: str | None, address: int | None, one: bool) -> list[drgn.Symbol]:
        if address is None:
            return []
        try:
            module = prog.module(address)
        except LookupError:
            return []
        if module.name not in tables:
            tables[module.name] = _kallsyms_index(prog, module.name)
        table = tables[module.name]
        return table(prog, name, address, one) if table is not None else []

    prog.register_symbol_finder(KALLSYMS_FINDER, find, enable_index=-1)


def _kallsyms_index(prog: drgn.Program, name: str) -> drgn.SymbolIndex | None:
    try:
        mod = find_module(prog, name)
        if not mod:
            return None
        return drgn.SymbolIndex(module_kallsyms(mod))
    except (drgn.FaultError, LookupError, AttributeError, ValueError):
        return None
