"""Feature detection: ask drgn what this kernel has, never its version string."""

from __future__ import annotations

import re

import drgn


def vmcoreinfo_numbers(prog: drgn.Program) -> dict[str, int]:
    """``NUMBER(X)=value`` lines of VMCOREINFO (the kernel exports page-type values there)."""
    text = prog["VMCOREINFO"].string_().decode(errors="replace")
    return {m[0]: int(m[1]) for m in re.findall(r"^NUMBER\((\w+)\)=(-?\d+)$", text, re.M)}


def has_member(prog: drgn.Program, type_name: str, member: str) -> bool:
    try:
        return prog.type(type_name).has_member(member)
    except LookupError:
        return False


def constant(prog: drgn.Program, name: str) -> int | None:
    """An enumerator's value from DWARF, or None if this kernel has no such constant."""
    try:
        return prog.constant(name).value_()
    except (KeyError, LookupError):
        return None


def has_object(prog: drgn.Program, name: str) -> bool:
    """Whether the kernel (or a loaded module) has a variable, function or constant ``name``."""
    try:
        prog[name]
        return True
    except KeyError:
        return False


def has_type(prog: drgn.Program, name: str) -> bool:
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def has_symbol(prog: drgn.Program, name: str) -> bool:
    """Whether the ELF symbol table has ``name`` (linker symbols such as ``_sdata`` have no DWARF)."""
    try:
        prog.symbol(name)
        return True
    except LookupError:
        return False


def kernel_release(prog: drgn.Program) -> str:
    """The kernel's release string (``uname -r``), from ``init_uts_ns``."""
    return prog["init_uts_ns"].name.release.string_().decode(errors="replace")
