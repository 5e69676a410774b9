"""The reference model's registry (vmcore_tools/registry.py): every root
and owner is needed -- removing it turns pages that the sample cores hold
through it into orphans -- and each names its stage and its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcore_tools.census.census import census
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.refs.registry import OWNERS, ROOTS
from vmcore_tools.core.stages import STAGES

from ..conftest import sample_core

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
ENTRIES = [e.name for e in (*ROOTS, *OWNERS)]
#: entries whose pages none of our sample kernels has, and why; they must
#: hold nothing here (or this list is stale)
NOT_EXERCISED = {
    "kernel pages": "large kmalloc is a class only from 6.15 (page type); before, it is a referenced "
                    "candidate and read as such, and no page_frag page holds the only pointer to a page",
}
#: entries no sample core exercises reliably, tested by the unit test they
#: name instead: a page held only through an skb frag in an rx buffer is
#: something no sample driver builds, while stale data of an rx buffer's
#: earlier owner (a bio_vec array) matches the frag shape on some builds and
#: not on others
UNIT_TESTED = {"rx buffers"}
#: entries that keep words from counting rather than make them count: their
#: test is an exact orphan set -- of the seed core (test_seed), where 60% of
#: memory is candidates and an index read as an address finds one, of the
#: iommu core (test_iommu), whose page tables' leaves name the leaked pages,
#: of the 7.3 i40e-leak core (test_owned_shapes), whose page_pool's DMA
#: index names the page lost from it, and whose bio cache names the page
#: vmct_shapes read a disk block into and lost (an idle blk-mq request names
#: it on every line), of every i40e-leak core, where an interrupt handler's
#: dead frame names the page vmct_shapes lost after it, and a dead slot of
#: an LRU batch the page it lost after that, and a freed per-cpu area the
#: page it lost after freeing the area (test_owned_shapes), of the 6.12
#: page-owner core, whose kvfree_rcu page cache names a lost i40e page
#: (test_page_owner, test-all), of a
#: released core, whose released pages sit alone on the LRU lists of the
#: memory cgroup vmct_released is loaded from, so that the list heads name
#: them (test_released), and of the 5.10 hosts core (test_hosts, test-all),
#: where blk-mq requests' packed fields read as the physical address of a
#: page lost at 0x10a000000
PRECISION = {"virtqueues", "iommu page tables", "page_pool DMA index", "blk-mq requests", "bio caches",
             "dead interrupt stack frames", "per-cpu batches", "LRU list heads", "stale sheaf slots",
             "free per-cpu areas", "kvfree_rcu page cache"}


#: the 6.1 cores each entry is tried on: those of the i40e leak; for CMA,
#: which no Debian kernel has, the cma core of the kernel built with it; for
#: KFENCE, which Debian's 6.1 lacks and its later kernels leave off, the
#: kfence core of 6.12 (booted with kfence.sample_interval); for the GICv3
#: ITS, which only arm64's virt machine has, the 6.1 arm64 core
CORES = (("i40e-leak", "6.1"), ("i40e-leak-kdump", "6.1"))
ON_CORES = {"CMA allocations": (("cma", "6.1-page-owner"),), "KFENCE objects": (("kfence", "6.12"),),
            "GICv3 ITS tables": (("i40e-leak", "6.1-arm64"),)}
#: entries tried with another one left out on both sides: on 6.1,
#: alloc_contig_range() leaves an allocation's pages linked to each other
#: through page->lru (split_map_pages()' local list, dead once it returns),
#: so memmap links reach a CMA allocation's tail before the CMA owner does
ALSO_WITHOUT = {"CMA allocations": frozenset({"memmap links"})}
_scans: dict[tuple, tuple] = {}


def scans(cores: tuple[tuple[str, str], ...], without: frozenset[str] = frozenset()) -> list[tuple]:
    for key in cores:
        if (key, without) not in _scans:
            c = census(sample_core(*key).program())
            heads = candidate_heads(c)
            _scans[key, without] = (c, heads, set(scan_references(c, heads, without=without).references))
    return [_scans[k, without] for k in cores]


@pytest.mark.parametrize("name", [e.name for e in (*ROOTS, *OWNERS) if e.name not in PRECISION])
def test_each_entry_holds_pages(name):
    if name in UNIT_TESTED:
        pytest.skip(f"{name}: {next(e.test for e in ROOTS if e.name == name)}")
    lost = set()
    also = ALSO_WITHOUT.get(name, frozenset())
    for c, heads, held in scans(ON_CORES.get(name, CORES), also):
        lost |= held - set(scan_references(c, heads, without=also | {name}).references)
    if name in NOT_EXERCISED:
        assert not lost, f"{name} holds {len(lost)} pages now: take it off NOT_EXERCISED"
    else:
        assert lost, f"without {name}, no page of the 6.1 cores is lost: what does it hold?"


@pytest.mark.parametrize("name", ENTRIES)
def test_each_entry_names_its_stage_and_test(name):
    e = next(e for e in (*ROOTS, *OWNERS) if e.name == name)
    assert f"scan: {name}" in STAGES
    assert e.fact and e.kernels
    path, func = e.test.split("::")
    assert f"def {func}(" in (REPO / path).read_text(), e.test
