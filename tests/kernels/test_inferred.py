"""The inferred tier (refs/tiers.py, registry.INFERENCES) on real cores: a
hold that rests on a rule is marked with it, a page held only that way is
listed apart -- neither orphaned nor among the held --, and every rule
says its fact and names its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcore_tools import orphans
from vmcore_tools.mm.kmalloc import slab_zeroed_on_alloc
from vmcore_tools.refs.references import KMALLOC_SLACK, PHYSICAL, PHYSICAL_MATCH, TABLE_ENTRY, TABLE_SHAPE
from vmcore_tools.refs.registry import EXTENTS, INFERENCES

from ..conftest import KERNELS, lines, sample_core

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
#: what a page named only from pages held by inference is said to rest on
NAMED_FROM_INFERRED = "named only by pages held by inference"


@pytest.fixture(scope="module", params=lines(KERNELS))
def leak_report(request):
    core = sample_core("i40e-leak", request.param)
    return core, orphans(core.program())


def test_each_inferred_hold_names_its_rule(leak_report):
    """Every word a rule only guesses at is marked with that rule: a
    physical address or a table entry in a plain referenced page, a run's
    tail without page_owner; a kmalloc object's slack never on Debian's
    kernels, which zero the objects they hand out.  A page in the tier has
    no proved reference from memory outside the candidates; every page
    whose references all rest on rules is in it."""
    core, r = leak_report
    rules = {e.name for e in INFERENCES}
    by_kind = {PHYSICAL: PHYSICAL_MATCH, TABLE_ENTRY: TABLE_SHAPE}
    assert slab_zeroed_on_alloc(r.census.prog)
    for pfn, refs in r.references.items():
        for ref in refs:
            assert ref.rule != KMALLOC_SLACK, (pfn, ref)
            if ref.region == "referenced page" and ref.kind in by_kind:
                assert ref.rule == by_kind[ref.kind], (pfn, ref)
            if ref.region == "run" and r.page_owner != "on":
                assert ref.rule in rules, (pfn, ref)
        if all(ref.rule for ref in refs) and pfn in set(r.referenced_heads.tolist()) | set(r.inferred_rules):
            assert pfn in r.inferred_rules, (pfn, refs)
    assert r.inferred_heads.size, "no page of this core is held by inference: the tier is not exercised"
    for pfn, rule in r.inferred_rules.items():
        assert rule in rules or rule == NAMED_FROM_INFERRED, (pfn, rule)
        assert not any(not ref.rule and ref.source < 0 for ref in r.references[pfn]), (pfn, r.references[pfn])
    assert not set(r.inferred_rules) & set(r.referenced_heads.tolist())
    assert not set(r.inferred_rules) & set(r.found.pfn.tolist())


def test_the_tier_is_in_every_report(leak_report, tmp_path):
    """orphans --json lists the tier, --inferred-pfns writes it in the
    --pfns format, and the verdict says what it could hide."""
    from ..conftest import cli_json
    core, r = leak_report
    out = tmp_path / "inferred.txt"
    doc = cli_json("orphans", *core.args, "--inferred-pfns", str(out))
    assert doc["inferred_allocations"] == r.inferred_heads.size
    assert doc["inferred_pages"] == sum(g["pages"] for g in doc["inferred"]) == r.inferred_pages
    rows = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(p) for p, _, _, s in rows) == sorted(r.inferred_heads.tolist())
    assert {s for *_, s in rows} == {"-1"}
    assert f"{doc['inferred_pages']} pages ({doc['inferred_allocations']} allocations) are held only by " \
           "inference" in doc["verdict"]


@pytest.mark.parametrize("rule", [e.name for e in (*INFERENCES, *EXTENTS)])
def test_each_rule_says_its_fact_and_names_its_test(rule):
    e = next(e for e in (*INFERENCES, *EXTENTS) if e.name == rule)
    assert e.fact and e.kernels
    path, func = e.test.split("::")
    assert f"def {func}(" in (REPO / path).read_text(), e.test
