"""No traceback, ever: each stage of an analysis fails on purpose
(``VMCORE_TOOLS_FAIL_STAGE``) on a real core, and the command still gives
its result, with a problem line naming the stage and what the result
lacks, and exit code 3.  Run in process on one open program (the plugin's
path, ``cli.run_on``), as a drgn session would run it.

The live re-check only runs on a live kernel: ``test_live`` fails it there."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from vmcore_tools.cli.main import run_on
from vmcore_tools.core.stages import EXIT_PARTIAL, STAGES, StageFailure, failed_stages

from ..conftest import sample_core
from ..schemas import validate

pytestmark = pytest.mark.vm
LIVE_ONLY = {"scan: live re-check"}
PAGE_OWNER_ONLY = {"evidence: page_owner"}
SLAB_ONLY = {"slab caches"}          # the slab command's, not the report's


@pytest.fixture(scope="module")
def leak_prog():
    return sample_core("i40e-leak", "6.1").program()


def failing(prog, monkeypatch, stage: str | None, args: list[str]) -> tuple[int, dict, str]:
    """``vmcore-tools ARGS --json --quiet`` on ``prog`` with ``stage`` made to
    fail: the exit code, the document and stderr."""
    if stage:
        monkeypatch.setenv("VMCORE_TOOLS_FAIL_STAGE", stage)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_on(prog, [*args, "--json", "--quiet"])
    return rc, json.loads(out.getvalue()), err.getvalue()


def report(prog, monkeypatch, tmp_path, stage: str | None) -> tuple[int, dict, str]:
    return failing(prog, monkeypatch, stage, ["report", "--reachability", "--html", str(tmp_path / "r.html")])


def stage_lines(doc: dict, stage: str) -> list[str]:
    return [p for p in doc["census"]["problems"] + doc["orphans"]["problems"] + doc["reachability"]["problems"]
            if p.startswith(stage) and " failed (" in p]


@pytest.mark.parametrize("stage", sorted(set(STAGES) - LIVE_ONLY - PAGE_OWNER_ONLY - SLAB_ONLY))
def test_a_failed_stage_gives_a_stated_partial_result(leak_prog, monkeypatch, tmp_path, stage):
    rc, doc, err = report(leak_prog, monkeypatch, tmp_path, stage)
    assert rc == EXIT_PARTIAL, (rc, err)
    assert "Traceback" not in err
    validate(doc)
    lines = stage_lines(doc, stage)
    assert lines and all(STAGES[stage] in line for line in lines), doc["orphans"]["problems"]
    # the rest of the analysis ran: the census counted every page, the HTML report was written
    assert sum(doc["census"]["classes"].values()) == doc["census"]["total_pages"] > 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("command,stage,lost", [("slab", "slab caches", "caches"), ("buddy", "free lists", "zones")])
def test_the_other_commands_walk_under_the_guard(leak_prog, monkeypatch, command, stage, lost):
    """``slab`` and ``buddy`` walk their lists under the stage guard too: a
    failed walk is a stated partial result, not a command without a result."""
    rc, doc, err = failing(leak_prog, monkeypatch, stage, [command])
    assert rc == EXIT_PARTIAL and "Traceback" not in err
    assert doc[lost] == [] and [p for p in doc["problems"] if p.startswith(f"{stage} failed (")]


def test_nothing_fails_without_injection(leak_prog, monkeypatch, tmp_path):
    rc, doc, err = report(leak_prog, monkeypatch, tmp_path, None)
    assert rc == 0, err
    assert not doc["census"]["problems"] and not doc["orphans"]["problems"]
    assert not failed_stages(doc["reachability"]["problems"]) and doc["reachability"]["unreachable"] >= 1


def test_page_owner_evidence_can_fail_alone(monkeypatch, tmp_path):
    prog = sample_core("page-owner", "6.1-page-owner").program()
    rc, doc, err = report(prog, monkeypatch, tmp_path, "evidence: page_owner")
    assert rc == EXIT_PARTIAL, err
    assert stage_lines(doc, "evidence: page_owner")
    assert doc["orphans"]["suspects"] and all(o["page_owner"] is None for o in doc["orphans"]["orphans"])


def test_failed_stages_are_told_from_problems():
    problems = ["a plain problem", StageFailure("scan: slab", "scan: slab failed (X: y): partial result")]
    assert failed_stages(problems) == ["scan: slab"]
    assert failed_stages(["a plain problem"]) == []


def test_a_failed_reference_scan_claims_nothing(leak_prog, monkeypatch, tmp_path):
    """With the reference scan failed no candidate was checked: the verdict
    says the answer is not known -- never "no leak" -- and metrics leave out
    the orphaned series rather than write a false 0."""
    rc, doc, _ = report(leak_prog, monkeypatch, tmp_path, "reference scan")
    assert rc == EXIT_PARTIAL and doc["orphans"]["scanned"] is False
    assert doc["verdict"].startswith("Not known whether pages leaked: the reference scan failed")
    assert "No page-allocator leak" not in doc["verdict"] and "No orphaned page" not in doc["verdict"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run_on(leak_prog, ["metrics", "--quiet"]) == EXIT_PARTIAL
    assert "vmcore_tools_memory_bytes" in out.getvalue() and "vmcore_tools_orphaned_bytes" not in out.getvalue()
