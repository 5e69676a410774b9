"""``vmcore-tools metrics`` with the real Prometheus components: the
textfile passes ``promtool check metrics``, a real node_exporter (textfile
collector only, on loopback) serves it, and its values are the core's
ground truth: the orphaned bytes are the planted leaks, the classes add up
to all of memory."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from ..conftest import cli_json, run_cli, sample_core

pytestmark = pytest.mark.vm


def series(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line, the labels in name
    order (a scraper may reorder them)."""
    out = {}
    for m in re.finditer(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", text, re.M):
        labels = ",".join(sorted(re.findall(r'\w+="(?:[^"\\]|\\.)*"', m[2] or "")))
        out[f"{m[1]}{{{labels}}}" if labels else m[1]] = float(m[3])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def textfile(tmp_path_factory):
    core = sample_core("i40e-leak", "6.1")
    path = tmp_path_factory.mktemp("textfile") / "vmcore_tools.prom"
    run = run_cli("metrics", "--quiet", "--textfile", str(path), *core.args)
    assert run.returncode == 0 and not run.stdout, run.stderr
    return core, path


def test_promtool_accepts_the_textfile(textfile):
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing: make deps installs Debian's prometheus")
    _, path = textfile
    check = subprocess.run(["promtool", "check", "metrics"], stdin=path.open(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_values_are_the_ground_truth(textfile):
    core, path = textfile
    s = series(path.read_text())
    page = 4096
    planted = sum(1 << x["order"] for x in core.expected_orphans().values())
    assert s["vmcore_tools_orphaned_bytes"] == planted * page
    assert s["vmcore_tools_orphaned_allocations"] == len(core.expected_orphans())
    doc = cli_json("orphans", *core.args)
    assert s["vmcore_tools_inferred_bytes"] == doc["inferred_pages"] * page > 0
    assert s["vmcore_tools_inferred_allocations"] == doc["inferred_allocations"]
    census = run_cli("census", "--json", "--quiet", *core.args)
    total = int(re.search(r'"total_pages": (\d+)', census.stdout)[1])
    classes = {k: v for k, v in s.items() if k.startswith("vmcore_tools_memory_bytes{")}
    assert sum(classes.values()) == total * page
    assert s['vmcore_tools_memory_bytes{class="unattributed"}'] == s["vmcore_tools_unexplained_bytes"]
    assert any(k.startswith("vmcore_tools_ring_pages{") and 'driver="i40e"' in k for k in s)
    assert 0 < len([k for k in s if k.startswith("vmcore_tools_slab_cache_bytes")]) <= 20
    assert abs(s["vmcore_tools_last_success_timestamp_seconds"] - time.time()) < 3600


def test_node_exporter_serves_it(textfile):
    exporter = shutil.which("prometheus-node-exporter")
    if not exporter:
        pytest.fail("node_exporter is missing: make deps installs Debian's prometheus-node-exporter")
    _, path = textfile
    port = free_port()
    proc = subprocess.Popen([exporter, "--collector.disable-defaults", "--collector.textfile",
                             f"--collector.textfile.directory={path.parent}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = ""
        for _ in range(50):                 # up to 10 s for it to listen
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        scraped, written = series(body), series(path.read_text())
        ours = {k: v for k, v in written.items() if k != "vmcore_tools_last_success_timestamp_seconds"}
        assert ours and all(scraped.get(k) == v for k, v in ours.items()), \
            {k: (v, scraped.get(k)) for k, v in ours.items() if scraped.get(k) != v}
        assert "node_textfile_scrape_error 0" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_failed_run_leaves_the_last_good_file(textfile, tmp_path):
    _, path = textfile
    good = tmp_path / "m.prom"
    shutil.copy(path, good)
    run = run_cli("metrics", "--quiet", "--textfile", str(good), "-c", str(tmp_path / "no-such-core"))
    assert run.returncode == 2 and good.read_text() == path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]      # no temporary file left
