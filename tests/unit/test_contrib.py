"""The files in contrib/ that run vmcore-tools on a host: the alerting rules
pass promtool's check and its unit tests (synthetic series: a host leaking
20 MB/h alerts, a flat one does not, a stale textfile alerts), and the
systemd units pass systemd-analyze verify with the installed command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True)


def test_alert_rules_pass_promtool():
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing: make deps installs Debian's prometheus")
    rules = CONTRIB / "prometheus"
    check = run("promtool", "check", "rules", "vmcore-tools.rules.yml", cwd=rules)
    assert check.returncode == 0 and "SUCCESS: 3 rules found" in check.stdout, check.stdout + check.stderr
    tested = run("promtool", "test", "rules", "vmcore-tools.rules.test.yml", cwd=rules)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_metric_the_rules_use_is_written():
    from vmcore_tools.report import metrics
    source = Path(metrics.__file__).read_text()
    used = {w for w in (CONTRIB / "prometheus" / "vmcore-tools.rules.yml").read_text().split()
            if w.startswith(("vmcore_tools_", "deriv(vmcore_tools_"))}
    names = {w.removeprefix("deriv(").split("[")[0] for w in used}
    assert names and all(f'"{n}"' in source for n in names), names


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not on this machine")
    command = Path(sys.executable).with_name("vmcore-tools")
    assert command.exists(), command
    for unit in (CONTRIB / "systemd").iterdir():
        text = unit.read_text().replace("/usr/local/bin/vmcore-tools", str(command))
        (tmp_path / unit.name).write_text(text)
    service = (tmp_path / "vmcore-tools-metrics.service").read_text()
    assert "flock --nonblock" in service and "--textfile" in service and "SuccessExitStatus=3" in service
    verify = run(analyze, "verify", "vmcore-tools-metrics.service", "vmcore-tools-metrics.timer", cwd=tmp_path)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
