"""Every subcommand on every sample core (ELF dumps of three kernels, the
kdump-compressed core, and the leak-free core): it runs, exits 0, and its
``--json`` validates against the schema it names (vmcore_tools/schemas/);
and the core's bytes and mtime are the same afterwards.
The live side is in test_live.py (the same commands inside a guest) and
test_growth.py (``watch``)."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

import pytest

from ..conftest import KERNELS, cli_json, run_cli, sample_core

pytestmark = pytest.mark.vm

CORES = [pytest.param(s, k, id=f"{s}-{k}") for s, k in
         [("i40e-leak", k) for k in KERNELS] + [("i40e-leak-kdump", "6.1"), ("no-leak", "6.1")]] + \
    [pytest.param(s, "6.1-arm64", id=f"{s}-6.1-arm64", marks=pytest.mark.full)   # arm64's, in make test-all
     for s in ("i40e-leak", "i40e-leak-kdump")]
SVG = "{http://www.w3.org/2000/svg}"


def fingerprint(path) -> tuple[int, int, str]:
    """Size, mtime (ns) and SHA-256 of a file."""
    st = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return st.st_size, st.st_mtime_ns, digest.hexdigest()


@pytest.mark.parametrize("scenario,kernel", CORES)
def test_every_subcommand_json_validates(scenario, kernel, tmp_path):
    core = sample_core(scenario, kernel)
    before = fingerprint(core.core)
    docs = {name: cli_json(name, *core.args)
            for name in ("info", "census", "buddy", "slab", "rings", "orphans", "snapshot")}
    leaks = core.manifest["planted_leaks"]
    some_pfn = next(iter(core.expected_orphans()), None) if leaks else docs["census"]["zones"][-1]["start_pfn"]
    docs["page"] = cli_json("page", str(some_pfn), *core.args)
    docs["report"] = cli_json("report", *core.args, "--html", str(tmp_path / "r.html"),
                              "--pictures", str(tmp_path / "pictures"))
    assert docs["info"]["release"] == docs["census"]["release"] == core.manifest["kernel"]["abi"]
    # the NIC drivers bound in the guest (the workload's record), each with its debug info found
    bound = {d["driver"] for d in core.manifest["netdevs"].values()} & {"i40e", "igb", "e1000e", "virtio_net"}
    assert docs["info"]["nic_drivers"] == {
        driver: {"devices": core.netdevs(driver), "debug_info": True} for driver in bound}
    assert docs["report"]["census"]["classes"] == docs["census"]["classes"]
    assert docs["snapshot"]["orphaned_pages"] == docs["orphans"]["orphaned_pages"] \
        == sum(1 << x["order"] for x in core.expected_orphans().values())
    if leaks:
        assert docs["page"]["class"] == "unattributed" and docs["page"]["references"] == []

    # diff of a snapshot with itself: valid, nothing grew; its growth chart is SVG
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps(docs["snapshot"]))
    d = cli_json("diff", str(snap), str(snap), "--svg", str(tmp_path / "growth.svg"), quiet=False)
    assert all(g["pages"] == 0 for g in d["growth"])
    # diff --quiet, as git diff --quiet: no output, exit 1 only when the orphaned pages grew
    grown = tmp_path / "grown.json"
    grown.write_text(json.dumps({**docs["snapshot"], "orphaned_pages": docs["snapshot"]["orphaned_pages"] + 3}))
    for after, rc in ((snap, 0), (grown, 1)):
        run = run_cli("diff", "--quiet", str(snap), str(after))
        assert (run.returncode, run.stdout, run.stderr) == (rc, "", "")
    # snapshot without --json: one line of text, and -o keeps the document
    run = run_cli("snapshot", "-o", str(tmp_path / "kept.json"), *core.args)
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 1 and "written to" in run.stdout
    assert json.loads((tmp_path / "kept.json").read_text())["classes"] == docs["snapshot"]["classes"]
    svg = ET.parse(tmp_path / "growth.svg").getroot()
    assert svg.tag == f"{SVG}svg" and svg.findall(f"{SVG}polyline")
    bar = ET.parse(tmp_path / "pictures" / "classes.svg").getroot()
    assert len(bar.findall(f"{SVG}rect")) > len([v for v in docs["census"]["classes"].values() if v])
    # none of it wrote to the core
    assert fingerprint(core.core) == before
