"""The one bounded walk (``core.walk.bounded``): a cycle or a count past
its bound stops the walk after the entries seen once, and becomes a problem
line of the stage it runs in, or an error outside any stage."""

from __future__ import annotations

import itertools

import pytest

from vmcore_tools.core.stages import StageDamaged, failed_stages, run_stage
from vmcore_tools.core.walk import DamagedStructure, bounded


def cyclic_list(n: int, back_to: int):
    """Node addresses of a list of ``n`` nodes whose last one links back to
    node ``back_to``, followed the way drgn's iterators follow it: forever."""
    nodes = [0x1000 + 0x40 * i for i in range(n)]
    yield from nodes
    yield from itertools.cycle(nodes[back_to:])


def test_a_cycle_stops_at_the_first_node_seen_twice():
    problems: list[str] = []
    got = run_stage("vmap areas", lambda: list(bounded(cyclic_list(10, 4), "a list", 1000, key=int)), [], problems)
    assert got == [0x1000 + 0x40 * i for i in range(10)]
    assert len(problems) == 1 and isinstance(problems[0], StageDamaged)
    assert "a list is damaged: cycle at 0x1100: walk stopped after 10 entries" in problems[0]
    assert failed_stages(problems) == ["vmap areas"]      # a partial result: exit code 3


def test_a_walk_past_its_bound_stops_there():
    problems: list[str] = []
    got = run_stage("vmap areas", lambda: list(bounded(itertools.count(), "a list", 5, key=int)), [], problems)
    assert got == [0, 1, 2, 3, 4]
    assert "more than 5 entries (at 0x5)" in problems[0]


def test_a_sound_list_says_nothing():
    problems: list[str] = []
    assert run_stage("vmap areas", lambda: list(bounded(range(100), "a list", 100, key=int)), [], problems) \
        == list(range(100))
    assert problems == []


def test_damage_is_said_once_per_stage():
    problems: list[str] = []
    for walker in ("a", "b"):
        run_stage("ring walkers", lambda: list(bounded(cyclic_list(3, 0), "a list", 10, key=int)), None,
                  problems, detail=walker)
    assert len(problems) == 1


def test_outside_a_stage_damage_is_an_error():
    with pytest.raises(DamagedStructure, match="a list is damaged: cycle"):
        list(bounded(cyclic_list(3, 1), "a list", 10, key=int))
