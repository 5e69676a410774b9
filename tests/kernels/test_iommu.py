"""An IOMMU doing DMA translation (issue 19's production shapes): the
i40e-leak guest on a q35 machine with QEMU's Intel IOMMU, booted with
``intel_iommu=on``.  e1000e, igb and the fake i40e's PCI device map their
buffers through it, so its table pages are live, and the i40e pages leaked
while mapped are still named by the leaves of its page tables.

Ground truth: the modules' truth records (the planted leaks), and the
kernel's own DMA domains (``iommu_group_kset``)."""

from __future__ import annotations

import numpy as np
import pytest

from vmcore_tools import orphans
from vmcore_tools.census.census import census
from vmcore_tools.kernel.iommu import dma_domains, iommu_tables
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.leaks.verdict import coverage, verdict

from ..conftest import KERNELS, lines, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1",)))
def iommu_core(request):
    core = sample_core("iommu", request.param)
    return core, orphans(core.program())


def test_the_guest_translates_dma(iommu_core):
    """Every device is in a DMA-API domain (not passthrough), and the leaked
    i40e pages are mapped by the leaves of its page tables."""
    core, r = iommu_core
    prog = r.census.prog
    domains = dma_domains(prog)
    assert len(domains) >= 3, domains
    tables = iommu_tables(prog, r.census.memmap)
    assert tables.domains == len(domains) and not tables.problems, tables.problems
    i40e = [l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"].startswith("eth")]
    assert i40e and all(p in tables.mapped for p in i40e)


def test_pages_leaked_while_dma_mapped_are_orphaned(iommu_core):
    """Exactly the planted leaks are orphaned: a leaf entry of a DMA domain
    holds nothing, and no table page is taken for a leak.  The verdict says
    the IOMMU's tables were read."""
    core, r = iommu_core
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
    cov = coverage(r)
    assert cov["iommu_domains_read"] >= 3 and cov["iommu_domains_not_read"] == 0
    assert f"IOMMU page tables read for {cov['iommu_domains_read']} DMA domains" in verdict(r)


def test_iommu_table_pages_are_held_by_the_entry_above(iommu_core):
    core, r = iommu_core
    tables = iommu_tables(r.census.prog, r.census.memmap)
    referenced = {x.pfn for x in r.referenced}
    lower = [pfn for pfn, (at, _) in tables.tables.items() if at]
    assert lower and all(p in referenced for p in lower if r.census.class_of(p).label == "unattributed")
    assert any(ref.region == "iommu" for p in lower for ref in r.references.get(p, []))


def test_without_the_layout_the_leaves_would_hide_the_leak(iommu_core):
    """Read as plain table-shaped pages (the generic rule, which wants bit 0
    in every entry), a leaf holds the leaked page it maps whenever its read
    bit is set: 6.x maps rx pages read-write, 7.x's generic page table maps
    a DMA_FROM_DEVICE page write-only (bit 1 alone).  What the entry keeps
    from counting."""
    core, _ = iommu_core
    c = census(core.program())
    heads = candidate_heads(c)
    held = set(scan_references(c, heads, without=frozenset({"iommu page tables"})).references)
    mapped = iommu_tables(c.prog, c.memmap).mapped
    i40e = {l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"].startswith("eth")}
    assert i40e and np.isin(np.array(sorted(i40e)), heads).all()
    readable = {p for p in i40e if mapped[p][1] & 1}
    assert {p for p in i40e if p in held} == readable
