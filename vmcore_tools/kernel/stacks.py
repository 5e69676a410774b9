"""Kernel stacks: which part of each stack is live.

A task's stack is live above its saved stack pointer; a CPU's interrupt
stack only while the CPU is on it; the stacks kept for reuse after a task
exits not at all.  The reference scan reads the live parts and nothing else
(``refs.roots``), and reachability reads the same (``refs.objects``).
"""

from __future__ import annotations

from collections.abc import Iterator

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.percpu import per_cpu
from drgn.helpers.linux.sched import cpu_curr

from vmcore_tools.arch import irq_stack_ptr_is_base
from vmcore_tools.core.walk import tasks
from vmcore_tools.core.features import has_member, has_object
from vmcore_tools.mm.memmap import Memmap


def all_tasks(prog: drgn.Program):
    """Every task, including the per-CPU idle tasks that ``for_each_task`` skips."""
    yield from tasks(prog)
    if has_object(prog, "runqueues"):
        for cpu in for_each_possible_cpu(prog):
            idle = per_cpu(prog["runqueues"], cpu).idle
            if idle:
                yield idle


def dead_irq_stack_spans(prog: drgn.Program) -> dict[int, tuple[int, int]]:
    """``[start, end)`` of the dead part of each CPU's interrupt stack: all
    of it for a CPU that is not on it, the part below the stack pointer for
    one that is, where the dump saved the CPU's registers; a CPU on it with
    no saved registers (a live kernel), or a kernel that does not say, is
    left out.

    Facts: x86-64 runs hard and soft interrupts on a per-CPU stack,
    ``irq_stack_backing_store`` (IRQ_STACK_SIZE, a static per-CPU variable,
    so inside the first chunk), and records whether the CPU is on it:
    ``hardirq_stack_inuse`` (5.15+; a member of ``pcpu_hot`` 6.2 to 6.14),
    or ``irq_count`` up to 5.14 (-1 when not).  A CPU that is not in an
    interrupt has nothing live there: what the last one left (the pages of
    a bio it completed, say) is stale.  A CPU that is in one has live
    frames only from its stack pointer to the top: the stack grows down,
    and what deeper handlers left below the pointer is stale.  The CPU
    runs on a second mapping of the same pages (``hardirq_stack_ptr``, the
    top of a vmap'd alias, 5.10+), so its pointer is taken as an offset
    from there; the dump saved it in the CPU's register notes (ELF
    ``NT_PRSTATUS``, what drgn unwinds the CPU's current task from)."""
    if has_object(prog, "irq_stack_ptr") and irq_stack_ptr_is_base(prog):
        return _dead_irq_stack_ptr_spans(prog)
    if not has_object(prog, "irq_stack_backing_store"):
        return {}
    if has_object(prog, "hardirq_stack_inuse"):
        def in_use(cpu: int) -> bool:
            return bool(per_cpu(prog["hardirq_stack_inuse"], cpu))
    elif has_object(prog, "pcpu_hot") and has_member(prog, "struct pcpu_hot", "hardirq_stack_inuse"):
        def in_use(cpu: int) -> bool:
            return bool(per_cpu(prog["pcpu_hot"], cpu).hardirq_stack_inuse)
    elif has_object(prog, "irq_count"):
        def in_use(cpu: int) -> bool:
            return per_cpu(prog["irq_count"], cpu).value_() & 0xFFFF_FFFF != 0xFFFF_FFFF
    else:
        return {}
    out = {}
    for cpu in for_each_possible_cpu(prog):
        stack = per_cpu(prog["irq_stack_backing_store"], cpu)
        start, size = stack.address_, drgn.sizeof(stack)
        if not in_use(cpu):
            out[cpu] = (start, start + size)
        elif (depth := _irq_stack_depth(prog, cpu, size)) is not None:
            out[cpu] = (start, start + depth)
    return out


def _dead_irq_stack_ptr_spans(prog: drgn.Program) -> dict[int, tuple[int, int]]:
    """``dead_irq_stack_spans`` where each CPU's interrupt stack is at its
    per-CPU ``irq_stack_ptr`` (arm64: ``IRQ_STACK_SIZE`` is ``THREAD_SIZE``,
    the stack vmalloc'd with ``VMAP_STACK``).  The kernel keeps no flag of
    whether a CPU is on it: a CPU whose saved stack pointer lies on it is,
    and its live frames are those above the pointer; one whose pointer lies
    elsewhere is not, and all of its interrupt stack is dead.  Where the
    dump saved no registers (a live kernel), a CPU whose current task is
    in no interrupt (``_may_be_in_interrupt``) is not on it either; any
    other CPU is left out."""
    size = thread_size(prog, prog["PAGE_SHIFT"].value_())
    out = {}
    for cpu in for_each_possible_cpu(prog):
        base = per_cpu(prog["irq_stack_ptr"], cpu).value_()
        if not base:
            continue
        sp = _saved_sp(prog, cpu)
        if sp is not None:
            out[cpu] = (base, sp) if base <= sp < base + size else (base, base + size)
        elif not _may_be_in_interrupt(prog, cpu):
            out[cpu] = (base, base + size)
    return out


#: the bits of ``preempt_count`` a CPU on its interrupt stack has set
#: (include/linux/preempt.h: 8 preemption bits, then 8 softirq bits whose
#: lowest, SOFTIRQ_OFFSET, is "serving a softirq" -- the others count
#: local_bh_disable() -- then 4 hardirq bits and 4 NMI bits)
IN_INTERRUPT_BITS = (1 << 8) | (0xF << 16) | (0xF << 20)


def _may_be_in_interrupt(prog: drgn.Program, cpu: int) -> bool:
    """Whether ``cpu``'s current task may be in an interrupt, by its
    ``thread_info.preempt_count`` (arm64 keeps it there, not per CPU);
    True where the kernel does not say.

    Fact: arm64 switches to the interrupt stack only inside an interrupt:
    ``el1_interrupt``/``el0_interrupt`` call ``irq_enter_rcu()`` (a
    HARDIRQ_OFFSET; ``arm64_enter_nmi`` adds NMI_OFFSET) before
    ``do_interrupt_handler`` moves to it, and ``do_softirq_own_stack``
    moves to it only to run ``__do_softirq``, which holds SOFTIRQ_OFFSET.
    A task with none of those bits is on its own stack."""
    if not has_member(prog, "struct thread_info", "preempt_count"):
        return True
    try:
        count = cpu_curr(prog, cpu).thread_info.preempt_count.value_()
    except (drgn.FaultError, LookupError, ValueError):
        return True
    return bool(count & IN_INTERRUPT_BITS)


def _saved_sp(prog: drgn.Program, cpu: int) -> int | None:
    """The stack pointer the dump saved for ``cpu`` (ELF ``NT_PRSTATUS``,
    what drgn unwinds the CPU's current task from): ``rsp`` or ``sp``; None
    where it saved none (a live kernel)."""
    try:
        frame = prog.stack_trace(cpu_curr(prog, cpu))[0]
    except (ValueError, LookupError, drgn.FaultError):
        return None
    for name in ("rsp", "sp"):
        try:
            return frame.register(name)
        except (ValueError, LookupError):
            continue
    return None


def _irq_stack_depth(prog: drgn.Program, cpu: int, size: int) -> int | None:
    """How far below the top of its interrupt stack a CPU on it stands:
    its saved stack pointer's offset in the stack's vmap'd alias, or None
    where the dump saved no registers for the CPU or the pointer is not on
    that stack."""
    if has_object(prog, "hardirq_stack_ptr"):
        top = per_cpu(prog["hardirq_stack_ptr"], cpu).value_()
    elif has_object(prog, "pcpu_hot") and has_member(prog, "struct pcpu_hot", "hardirq_stack_ptr"):
        top = per_cpu(prog["pcpu_hot"], cpu).hardirq_stack_ptr.value_()
    else:
        return None
    sp = _saved_sp(prog, cpu)
    if sp is None:                          # no saved registers (a live kernel)
        return None
    base = top + 8 - size                   # hardirq_stack_ptr is the top word's address
    return sp - base if base <= sp < base + size else None


def thread_size(prog: drgn.Program, page_shift: int) -> int:
    """Bytes of a task stack (``THREAD_SIZE``; 4 pages where DWARF lacks the macro)."""
    return prog["THREAD_SIZE"].value_() if has_object(prog, "THREAD_SIZE") else 4 << page_shift


def live_stack_spans(prog: drgn.Program, page_shift: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of the live part of each task's stack: from its saved
    stack pointer (``thread.sp``) to the top.  The part below is dead
    frames, full of stale pointers.  A task that was running has no saved
    SP we trust: all of its stack."""
    size = thread_size(prog, page_shift)
    # where the switch saved a sleeping task's stack pointer: thread.sp
    # (x86-64's __switch_to_asm), thread.cpu_context.sp (arm64's cpu_switch_to)
    if has_member(prog, "struct thread_struct", "sp"):
        def saved(task: drgn.Object) -> int:
            return task.thread.sp.value_()
    elif has_member(prog, "struct thread_struct", "cpu_context"):
        def saved(task: drgn.Object) -> int:
            return task.thread.cpu_context.sp.value_()
    else:
        saved = None
    has_on_cpu = has_member(prog, "struct task_struct", "on_cpu")
    for task in all_tasks(prog):
        base = task.stack.value_()
        if not base:
            continue
        lo = base
        running = task.on_cpu.value_() if has_on_cpu else 1
        if saved is not None and not running:
            sp = saved(task)
            if base <= sp < base + size:
                lo = sp
        yield lo, base + size


def cached_stack_pfns(prog: drgn.Program, a: Memmap) -> np.ndarray:
    """Pages of the per-CPU ``cached_stacks``: stacks of exited tasks kept
    for reuse, still vmalloc'd but full of dead frames."""
    if not has_object(prog, "cached_stacks"):
        return np.zeros(0, np.int64)
    stack_pages = thread_size(prog, a.page_shift) >> a.page_shift
    out = []
    for cpu in for_each_possible_cpu(prog):
        for slot in per_cpu(prog["cached_stacks"], cpu):
            # the slot's pointer is read once: on a live kernel fork takes
            # the stack (the slot becomes NULL) and exit puts one back
            vm = slot.read_()
            try:
                if not vm:
                    continue
                pages, nr = vm.pages.value_(), vm.nr_pages.value_()
                if not pages or not 0 < nr <= stack_pages:
                    continue
                ptrs = np.frombuffer(prog.read(pages, 8 * nr), "<u8")
            except drgn.FaultError:         # a stack freed while we read it
                continue
            out.append(a.pfns_of_page_ptrs(ptrs))
    return np.concatenate(out) if out else np.zeros(0, np.int64)
