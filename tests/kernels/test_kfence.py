"""Objects KFENCE served, on real kernels with KFENCE on.

vmct_kfence allocates kmalloc() objects until six come from the KFENCE
pool (``kfence.sample_interval=100``): three it keeps, each holding a page,
and three it frees, each still holding a page nobody else points to.
KFENCE's pool is memblock memory; an object sits at its page's start or
against its end, and a freed one keeps its bytes and its page's slab fields
(``mm.kfence``).  So a kept object's page is held, through the object, and a
freed object's page is lost.
"""

from __future__ import annotations

import re

import pytest

from vmcore_tools import orphans
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.reachability import reachability

from ..conftest import lines, sample_core

pytestmark = pytest.mark.vm
#: Debian's kernels with CONFIG_KFENCE (6.1's has none)
KFENCE_LINES = ("6.12", "7.3")
OBJECT_RE = re.compile(r"vmct_kfence: object=([0-9a-f]+) side=(\w+) kind=(\w+)")


@pytest.fixture(scope="module", params=lines(KFENCE_LINES, ci=("6.12",)))
def kfence(request):
    core = sample_core("kfence", request.param)
    return core, orphans(core.program())


def objects(core) -> dict[str, list[tuple[int, str]]]:
    """The module's objects by kind ("kept", "freed"): (address, side)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for addr, side, kind in OBJECT_RE.findall((core.path / "dmesg.txt").read_text()):
        out.setdefault(kind, []).append((int(addr, 16), side))
    return out


def test_a_page_held_by_a_kfence_object_is_held_and_one_a_freed_object_names_is_orphaned(kfence):
    core, r = kfence
    kept = [o["pfn"] for o in core.manifest["owned"] if o["kind"] == "kfence-held"]
    lost = {x["pfn"] for x in core.manifest["planted_leaks"] if x["ring"] == "kfence-freed"}
    assert len(kept) == 3 and len(lost) == 3
    referenced = {x.pfn: x.references for x in r.referenced}
    orphaned = {o.pfn for o in r.orphans}
    addrs = {a for a, _ in objects(core)["kept"]}
    for pfn in kept:
        assert pfn in referenced and pfn not in orphaned, pfn
        # held from inside one of the kept objects, named with its real start
        assert any(ref.holder in addrs and ref.where == f"slab kmalloc-192 object {ref.holder:#x}+0x18"
                   for ref in r.references[pfn]), r.references[pfn]
    assert lost <= orphaned, lost - orphaned
    assert orphaned == set(core.expected_orphans()), orphaned ^ set(core.expected_orphans())
    assert not any(line.startswith("KFENCE") for line in map(str, r.problems)), r.problems


def test_the_pool_is_boot_memory_and_its_objects_are_read_exactly(kfence):
    """The pool is reserved in the census (memblock memory, as the kernel
    counts it), and the scan reads its objects in use and nothing else of
    it: the bytes the KFENCE root read are the objects' sizes."""
    core, r = kfence
    from vmcore_tools.mm.slab import SlabObjects
    pool = SlabObjects(r.census.prog, r.census.memmap).kfence
    assert pool is not None and pool.addr.size == 255      # CONFIG_KFENCE_NUM_OBJECTS
    assert set(r.census.classes[pool.pfns(r.census.memmap)].tolist()) == {int(PageClass.RESERVED)}
    sides = {side for _, side in objects(core)["kept"] + objects(core)["freed"]}
    assert sides <= {"left", "right"}
    spans = pool.allocated_spans()
    assert r.scan.bytes_by_root["KFENCE objects"] == sum((hi - ((lo + 7) & ~7)) & ~7 for lo, hi in spans)
    kept = {a for a, _ in objects(core)["kept"]}
    freed = {a for a, _ in objects(core)["freed"]}
    starts = {lo for lo, _ in spans}
    assert kept <= starts and not freed & starts
    # the pool's pages the scan read nothing of: its guard pages and the pages of free objects
    # (and of objects too short to hold a pointer)
    read = sum(hi - ((lo + 7) & ~7) >= 8 for lo, hi in spans)
    assert r.scan.boot_memory_not_read["KFENCE pool"] == (pool.pfns(r.census.memmap).size - read) * pool.page_size
    # every object lies in its own page, and a right-placed one ends within it
    assert all((lo - pool.start) // pool.page_size == (hi - 1 - pool.start) // pool.page_size for lo, hi in spans)


def test_an_object_kfence_served_is_traced(kfence):
    """Reachability numbers the objects in use as objects (the kept ones
    are reached from the module's array: none of them is called
    unreachable), and without tracing them what they point to is called
    unreachable."""
    core, r = kfence
    rr = reachability(r)
    kept = {a for a, _ in objects(core)["kept"]}
    assert not kept & {a for c in rr.caches for a in c.samples}
    assert rr.unreachable < reachability(r, without=frozenset({"KFENCE objects"})).unreachable


def test_a_damaged_metadata_entry_is_said_and_the_rest_read(kfence):
    """One ``kfence_metadata`` entry's ``addr`` overwritten (a stray write):
    the entry is counted damaged, the entries after it are still read (a
    good entry follows it: it is inside the array), and the scan says the
    damage as a partial result."""
    from vmcore_tools.core.stages import StageDamaged
    from vmcore_tools.mm.kfence import kfence_pool
    from vmcore_tools.mm.memmap import Memmap

    from .damage import damage, physical
    core, _ = kfence
    prog = core.program()
    m = Memmap.from_program(prog)
    clean = kfence_pool(prog, m)
    assert clean is not None and not clean.damaged
    i = len(clean.addr) // 2
    entry = prog["kfence_metadata"][i]       # an array up to 6.5, a pointer from 6.6
    damage(prog, [(physical(prog, entry.addr.address_), (0xdead000000000100).to_bytes(8, "little"))])
    hurt = kfence_pool(prog, Memmap.from_program(prog))
    assert hurt.damaged == (i,) and len(hurt.addr) == len(clean.addr)
    r = orphans(prog)
    said = [p for p in r.problems if isinstance(p, StageDamaged) and "kfence_metadata" in p]
    assert said and said[0].startswith("scan: KFENCE objects: KFENCE metadata"), r.problems
