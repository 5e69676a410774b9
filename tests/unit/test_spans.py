"""Span arithmetic of the reference scan (pure logic)."""

from vmcore_tools.refscan import _subtract


def test_subtract_cuts_holes_out_of_a_span():
    assert _subtract(0, 100, [(50, 120)]) == [(0, 50)]
    assert _subtract(0, 100, [(10, 20), (30, 40)]) == [(0, 10), (20, 30), (40, 100)]
    assert _subtract(0, 100, [(200, 300)]) == [(0, 100)]
    assert _subtract(10, 20, [(0, 100)]) == []
