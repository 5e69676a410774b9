"""Snapshot files and growth arithmetic (pure logic; the live test in
tests/kernels/test_growth.py takes real snapshots)."""

import json

from click.testing import CliRunner

from vmcore_tools.cli.common import parse_duration
from vmcore_tools.cli.main import main
from vmcore_tools.report.snapshot import SCHEMA, steady_growth


def snap(host="h", t=0.0, orphaned=0, unattributed=100, dentry=10):
    return {"schema": SCHEMA, "host": host, "release": "r", "taken_at": t, "page_size": 4096,
            "total_pages": 1000, "classes": {"unattributed": unattributed, "free": 500},
            "slab": {"dentry": dentry}, "rings": {"i40e eth2 rx0": 233}, "orphaned_pages": orphaned}


def run_diff(tmp_path, a, b, *extra):
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(a if isinstance(a, str) else json.dumps(a))
    pb.write_text(b if isinstance(b, str) else json.dumps(b))
    return CliRunner().invoke(main, ["diff", str(pa), str(pb), *extra])


def test_diff_in_mb_and_mb_per_hour(tmp_path):
    r = run_diff(tmp_path, snap(), snap(t=1800, orphaned=256, unattributed=356), "--json")
    assert r.exit_code == 0, r.output
    g = {x["name"]: x for x in json.loads(r.output)["growth"]}
    assert g["orphaned pages"]["pages"] == 256 and g["orphaned pages"]["mb"] == 1.0
    assert g["unattributed"]["mb_per_hour"] == 2.0
    assert "dentry" not in g, "unchanged rows are left out without --all"


def test_bad_snapshots_are_one_line_errors(tmp_path):
    cases = [("not json", snap(), "not JSON"),
             ({**snap(), "schema": "vmcore-tools/snapshot/0"}, snap(), "this vmcore-tools reads"),
             ({"schema": SCHEMA, "host": "h"}, snap(), "snapshot lacks"),
             (snap(host="a"), snap(host="b"), "different hosts")]
    for a, b, message in cases:
        r = run_diff(tmp_path, a, b)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert run_diff(tmp_path, snap(host="a"), snap(host="b"), "--any-host").exit_code == 0


def test_steady_growth_needs_growth_at_every_step():
    leak = [snap(t=i, orphaned=10 * i, dentry=10 + (i % 2)) for i in range(5)]
    assert ("orphaned", "orphaned pages") in steady_growth(leak, 3)
    assert ("slab", "dentry") not in steady_growth(leak, 3), "up and down is not a leak"
    assert steady_growth(leak[:3], 3) == []


def test_durations():
    assert (parse_duration("30s"), parse_duration("10m"), parse_duration("1h"), parse_duration("5")) == (30, 600, 3600, 5)
    for bad in ("x", "0s", "-1m"):
        try:
            parse_duration(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_diff_fails_on_grown_orphans_when_asked(tmp_path):
    """The one convention: --fail-on-leak exits 1 when the orphaned pages
    grew, the report still printed; --quiet prints nothing and implies it
    (as git diff --quiet implies --exit-code)."""
    grown, flat = snap(t=1800, orphaned=256), snap(t=1800)
    r = run_diff(tmp_path, snap(), grown, "--fail-on-leak")
    assert r.exit_code == 1 and "orphaned pages" in r.output, r.output
    assert run_diff(tmp_path, snap(), flat, "--fail-on-leak").exit_code == 0
    assert run_diff(tmp_path, snap(), grown).exit_code == 0
    q = run_diff(tmp_path, snap(), grown, "--quiet")
    assert q.exit_code == 1 and q.output == ""
    assert run_diff(tmp_path, snap(), flat, "--quiet").exit_code == 0


def fleet_snap(host, t=0.0, orphaned=0, total=1000, slab=100):
    return {**snap(host=host, t=t, orphaned=orphaned), "total_pages": total,
            "classes": {"unattributed": 50, "slab": slab, "free": total - 150 - orphaned}}


def run_compare(tmp_path, snaps, *extra):
    for i, s in enumerate(snaps):
        (tmp_path / f"{i}.json").write_text(json.dumps(s))
    return CliRunner().invoke(main, ["compare", str(tmp_path), *extra])


def test_compare_flags_the_host_that_stands_out_by_share_of_ram(tmp_path):
    """Five hosts, one of twice the RAM: the big host's slab is as large a
    share as the others' and stands out on nothing; the leaking host stands
    out on its orphaned pages, whose growth its two snapshots give."""
    snaps = [fleet_snap(f"ceph-{i}") for i in range(3)] + [fleet_snap("big", total=2000, slab=200)]
    snaps += [fleet_snap("leaky", t=0.0, orphaned=10), fleet_snap("leaky", t=3600.0, orphaned=266)]
    r = run_compare(tmp_path, snaps, "--json", "--min-mb", "0.5")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    hosts = {h["host"]: h for h in d["hosts"]}
    assert len(hosts) == 5 and hosts["leaky"]["snapshots"] == 2
    assert hosts["leaky"]["orphaned_mb_per_hour"] == 1.0          # 256 pages of 4 KiB in an hour
    assert {(o["host"], o["measure"]) for o in d["outliers"]} == {("leaky", "orphaned")}
    assert d["median_share"]["orphaned"] == 0.0
    fail = run_compare(tmp_path, snaps, "--min-mb", "0.5", "--fail-on-leak")
    assert fail.exit_code == 1 and "STANDS OUT: leaky orphaned" in fail.output
    # the floor: an excess under --min-mb is not flagged
    assert json.loads(run_compare(tmp_path, snaps, "--json").output)["outliers"] == []


def test_compare_says_what_is_wrong_with_its_input(tmp_path):
    r = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert r.exit_code == 2 and "no snapshot" in r.output
