"""The drgn plugin: ``vmcore-tools`` commands in a scripted drgn session and
in drgn-crash, on the sample cores, through the entry point drgn loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm
BIN = Path(sys.executable).parent


def drgn_session(core, code: str) -> subprocess.CompletedProcess:
    modules = [arg for ko in core.manifest["kernel"]["test_modules"].values() for arg in ("-s", ko)]
    return subprocess.run([str(BIN / "drgn"), "-q", "-c", str(core.core), "-s", core.vmlinux, *modules,
                           "-e", code], capture_output=True, text=True, timeout=600)


def test_plugin_commands_in_a_scripted_drgn_session(leak_core, tmp_path):
    out = tmp_path / "report.json"
    run = drgn_session(leak_core, f"""
from drgn.commands import run_command
print("report rc", run_command(prog, "vmcore-tools report --quiet --fail-on-leak --json > {out}"))
print("page rc", run_command(prog, "vmcore-tools page {leak_core.manifest['planted_leaks'][0]['pfn']}"))
print("target rc", run_command(prog, "vmcore-tools buddy -c /etc/passwd"))
""")
    assert run.returncode == 0, run.stderr
    assert "report rc 1" in run.stdout, "a leak was found: --fail-on-leak's exit code"
    doc = json.loads(out.read_text())
    assert doc["schema"] == "vmcore-tools/report/3"
    assert "i40e rx buffers of eth2" in doc["verdict"]
    assert {o["pfn"] for o in doc["orphans"]["orphans"]} == \
        set(leak_core.expected_orphans())
    assert "nowhere: ORPHANED" in run.stdout and "page rc 0" in run.stdout
    assert "target rc 2" in run.stdout and "-c/-s/-d are not taken" in run.stderr


def test_plugin_command_in_drgn_crash(leak_core):
    run = subprocess.run([str(BIN / "drgn-crash"), leak_core.vmlinux, str(leak_core.core)],
                         input="vmcore-tools buddy --json\nexit\n", capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout[run.stdout.index("{"):run.stdout.rindex("}") + 1])
    assert doc["schema"] == "vmcore-tools/buddy/1"
    assert doc["free_pages_walked"] == doc["nr_free_pages"]
