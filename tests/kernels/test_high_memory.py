"""Memory far up the physical map: the i40e-leak guest with a 256 MB DIMM
at 512 GiB (``sample_cores.vm.Machine.dimm_at_gb``), so its highest PFN lies
past a hole of half a terabyte, as on a host whose memory sits high.

Per-PFN state runs from PFN 0 to the highest PFN, but costs RAM only for the
pages that exist: the class array is fresh zero memory that nothing writes
in a hole (``census.no_pages``).  The test reads what the kernel charges the
process for the array (``Rss`` of its mapping in ``/proc/self/smaps``), not
what numpy asked for."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from vmcore_tools import orphans

from ..conftest import assert_census_whole, sample_core

pytestmark = [pytest.mark.vm, pytest.mark.full]

#: where the DIMM sits, in bytes (the scenario's ``dimm_at_gb``)
DIMM_AT = 512 << 30


@pytest.fixture(scope="module")
def high():
    core = sample_core("high-memory", "6.1")
    return core, orphans(core.program())


def resident_bytes(array: np.ndarray) -> int:
    """Bytes of the mappings that hold ``array`` the kernel counts as
    resident (``Rss`` in ``/proc/self/smaps``; the shared zero page is not
    counted).  numpy takes a buffer this large as a mapping of its own,
    which madvise() may split in several."""
    lo, hi = array.ctypes.data, array.ctypes.data + array.nbytes
    rss, size, overlaps = 0, 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                overlaps = start < hi and end > lo
                size += end - start if overlaps else 0
            elif overlaps and head[0] == "Rss:":
                rss += int(head[1]) << 10
    assert array.nbytes <= size < array.nbytes + (4 << 20), "the array shares its mappings"
    return rss


def resident_unit() -> int:
    """The most this machine commits on one write fault: a PMD-sized
    transparent huge page where it has them, else a page."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
    return int(thp.read_text()) if thp.exists() else resource.getpagesize()


def test_the_memmap_reaches_past_the_hole(high):
    _, r = high
    m = r.census.memmap
    assert m.nr >= (DIMM_AT >> m.page_shift)
    assert any(start >= DIMM_AT >> m.page_shift for start, _ in m.ranges), m.ranges
    assert m.valid_pages < m.nr // 100


def test_the_class_array_costs_ram_for_present_pages_only(high):
    """One byte per PFN is 128 MB of address space here; what is resident is
    about a byte per page that exists, rounded at the edges of each range
    to what this machine commits at once (a transparent huge page: numpy
    asks for them on large buffers)."""
    _, r = high
    classes, m = r.census.classes, r.census.memmap
    rounding = 2 * len(m.ranges) * resident_unit()
    assert resident_bytes(classes) <= m.valid_pages + rounding, (resident_bytes(classes), m.valid_pages, m.nr)
    assert m.nr > 10 * (m.valid_pages + rounding)           # so the bound says something


def test_the_census_counts_the_high_memory(high):
    _, r = high
    c = r.census
    assert_census_whole(c)
    high_pfns = np.arange(DIMM_AT >> c.memmap.page_shift, c.memmap.nr)
    assert (c.classes[high_pfns] != 0).sum() == 256 << 20 >> c.memmap.page_shift


def test_exactly_the_planted_leaks_are_orphaned(high):
    core, r = high
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
    assert not r.problems
