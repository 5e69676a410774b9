"""Reachability on a slab-heavy host (``slab-4g``, test-all only: a 4 GB
core): vmct_slabfill fills 2.6 GB of slab with 20 M objects of its own cache,
linked as one long list (16.7 M), hash chains, a red-black tree and page
records, and loses 1,000 objects of each shape and 100 records.  Exactly
those are unreachable, and exactly the pages only lost records hold are
named.  The time and memory are benchmarks/slab_bench.py's."""

from __future__ import annotations

import pytest

from vmcore_tools import orphans
from vmcore_tools.leaks.reachability import reachability, reachability_text

from ..conftest import sample_core
from .test_reachability import FALSE_UNREACHABLE_RATE

pytestmark = [pytest.mark.vm, pytest.mark.full]


def test_the_lost_objects_are_the_unreachable_ones_at_20_million():
    core = sample_core("slab-4g", "6.1")
    lost = core.manifest["lost_objects"]
    assert set(lost) == {"list", "hash", "tree", "pages"} and lost["list"] == 1000
    rr = reachability(orphans(core.program()))
    assert rr.objects_by_cache["vmct_obj"] > 19_000_000 and rr.unread_slabs == 0
    by_cache = {c.cache: c.objects for c in rr.caches}
    assert by_cache.pop("vmct_obj") == sum(lost.values()), reachability_text(rr)
    # elsewhere, at most the residue the no-leak cores show (0 on the core measured)
    assert sum(by_cache.values()) <= FALSE_UNREACHABLE_RATE * rr.objects, reachability_text(rr)
    hidden = {h["pfn"]: h["holder"] for h in core.manifest["hidden"]}
    named = {p: h.holder for h in rr.holders for p in h.pfns}
    assert named == hidden
