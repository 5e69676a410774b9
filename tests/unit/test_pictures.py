"""The picture logic on made-up class arrays (the real cores are drawn in
tests/kernels/test_html_report.py): block reduction, salience, SVG shape."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from vmcore_tools.census.classes import PageClass
from vmcore_tools.report.pictures import (COLOURS, MARKER_COLOUR, MAX_PIXELS, ORPHANED, class_bar_svg,
                                          growth_svg, memory_map)

SVG = "{http://www.w3.org/2000/svg}"


def test_one_pixel_per_page_when_it_fits():
    classes = np.full(512 * 512, PageClass.FREE, np.uint8)
    classes[1000] = PageClass.SLAB
    m = memory_map(classes, np.array([5000]), np.array([1], np.uint8))
    assert (m.width, m.height, m.pages_per_pixel) == (512, 512, 1)
    assert tuple(m.rgb[1000 // 512, 1000 % 512]) == COLOURS[PageClass.SLAB]
    for pfn in (5000, 5001):
        assert tuple(m.rgb[pfn // 512, pfn % 512]) == COLOURS[ORPHANED]
    assert tuple(m.rgb[5000 // 512 - 3, 5000 % 512]) == MARKER_COLOUR     # the ring around it
    assert m.pages == {"free": 512 * 512 - 3, "slab": 1, "orphaned": 2}


def test_a_block_shows_its_majority_unless_it_holds_a_leak():
    n = 4 * MAX_PIXELS - 5            # four pages per pixel; the last pixel is past the last PFN
    classes = np.full(n, PageClass.ANON, np.uint8)
    classes[0:3] = PageClass.FILE                          # block 0: 3 file, 1 anon -> file
    classes[4] = PageClass.UNATTRIBUTED                    # block 1: one unattributed -> unattributed
    classes[8] = PageClass.UNATTRIBUTED                    # block 2: unattributed, but an orphan too
    m = memory_map(classes, np.array([9]), np.array([0], np.uint8))
    assert (m.pages_per_pixel, m.width, m.height) == (4, 1024, 1024)
    row = m.rgb[0]
    assert tuple(row[0]) == COLOURS[PageClass.FILE]
    assert tuple(row[1]) == COLOURS[PageClass.UNATTRIBUTED]
    assert tuple(row[2]) == COLOURS[ORPHANED]
    assert tuple(m.rgb[-1, -1]) == COLOURS[PageClass.NO_PAGE]          # padding past the last PFN


def test_class_bar_is_svg_with_a_segment_per_class():
    svg = ET.fromstring(class_bar_svg({"free": 300, "slab": 100, "orphaned": 1, "anon": 0}, 4096))
    titles = [r.find(f"{SVG}title").text for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [t.split(":")[0] for t in titles] == ["free", "slab", "orphaned"]


def test_growth_chart_draws_orphans_and_the_classes_that_moved():
    def snap(t, orphaned, slab, free):
        return {"page_size": 4096, "taken_at": t, "orphaned_pages": orphaned,
                "classes": {"slab": slab, "free": free, "anon": 10}}
    svg = ET.fromstring(growth_svg([snap(0, 0, 5, 100), snap(1800, 10, 5, 90), snap(3600, 20, 6, 80)]))
    lines = {p.find(f"{SVG}title").text for p in svg.iter(f"{SVG}polyline")}
    assert lines == {"orphaned", "free", "slab"}      # anon did not move
