"""page_owner on real kernels: Debian's 5.10, 6.1 and 6.12 sources built
with CONFIG_PAGE_OWNER (sample_cores kernel lines ``5.10-page-owner``,
``6.1-page-owner`` and ``6.12-page-owner``), booted with ``page_owner=on``.
5.10's record is the older one: page_ext entries sized by ``extra_mem``,
and no task or time stamp in the record.

Ground truth: the planted leaks the test modules log, the module source
(fake_i40e allocates every rx page in ``fake_alloc_mapped_page()``, both
modules are loaded by ``insmod`` from the guest's init) and the kernel's own
log line "allocated N bytes of page_ext".
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from drgn.helpers.linux.mm import pfn_to_virt

from vmcore_tools import orphans
from vmcore_tools.census.census import census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.kernel.kvfree_rcu import cached_bulk_pages
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.leaks.verdict import coverage, verdict
from vmcore_tools.mm.kmalloc import slab_zeroed_on_alloc
from vmcore_tools.mm.page_owner import PageOwners, page_owner_state
from vmcore_tools.refs.references import KMALLOC_SLACK
from vmcore_tools.refs.runs import run_by_page_owner
from vmcore_tools.refs.scan import scan_references

from ..conftest import cli_json, lines, run_cli, sample_core

pytestmark = pytest.mark.vm

KERNELS = ("5.10-page-owner", "6.1-page-owner", "6.12-page-owner", "7.3-page-owner")
#: the leaks the test modules allocate in their own code, not through fake_i40e's rx path:
#: vmct_workload's split leak ("-") and vmct_slack's pages named only in a kmalloc object's slack
#: or a slab slot's padding
OWN_CODE = ("-", "kmalloc-slack", "kmalloc-slack-cleared", "slab-padding", "slab-padding-cleared")
#: the fake i40e driver's rx buffer allocation (sample_cores/modules/fake_i40e)
I40E_SITE = "fake_alloc_mapped_page [fake_i40e]"


def records_task(prog) -> bool:
    """Whether this kernel's page_owner record names the allocating task."""
    return prog.type("struct page_owner").has_member("comm")


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1-page-owner",)))
def owner_core(request):
    return sample_core("page-owner", request.param)


@pytest.fixture(scope="module")
def owner_report(owner_core):
    return owner_core, orphans(owner_core.program())


def test_page_owner_is_on(owner_core):
    assert owner_core.manifest["kernel"]["abi"].endswith("-vmct-page-owner")
    assert page_owner_state(owner_core.program()) == "on"


def test_page_ext_tables_are_their_own_class(owner_core):
    """The page_ext tables are allocated pages that nothing points to at
    their start; the census must claim them, page for page what the kernel
    says it allocated, or each would be a false orphan."""
    dmesg = (owner_core.path / "dmesg.txt").read_text()
    allocated = int(re.search(r"allocated (\d+) bytes of page_ext", dmesg).group(1))
    c = census(owner_core.program())
    pages = c.totals()["page_ext"]
    assert pages * 4096 >= allocated
    sections = len({pfn >> 15 for pfn in c.pfns_of(PageClass.PAGE_EXT).tolist()})
    assert pages * 4096 < allocated + sections * 4096, (pages, allocated, sections)
    assert not c.problems


def test_exactly_the_planted_leaks_are_orphaned(owner_report):
    core, r = owner_report
    planted = {l["pfn"]: l for l in core.manifest["planted_leaks"]}
    assert len(planted) == 39
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
    assert r.page_owner == "on"
    # this built kernel does not zero slab objects, and the verdict says what that costs
    assert coverage(r)["slab_zeroed_on_alloc"] is False and "init_on_alloc off" in verdict(r)


def test_a_page_named_only_in_a_kmalloc_objects_slack_is_in_the_inferred_tier(owner_report):
    """vmct_slack frees a kmalloc object holding a page's address in its
    last word and asks again with a request the next smaller class does
    not fit: it gets the same object, and this kernel (init_on_alloc off)
    leaves the word past the request.  Each such page is in the inferred
    tier, rule kmalloc slack -- not held, as a plain slab word would hold
    it --, and a page held from a word inside a request stays proved held."""
    core, r = owner_report
    assert not slab_zeroed_on_alloc(r.census.prog)
    slack = [l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"] == "kmalloc-slack"]
    assert len(slack) == 3, core.manifest["planted_leaks"]      # the module saw each word kept
    for pfn in slack:
        assert r.inferred_rules.get(pfn) == KMALLOC_SLACK, (pfn, r.references.get(pfn))
        assert all(ref.region == "slab" and ref.rule == KMALLOC_SLACK for ref in r.references[pfn])
    held = next(o["pfn"] for o in core.manifest["owned"] if o["kind"] == "kmalloc-request")
    assert held in set(r.referenced_heads.tolist()), r.references.get(held)
    assert any(ref.region == "slab" and not ref.rule for ref in r.references[held]), r.references[held]


def test_a_page_named_only_in_a_slab_slots_padding_is_orphaned(owner_report):
    """vmct_slack's cache of 40-byte objects has 64-byte slots; its first
    slab page named a lost page in every word before it was a slab, and
    this kernel does not zero a new slab page.  The allocated object's slot
    still names the page past byte 40, in padding no user writes: it holds
    nothing, and the page is orphaned."""
    core, r = owner_report
    prog = r.census.prog
    lost = [l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"] == "slab-padding"]
    assert len(lost) == 1, core.manifest["planted_leaks"]      # the module saw the word kept
    m = re.search(r"vmct_slack: object=([0-9a-f]+) object_size=(\d+) slot=(\d+) kept=1",
                  (core.path / "dmesg.txt").read_text())
    obj, size, slot = int(m.group(1), 16), int(m.group(2)), int(m.group(3))
    words = np.frombuffer(prog.read(obj + size, slot - size), "<u8")
    assert (words == pfn_to_virt(prog, lost[0]).value_()).all()
    assert lost[0] in {o.pfn for o in r.orphans}, r.references.get(lost[0])


def test_the_pages_kvfree_rcu_keeps_for_reuse_hold_nothing(owner_report):
    """kvfree_rcu() keeps empty pages of object pointers per CPU; past their
    list link they hold what an earlier use left, and this kernel does not
    zero the pages it hands out.  No candidate is held from them (on the
    6.12 page-owner core, a lost i40e page's struct page was named in one);
    without the entry, whatever they name is; the cached pages themselves
    stay held, by the list."""
    core, r = owner_report
    pages = cached_bulk_pages(r.census.prog)
    if not pages:       # the cache fills after a kvfree_rcu() batch: 7.3's core had none
        pytest.skip("no CPU keeps a page for kvfree_rcu on this core")
    size = r.census.memmap.page_size
    from_cache = lambda refs: [x for x in refs if any(va + 8 <= x.address < va + size for va in pages)]  # noqa: E731
    assert not any(from_cache(refs) for refs in r.references.values())
    held = set(r.referenced_heads.tolist()) | set(r.inferred_rules)
    assert {r.census.memmap.pfn_of_virt(va) for va in pages} <= held
    heads = candidate_heads(r.census)
    without = scan_references(r.census, heads, without=frozenset({"kvfree_rcu page cache"})).references
    named = {t for t, refs in without.items() if from_cache(refs)}
    planted = {l["pfn"] for l in core.manifest["planted_leaks"]}
    assert named - planted <= held, named - planted
    print("named only from the cache:", sorted(named), "of them planted:", sorted(named & planted))


def test_every_orphan_carries_its_allocating_stack(owner_report):
    core, r = owner_report
    planted = {l["pfn"]: l for l in core.manifest["planted_leaks"]}
    for o in r.orphans:
        rec, leak = o.page_owner, planted[o.pfn]
        assert rec is not None and rec.allocated, o
        assert rec.order == leak["order"], (rec, leak)
        assert rec.comm == ("insmod" if records_task(r.census.prog) else None), rec
        assert any("do_init_module" in f for f in rec.stack), rec.stack
        if leak["ring"] in OWN_CODE:
            # allocated by a module's own code; vmct_workload's split leak by its
            # init code, which the kernel frees once init returns: the frame's
            # address has no symbol, or that of a module loaded there since
            assert rec.alloc_site is not None and rec.alloc_site != I40E_SITE, rec
        else:
            assert rec.alloc_site == I40E_SITE, rec
            # __dev_alloc_pages_noprof under the dev_alloc_pages() macro from 6.10 on
            assert any(re.match(r"(__)?dev_alloc_pages(_noprof)? \(inlined\)", f) for f in rec.stack), rec.stack


def test_suspects_name_the_allocating_function(owner_report):
    core, r = owner_report
    i40e = [s for s in r.suspects if s.driver == "i40e" or s.alloc_site == I40E_SITE]
    assert i40e and all(s.alloc_site == I40E_SITE for s in i40e)
    assert sum(s.pages for s in i40e) == sum(1 << l["order"] for l in core.expected_orphans().values()
                                             if l["ring"] not in OWN_CODE)
    assert all(I40E_SITE in s.label for s in i40e)


def test_page_owner_tells_an_exact_pair_from_a_split_leak(owner_report):
    """An alloc_pages_exact() pair held at its start and vmct_workload's
    split order-1 block (first page held, second lost) look the same in
    struct page, and a page after a heap-held start needs two unreferenced
    pages to make a run by struct page alone.  Their page_owner records
    differ: only the pair's stack goes through alloc_pages_exact()."""
    core, r = owner_report
    pair = sorted(d["pfn"] for d in core.manifest["decoys"] if d["kind"] == "exact_pair")
    assert len(pair) == 2 and pair[1] == pair[0] + 1
    split = next(l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"] == "-")
    owners = PageOwners(r.census.prog)
    assert run_by_page_owner(owners, pair[0], pair[0] + 2) == [pair[1]]
    assert run_by_page_owner(owners, split - 1, split + 1) == []
    held = {x.pfn: x for x in r.referenced}
    assert pair[1] in held and "page_owner: one allocation" in held[pair[1]].references[0], held.get(pair[1])
    assert split in {o.pfn for o in r.orphans}


def test_records_of_other_pages(owner_report):
    """A ring page that is not leaked has the same allocating function; a
    free page has a record that says freed (or none, if never allocated)."""
    core, r = owner_report
    c = r.census
    owners = PageOwners(c.prog)
    ring = next(ring for ring in c.rings.rings if ring.driver == "i40e" and ring.kind == "rx")
    live = int(ring.pfn[ring.pfn >= 0][0])
    free = int(c.pfns_of(PageClass.FREE)[-1])
    recs = owners.lookup(np.array([live, free]))
    assert recs[live].allocated and recs[live].alloc_site == I40E_SITE, recs[live]
    assert free not in recs or not recs[free].allocated


def test_cli_orphans_shows_the_stacks(owner_core):
    doc = cli_json("orphans", *owner_core.args)
    assert doc["page_owner"] == "on"
    assert all(o["page_owner"]["stack"] for o in doc["orphans"])
    text = run_cli("orphans", *owner_core.args)
    assert text.returncode == 0, text.stderr
    assert "Allocating stacks (page_owner)" in text.stdout
    assert f"allocated by {I40E_SITE}" in text.stdout


def test_debian_kernels_have_no_page_owner(leak_core):
    """Debian builds without CONFIG_PAGE_OWNER: the report says so and goes on."""
    prog = leak_core.program()
    assert page_owner_state(prog) == "absent"
    with pytest.raises(LookupError):
        PageOwners(prog)


def test_cli_page_shows_the_record(owner_core):
    leak = next(l for l in owner_core.manifest["planted_leaks"] if l["ring"] not in OWN_CODE)
    doc = cli_json("page", str(leak["pfn"]), *owner_core.args)
    assert doc["references"] == []
    assert doc["page_owner"]["alloc_site"] == I40E_SITE and doc["page_owner"]["allocated"]
    text = run_cli("page", str(leak["pfn"]), *owner_core.args)
    assert text.returncode == 0, text.stderr
    task = " by insmod" if records_task(owner_core.program()) else ","
    assert re.search(rf"page_owner\s+allocated{task}", text.stdout), text.stdout


def test_stacks_count_the_pages_each_stack_holds(owner_report):
    """page_owner_sort from a dump: the pages of the fake i40e driver's rx
    rings are all counted under its allocating function, and the stacks of
    the unattributed pages add up to what each page's own record says."""
    core, r = owner_report
    c = r.census
    owners = PageOwners(c.prog)
    ring_pages = c.pfns_of(PageClass.NIC_RING)
    heads = np.unique(np.concatenate([ring.pfn[ring.pfn >= 0] for ring in c.rings.rings
                                      if ring.driver == "i40e" and ring.kind == "rx"]))
    i40e = int((np.int64(1) << c.memmap.order_of(heads).astype(np.int64)).sum())
    rows, distinct, _ = owners.by_stack(ring_pages, top=100)
    assert distinct >= 1 and sum(s.pages for s in rows if s.alloc_site == I40E_SITE) >= i40e > 0
    un = c.pfns_of(PageClass.UNATTRIBUTED)
    rows, distinct, unrecorded = owners.by_stack(un, top=10_000)
    recs = owners.lookup(un)
    per_page = {}
    for rec in recs.values():
        if rec.allocated:
            per_page[rec.handle] = per_page.get(rec.handle, 0) + 1
    assert {s.handle: s.pages for s in rows} == per_page and distinct == len(per_page)
    assert unrecorded == un.size - sum(per_page.values())


def test_cli_stacks(owner_core):
    doc = cli_json("stacks", "--class", "unattributed", "--top", "5", *owner_core.args)
    assert doc["page_owner"] == "on" and doc["classes"] == ["unattributed"]
    assert 0 < len(doc["stacks"]) <= 5 and doc["stacks"] == sorted(doc["stacks"], key=lambda s: -s["pages"])
    assert all(s["stack"] for s in doc["stacks"])
    assert not any(s["alloc_site"] and s["alloc_site"].startswith("__kmalloc_large") for s in doc["stacks"])
