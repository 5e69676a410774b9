"""Span arithmetic of the reference scan (pure logic)."""

from vmcore_tools.refs.reader import subtract_spans as _subtract


def test_subtract_cuts_holes_out_of_a_span():
    assert _subtract(0, 100, [(50, 120)]) == [(0, 50)]
    assert _subtract(0, 100, [(10, 20), (30, 40)]) == [(0, 10), (20, 30), (40, 100)]
    assert _subtract(0, 100, [(200, 300)]) == [(0, 100)]
    assert _subtract(10, 20, [(0, 100)]) == []


def test_subtract_takes_holes_in_any_order_and_overlapping():
    assert _subtract(0, 100, [(30, 40), (10, 20), (15, 35)]) == [(0, 10), (40, 100)]
    assert _subtract(0, 100, [(0, 10), (90, 100)]) == [(10, 90)]
