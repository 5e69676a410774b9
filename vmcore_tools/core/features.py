"""Feature detection: ask drgn what this kernel has, never its version string."""

from __future__ import annotations

import re

import drgn


def vmcoreinfo_numbers(prog: drgn.Program) -> dict[str, int]:
    """``NUMBER(X)=value`` lines of VMCOREINFO (the kernel exports page-type
    values there; arm64 its layout, in hex: ``NUMBER(TCR_EL1_T1SZ)=0x10``)."""
    text = prog["VMCOREINFO"].string_().decode(errors="replace")
    return {m[0]: int(m[1], 0) for m in re.findall(r"^NUMBER\((\w+)\)=(-?(?:0x[0-9a-fA-F]+|\d+))$", text, re.M)}


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


def image_symbol(prog: drgn.Program, name: str) -> int:
    """The address of linker symbol ``name`` of the kernel image, relocated.

    Fact: drgn moves the image's symbols by the KASLR offset
    (VMCOREINFO ``KERNELOFFSET``), but not those the linker script makes
    absolute (``SHN_ABS``): arm64's ``__bss_stop`` and ``_end`` come out at
    their link address, below the relocated ``_text`` by exactly that
    offset, and a span that ends at one of them would end before it
    starts."""
    from drgn.helpers.linux.boot import kaslr_offset
    addr = prog.symbol(name).address
    text = prog.symbol("_text").address
    if addr < text:
        moved = addr + kaslr_offset(prog)
        if text <= moved < text + (1 << 32):      # inside the image (the image is far smaller)
            return moved
    return addr
