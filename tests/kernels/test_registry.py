"""The reference model's registry (vmcore_tools/registry.py): every root
and owner is needed -- removing it turns pages that the sample cores hold
through it into orphans -- and each names its stage and its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcore_tools.census import census
from vmcore_tools.orphans import candidate_heads
from vmcore_tools.refscan import ReferenceScan
from vmcore_tools.registry import OWNERS, ROOTS
from vmcore_tools.stages import STAGES

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
#: memory is candidates and an index read as an address finds one, and of
#: the iommu core (test_iommu), whose page tables' leaves name the leaked pages
PRECISION = {"virtqueues", "iommu page tables"}


@pytest.fixture(scope="module")
def scans():
    out = []
    for scenario in ("i40e-leak", "i40e-leak-kdump"):
        c = census(sample_core(scenario, "6.1").program())
        heads = candidate_heads(c)
        out.append((c, heads, set(ReferenceScan(c, heads).run().references)))
    return out


@pytest.mark.parametrize("name", [e.name for e in (*ROOTS, *OWNERS) if e.name not in PRECISION])
def test_each_entry_holds_pages(scans, name):
    if name in UNIT_TESTED:
        pytest.skip(f"{name}: {next(e.test for e in ROOTS if e.name == name)}")
    lost = set()
    for c, heads, held in scans:
        lost |= held - set(ReferenceScan(c, heads).run(frozenset({name})).references)
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
