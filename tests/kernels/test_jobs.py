"""``--jobs``: a large read split over forked processes gives the result
one process gives (``parallel.forked_map``, ``reader.MemoryReader.pfns``).

The sample cores are small, so the size from which a read is split is
lowered to one page here: every page read by the reference scan is read in
parts, by two processes, and merged in order."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from vmcore_tools.cli.main import run_on
from vmcore_tools.refs import reader

from ..conftest import sample_core
from ..schemas import validate, without_timings

pytestmark = pytest.mark.vm


def document(prog, args: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_on(prog, [*args, "--json", "--quiet"]) == 0
    doc = json.loads(out.getvalue())
    validate(doc)
    return doc


@pytest.mark.parametrize("scenario,command", [("i40e-leak", "orphans"), ("kfence", "orphans"),
                                              ("i40e-leak", "unreachable")])
def test_a_scan_in_two_processes_finds_what_one_finds(scenario, command, monkeypatch):
    """The reference scan, and reachability's tracer (its marks, kept
    objects and edge pieces merged in address order)."""
    line = "6.1" if scenario == "i40e-leak" else "6.12"
    core = sample_core(scenario, line)
    one = document(core.program(), [command, "-j", "1"])
    monkeypatch.setattr(reader, "FORK_MIN_PAGES", 1)
    forks = []
    real = reader.forked_map
    monkeypatch.setattr(reader, "forked_map", lambda task, parts, jobs: forks.append(len(parts)) or real(task, parts, jobs))
    two = document(core.program(), [command, "-j", "2"])
    assert forks and max(forks) == 2 * reader.PARTS_PER_JOB     # the slab pages, say, in eight parts
    assert without_timings(two) == without_timings(one)
    if command == "orphans":
        assert one["orphaned_pages"] > 0 and one["scan"]["bytes_by_root"]
    else:
        assert one["unreachable"] > 0 and one["hidden_pages"] > 0


def test_a_census_in_parts_counts_what_one_pass_counts(monkeypatch):
    """The pass over the memmap in parts of 2^16 PFNs (a multiple of the
    largest compound page this guest has), read by two processes: the same
    classes, heads and damaged pages as one pass."""
    from vmcore_tools.census import classify
    core = sample_core("i40e-leak", "6.1")
    one = document(core.program(), ["census", "-j", "1"])
    monkeypatch.setattr(classify, "PART_PAGES", 1 << 16)
    forks = []
    real = classify.forked_map
    monkeypatch.setattr(classify, "forked_map", lambda task, parts, jobs: forks.append(len(parts)) or real(task, parts, jobs))
    two = document(core.program(), ["census", "-j", "2"])
    assert forks == [4]         # 1 GiB: four parts of 256 MiB
    assert without_timings(two) == without_timings(one)
