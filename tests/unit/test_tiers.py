"""The known and inferred tiers (refs.tiers) on made-up references: a
proved word holds its page, a rule only infers a hold, and what a page so
held names inherits its rule; the references kept per page never lose the
proved one (engine._kept)."""

from vmcore_tools.refs.engine import MAX_REFS, _kept
from vmcore_tools.refs.references import ALLOCATION_RUN, DIRECT_MAP, TABLE_ENTRY, TABLE_SHAPE, Reference
from vmcore_tools.refs.tiers import inferred_holds, known_holds


def ref(target: int, source: int = -1, rule: str = "", kind: str = DIRECT_MAP) -> Reference:
    return Reference(target, kind, 0, "slab" if source < 0 else "referenced page", source=source, rule=rule)


def test_a_proved_word_in_live_memory_holds_and_what_its_page_names_is_held():
    refs = {10: [ref(10)], 11: [ref(11, source=10)], 12: [ref(12, source=11)]}
    assert known_holds(refs) == {10, 11, 12}
    assert inferred_holds(refs, known_holds(refs)) == {}


def test_a_run_tail_and_what_its_contents_name_are_inferred():
    # 20 held by a pointer; 21 its run's tail; 22 and 23 linked from 21's contents
    refs = {20: [ref(20)], 21: [ref(21, source=20, rule=ALLOCATION_RUN, kind="allocation run")],
            22: [ref(22, source=21)], 23: [ref(23, source=22)]}
    known = known_holds(refs)
    assert known == {20}
    assert inferred_holds(refs, known) == {21: ALLOCATION_RUN, 22: ALLOCATION_RUN, 23: ALLOCATION_RUN}


def test_a_proved_word_anywhere_outweighs_a_rule():
    refs = {30: [ref(30)], 31: [ref(31, source=30, rule=TABLE_SHAPE, kind=TABLE_ENTRY), ref(31)],
            32: [ref(32, source=31)]}
    assert known_holds(refs) == {30, 31, 32}


def test_a_page_held_only_by_its_own_words_is_not_proved():
    refs = {40: [ref(40, source=41, rule=TABLE_SHAPE, kind=TABLE_ENTRY)], 41: [ref(41, source=41)]}
    assert known_holds(refs) == set()
    tier = inferred_holds(refs, set())
    assert tier[40] == TABLE_SHAPE and tier[41] == "named only by pages held by inference"


def test_a_cycle_of_inferred_pages_stays_inferred():
    refs = {50: [ref(50)], 51: [ref(51, source=50, rule=ALLOCATION_RUN)], 52: [ref(52, source=51), ref(52, source=53)],
            53: [ref(53, source=52)]}
    known = known_holds(refs)
    assert known == {50}
    assert inferred_holds(refs, known) == {51: ALLOCATION_RUN, 52: ALLOCATION_RUN, 53: ALLOCATION_RUN}


def test_the_kept_references_make_room_for_a_proved_one():
    found = [ref(60, source=61 + i, rule=TABLE_SHAPE) for i in range(MAX_REFS)]
    assert not _kept(found, 70, TABLE_SHAPE)
    assert _kept(found, -1, "")                          # proved, from live memory
    assert _kept(found, 70, "")                          # proved, from a holder not kept yet
    assert not _kept(found, 61, "")                      # from a holder kept already
    found.append(ref(60))
    assert not _kept(found, 71, "")                      # one proved from live memory is enough
    full = [ref(60, source=61 + i) for i in range(2 * MAX_REFS)]
    assert not _kept(full, 99, "")
