"""What differs between architectures, in one place per architecture:
the format of page-table entries and how the kernel's address space is
laid out over its top-level table.  ``table_format`` picks the module of
the dump's architecture; nothing else in the package asks which one it is.
"""

from __future__ import annotations

import drgn

from vmcore_tools.arch import arm64, x86_64
from vmcore_tools.arch.tables import TableFormat


def irq_stack_ptr_is_base(prog: drgn.Program) -> bool:
    """Whether the per-CPU ``irq_stack_ptr`` names the lowest address of the
    CPU's interrupt stack (arm64: ``irq_stack_ptr``, its ``IRQ_STACK_SIZE``
    bytes above); x86-64's variable of that name (before 5.2, then
    ``hardirq_stack_ptr``) names its top."""
    return prog.platform is not None and prog.platform.arch == drgn.Architecture.AARCH64


def table_format(prog: drgn.Program, page_shift: int) -> TableFormat | None:
    """This dump's page-table format; None for an architecture without one here."""
    arch = prog.platform.arch if prog.platform is not None else None
    if arch == drgn.Architecture.X86_64:
        return x86_64.table_format(prog, page_shift)
    if arch == drgn.Architecture.AARCH64:
        return arm64.table_format(prog, page_shift)
    return None
