"""Pictures and the HTML report on real cores: the memory map puts every
planted leaked page at its PFN in the orphaned colour, and headless Chromium
renders the self-contained HTML report with the map and the tables."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vmcore_tools.report.pictures import COLOURS, MARKER_COLOUR, ORPHANED
from vmcore_tools.census.classes import PageClass

from ..conftest import run_cli

pytestmark = pytest.mark.vm

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")


def browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    assert found, f"none of {BROWSERS} is installed (make deps installs chromium-headless-shell)"
    return found


@pytest.fixture(scope="module")
def rendered(leak_core, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run = run_cli("report", "--quiet", *leak_core.args, "--html", str(out / "report.html"), "--pictures", str(out))
    assert run.returncode == 0, run.stderr
    return leak_core, out


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_memory_map_shows_each_planted_leak_at_its_pfn(rendered):
    core, out = rendered
    m = pixels(out / "memory-map.png")
    height, width, _ = m.shape
    leaks = core.manifest["planted_leaks"]
    top_pfn = max(x["pfn"] for x in core.manifest["decoys"] + leaks)
    assert width * height >= top_pfn, "a 1 GiB guest fits one pixel per page"
    red = np.array(COLOURS[ORPHANED])
    for leak in core.expected_orphans().values():
        for pfn in range(leak["pfn"], leak["pfn"] + (1 << leak["order"])):
            assert (m[pfn // width, pfn % width] == red).all(), (leak, pfn)
    for decoy in core.manifest["decoys"]:     # held by their owners: not drawn as leaks
        # (the ring around a nearby orphan may cross it, in MARKER_COLOUR)
        pfn = decoy["pfn"]
        assert not (m[pfn // width, pfn % width] == red).all(), decoy
    # most of the picture is the classes, not the markers
    assert np.count_nonzero((m == red).all(axis=2)) < 0.01 * width * height
    assert (m == np.array(COLOURS[PageClass.FREE])).all(axis=2).any()


def test_headless_chromium_renders_map_and_tables(rendered):
    core, out = rendered
    html = out / "report.html"
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    shot = out / "screenshot.png"
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--window-size=1400,1800"]
    run = subprocess.run([*cmd, f"--screenshot={shot}", html.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    dom = subprocess.run([*cmd, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    # the browser parsed the map and the tables
    assert 'id="memory-map"' in dom and dom.count("<table") >= 5
    assert "eth2 (i40e)" in dom and "i40e rx buffers of eth2" in dom
    img = pixels(shot)
    colours = {"free": COLOURS[PageClass.FREE], "anon": COLOURS[PageClass.ANON],
               "file": COLOURS[PageClass.FILE], "slab": COLOURS[PageClass.SLAB], "markers": MARKER_COLOUR}
    area = {name: np.count_nonzero((img == np.array(c)).all(axis=2)) for name, c in colours.items()}
    # the map (and the bar) were painted: every major class colour covers real area,
    # and the rings around the orphans are on screen
    assert all(n > 200 for n in area.values()), area
