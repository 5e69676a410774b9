"""Page-table isolation forced on (issue 19's production shapes): the
i40e-leak guest booted with ``pti=on``.  Every process's PGD is an order-1
block whose second page, the user PGD, nothing points to and whose refcount
is 0; the kernel's own user-mode tables hang below the user PGD of init_mm.

Ground truth: the kernel's own mms (each task's ``mm->pgd``) and the
modules' truth records."""

from __future__ import annotations

import pytest
from drgn.helpers.linux.pid import for_each_task

from vmcore_tools import orphans
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.pagetables import pti_enabled

from ..conftest import KERNELS, lines, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1",)))
def pti_core(request):
    core = sample_core("pti", request.param)
    return core, orphans(core.program())


def test_pti_is_told_by_the_cpu_feature(pti_core):
    core, r = pti_core
    assert pti_enabled(r.census.prog)
    assert not pti_enabled(sample_core("i40e-leak", core.manifest["kernel"]["line"]).program())


def test_user_pgds_are_page_tables(pti_core):
    """The second page of every process's PGD block is a page table of the
    census, not a page in transit or a candidate: by the walk, or by its
    page type where the kernel allocates PGDs with the page-table
    constructor (the whole block is then PageTable)."""
    _, r = pti_core
    c = r.census
    pgds = {c.memmap.pfn_of_virt(t.mm.pgd.value_()) for t in for_each_task(c.prog) if t.mm}
    assert len(pgds) > 3
    assert {c.class_of(p + 1) for p in pgds} <= {PageClass.KERNEL_PAGE_TABLE, PageClass.PAGE_TABLE}


def test_exactly_the_planted_leaks_are_orphaned(pti_core):
    core, r = pti_core
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
