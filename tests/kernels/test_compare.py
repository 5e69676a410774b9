"""compare on snapshots of real sample cores: three hosts, one of them
leaking.  The sample guests all call themselves vmct-guest, so each
snapshot is given its core's name as its host, as a fleet's collector keeps
one file per host."""

from __future__ import annotations

import json

import pytest

from ..conftest import cli_json, run_cli, sample_core

pytestmark = pytest.mark.vm
FLEET = [("i40e-leak", "6.1"), ("no-leak", "6.1"), ("no-leak", "7.3")]


def test_compare_flags_the_leaking_host_of_three(tmp_path):
    planted = {}
    for scenario, kernel in FLEET:
        core = sample_core(scenario, kernel)
        snap = cli_json("snapshot", *core.args)
        host = f"{scenario}-{kernel}"
        (tmp_path / f"{host}.json").write_text(json.dumps({**snap, "host": host}))
        planted[host] = sum(1 << x["order"] for x in core.expected_orphans().values()) * snap["page_size"] / 2**20
    doc = cli_json("compare", str(tmp_path), "--min-mb", "0.1", quiet=False)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == set(planted)
    for host, mb in planted.items():
        assert hosts[host]["mb"]["orphaned"] == pytest.approx(mb, abs=1e-3)
        assert sum(hosts[host]["share"].values()) == pytest.approx(1 + hosts[host]["share"]["orphaned"], abs=1e-3)
    assert doc["median_share"]["orphaned"] == 0.0
    assert [(o["host"], o["measure"]) for o in doc["outliers"] if o["measure"] == "orphaned"] == \
        [("i40e-leak-6.1", "orphaned")]
    run = run_cli("compare", str(tmp_path), "--min-mb", "0.1", "--fail-on-leak")
    assert run.returncode == 1 and "STANDS OUT: i40e-leak-6.1 orphaned" in run.stdout, run.stdout + run.stderr
