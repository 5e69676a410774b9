"""Pages their owner let go of while someone kept a reference, on real kernels.

vmct_released writes a shmem file through its page cache, keeps the
reference ``shmem_read_mapping_page()`` took on each page (two of them also
carry FOLL_PIN's bias, as ``pin_user_pages()`` leaves them), and truncates
the file: the pages leave the cache and keep their page-cache flags.  A user
process (dd) then hands it its anonymous buffer: the module takes GUP
references (pins on two pages) and the process exits, unmapping them; two
of those pages the module keeps in an array (a driver holding a user
buffer), the rest it loses.  Its truth record names each lost page and its
refcount.
"""

from __future__ import annotations

import numpy as np
import pytest
from drgn import offsetof
from drgn.helpers.linux.mm import pfn_to_page

from vmcore_tools import orphans
from vmcore_tools.leaks.evidence import GUP_PIN_COUNTING_BIAS
from vmcore_tools.kernel.lru import lru_list_heads
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.refs.scan import scan_references

from ..conftest import KERNELS, cli_json, lines, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1", "7.3")) + lines(("6.1-arm64",), ci=()))
def released(request):
    core = sample_core("released", request.param)
    return core, orphans(core.program())


def test_released_pages_are_orphaned_with_their_references(released):
    core, r = released
    truth = {x["pfn"]: x for x in core.manifest["planted_leaks"]}
    assert {x["ring"] for x in truth.values()} == {"released", "pinned", "anon-released", "anon-pinned",
                                                   "released-after-buffer"}
    found = {o.pfn: o for o in r.orphans}
    for pfn, leak in truth.items():
        assert pfn in found, leak
        assert (found[pfn].order, found[pfn].refcount) == (0, leak["refcount"]), (found[pfn], leak)
    pinned = [x for x in truth.values() if x["ring"] in ("pinned", "anon-pinned")]
    assert all(x["refcount"] >= GUP_PIN_COUNTING_BIAS for x in pinned)


def test_page_cache_released_right_after_a_held_buffer_ends_its_run(released):
    """Three released shmem pages lie right after a held one-page buffer, in
    its four-page buddy block: what an alloc_pages_exact() run would look
    like.  Their flags say they were page cache, which no split page ever
    is (``pageflags.were_user_or_cache``): they end the run, and are
    orphaned -- not taken for the buffer's tail, not even in the inferred
    tier."""
    core, r = released
    buffer = [o["pfn"] for o in core.manifest["owned"] if o["kind"] == "exact-buffer"]
    after = sorted(x["pfn"] for x in core.manifest["planted_leaks"] if x["ring"] == "released-after-buffer")
    assert len(buffer) == 1 and after == [buffer[0] + 1, buffer[0] + 2, buffer[0] + 3]
    assert buffer[0] in r.references and buffer[0] not in set(r.inferred_heads.tolist())
    orphaned = {o.pfn for o in r.orphans}
    assert set(after) <= orphaned, {p: r.references.get(p) for p in after}
    assert not set(after) & set(r.inferred_heads.tolist())


def test_anon_pages_a_driver_still_holds_are_referenced_not_user_memory(released):
    """The user buffer's pages the module keeps in its array are mapped
    nowhere after the process exited: not anon in the census, referenced
    from the module's array, not orphaned."""
    core, r = released
    held = [o["pfn"] for o in core.manifest["owned"] if o["kind"] == "anon-held"]
    assert len(held) == 2
    referenced = {x.pfn: x.references for x in r.referenced}
    orphaned = {o.pfn for o in r.orphans}
    for pfn in held:
        assert r.census.class_of(pfn).label == "unattributed"
        assert pfn in referenced and pfn not in orphaned, pfn


def test_their_flags_say_released_page_cache_not_never_used(released):
    """Each planted page's group is told by its flags: shmem page cache
    released while referenced, the pinned ones with their pin count --
    never "allocated and never used", and no ring is suspected for them."""
    core, r = released
    truth = {x["pfn"]: x for x in core.manifest["planted_leaks"]}
    by_id = {s.id: s for s in r.suspects}
    for o in r.orphans:
        if o.pfn not in truth:
            continue
        s, ring = by_id[o.suspect], truth[o.pfn]["ring"]
        kind = "anonymous memory" if ring.startswith("anon-") else "shmem page cache"
        assert s.history == {kind: s.sampled}, s
        assert f"released by its owner, still referenced: {kind}" in s.label, s.label
        assert "never used" not in s.label and "rings using" not in s.label, s.label
        if ring == "pinned":
            assert "pinned: 1 FOLL_PIN pin (1024 each) and 1 reference kept" in s.label, s.label
        elif ring == "anon-pinned":
            assert "pinned: 1 FOLL_PIN pin (1024 each) and 0 references kept" in s.label, s.label
        else:
            assert s.label.count("1 reference kept") == 1, s.label


def test_history_in_the_json(released):
    core, _ = released
    doc = cli_json("orphans", *core.args)
    kinds = [s["history"] for s in doc["suspects"] if s["history"]]
    assert sum(sum(h.values()) for h in kinds) == len(core.manifest["planted_leaks"])


def test_lru_list_heads_hold_nothing(released):
    """The released pages stay on the LRU until their last put, and one at
    either end of its list is named by the list head, in a lruvec (a
    memcg's kmalloc'd per-node info): a link, not a reference.  No
    candidate a list head names is held by it; without the registry entry
    each is.  vmct_released is loaded from a memory cgroup of its own, so
    its pages are alone on that memcg's lists, and the heads name them."""
    core, r = released
    prog = r.census.prog
    spans = lru_list_heads(prog)
    words = set(np.concatenate([np.frombuffer(prog.read(lo, hi - lo), "<u8") for lo, hi in spans]).tolist())
    lru = offsetof(prog.type("struct page"), "lru")
    heads = candidate_heads(r.census)
    named = [p for p in heads.tolist() if pfn_to_page(prog, p).value_() + lru in words]
    assert named, "no LRU list head names a candidate: the module's pages are not alone on a memcg's lists"

    def by_a_head(refs) -> bool:
        return any(any(lo <= ref.address < hi for lo, hi in spans) for ref in refs)
    without = scan_references(r.census, heads, without=frozenset({"LRU list heads"})).references
    for pfn in named:
        assert not by_a_head(r.references.get(pfn, [])), pfn
        assert by_a_head(without.get(pfn, [])), pfn
