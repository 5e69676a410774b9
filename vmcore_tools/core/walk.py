"""Bounded walks: every list, tree and chain the tool follows in a dump.

A vmcore is taken because the kernel crashed, and a kernel crashes most
often after something wrote where it should not: a list whose links form a
cycle away from its head, a pointer into nowhere.  drgn's iterators follow
such a list forever.  So every walk goes through ``bounded``: it stops at
the first entry it has seen before (a cycle) or past a bound taken from the
kernel's own figures (a count it keeps, or how many such objects the memory
could hold: ``max_objects``), and says where.

What it says becomes a problem line of the stage the walk runs in
(``stages.run_stage``), which keeps what the walk found before the damage
and goes on; the result is then partial (exit code 3) and the coverage
names the stage.  A walk outside any stage raises ``DamagedStructure``,
which the command's guard turns into one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import drgn
from drgn.helpers.linux.pid import for_each_task

from vmcore_tools.core.features import has_object
from vmcore_tools.core.stages import record_damage

T = TypeVar("T")


class DamagedStructure(Exception):
    """A structure of the dump that no kernel writes: a cyclic list, a
    count past its bound."""


def address_of(entry: object) -> int:
    """What identifies an entry of a walk: the address of a drgn object (a
    pointer's value, or where a structure lies), the second item of an
    ``(index, entry)`` pair (xarray walks), or the integer itself."""
    if isinstance(entry, tuple):
        entry = entry[-1]
    if isinstance(entry, drgn.Object):
        if entry.type_.unaliased_kind() == drgn.TypeKind.POINTER:
            return entry.value_()
        return entry.address_ if entry.address_ is not None else id(entry)
    return int(entry)


def bounded(entries: Iterable[T], what: str, limit: int,
            key: Callable[[T], int] = address_of) -> Iterator[T]:
    """The entries of a walk over ``what`` (a list or tree of the dump),
    up to the first one seen before or the ``limit``-th: each is yielded
    once, and the damage, if any, is said (``damaged``)."""
    seen: set[int] = set()
    n = 0
    for entry in entries:
        at = key(entry)
        if at in seen:
            damaged(what, f"cycle at {at:#x}: walk stopped after {n} entries")
            return
        if n >= limit:
            damaged(what, f"more than {limit} entries (at {at:#x}): walk stopped")
            return
        seen.add(at)
        n += 1
        yield entry


def damaged(what: str, how: str) -> None:
    """Say that ``what`` is damaged: a problem line of the running stage, or
    ``DamagedStructure`` outside one."""
    if not record_damage(f"{what} is damaged: {how}"):
        raise DamagedStructure(f"{what} is damaged: {how}")


def max_objects(prog: drgn.Program, size: int) -> int:
    """How many objects of ``size`` bytes memory could hold: the bound of a
    walk whose kernel keeps no count (``max_pfn`` pages)."""
    return (prog["max_pfn"].value_() * _page_size(prog)) // max(size, 1)


def max_entries(prog: drgn.Program, type_name: str) -> int:
    """``max_objects`` for objects of ``type_name`` (one per page if the type is unknown)."""
    try:
        size = drgn.sizeof(prog.type(type_name))
    except LookupError:
        size = _page_size(prog)
    return max_objects(prog, size)


def _page_size(prog: drgn.Program) -> int:
    return prog["PAGE_SIZE"].value_() if has_object(prog, "PAGE_SIZE") else 4096


def max_pages(prog: drgn.Program) -> int:
    """How many pages there are (``max_pfn``): the bound of a list of pages."""
    return prog["max_pfn"].value_()


def xa_index(entry: tuple[int, drgn.Object]) -> int:
    """The key of an xarray walk's ``(index, entry)``: the index, since a
    multi-index entry (a range of PFNs) repeats its pointer."""
    return entry[0]


def tasks(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every task of the pid table (``for_each_task``), bounded by
    ``pid_max``: no more tasks than pids."""
    limit = prog["pid_max"].value_() if has_object(prog, "pid_max") else max_entries(prog, "struct task_struct")
    return bounded(for_each_task(prog), "the task list (pid table)", limit)
