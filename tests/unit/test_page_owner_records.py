"""Which page_owner records one allocation wrote
(``PageOwners.same_allocation``), on records as the kernel writes them:
one pass over a block's pages in PFN order, with one stack handle and task,
and on 6.1 a ``local_clock()`` per page (once per block by 6.9)."""

from vmcore_tools.mm.page_owner import PageOwner, PageOwners

HANDLE, PID = 0x0101_0001, 1
T0 = 1_376_710_184          # ns since boot: the head's allocation


def rec(pfn: int, ts: int | None, freed: int | None = 0, *, handle: int = HANDLE, pid: int | None = PID,
        allocated: bool = True) -> PageOwner:
    return PageOwner(pfn, allocated, 0, 0xCC0, pid, None if pid is None else "swapper/0", ts, freed, handle,
                     ["alloc_pages_exact+0x2a"], "inet_hashinfo2_init+0x84")


def pass_of(ts: list[int], head: int = 64) -> list[PageOwner]:
    return [rec(head + i, t) for i, t in enumerate(ts)]


def joined(records: list[PageOwner]) -> list[bool]:
    head = records[0]
    return [PageOwners.same_allocation(head, prev, nxt) for prev, nxt in zip(records, records[1:])]


def test_a_pass_the_host_preempted_for_milliseconds_is_one_allocation():
    """Pages 300 ns apart, then 40 ms between two of them: the vCPU was
    preempted in the middle of the loop, on a loaded host."""
    ts = [T0 + 300 * i for i in range(7)] + [T0 + 40_000_000 + 300 * i for i in range(57)]
    assert all(joined(pass_of(ts)))


def test_one_time_stamp_for_the_whole_block_is_one_allocation():
    assert all(joined(pass_of([T0] * 16)))


def test_a_page_freed_after_the_head_was_allocated_is_another_allocation():
    """make_alloc_exact() freed the block's tail; the same call site, in the
    same task, took its first page again a moment later."""
    records = pass_of([T0 + 300 * i for i in range(5)])
    records.append(rec(69, T0 + 9_000, freed=T0 + 2_000))
    assert joined(records) == [True] * 4 + [False]


def test_a_page_freed_before_the_head_was_allocated_is_part_of_it():
    records = pass_of([T0, T0 + 300])
    records[1].free_ts_nsec = T0 - 5_000_000
    assert joined(records) == [True]


def test_a_record_older_than_the_one_before_it_is_another_allocation():
    records = pass_of([T0, T0 + 300])
    records.append(rec(66, T0 - 1_000))
    assert joined(records) == [True, False]


def test_another_stack_task_or_a_free_page_ends_the_allocation():
    head = rec(64, T0)
    assert not PageOwners.same_allocation(head, head, rec(65, T0 + 300, handle=HANDLE + 1))
    assert not PageOwners.same_allocation(head, head, rec(65, T0 + 300, pid=PID + 1))
    assert not PageOwners.same_allocation(head, head, rec(65, T0 + 300, allocated=False))
    assert not PageOwners.same_allocation(head, head, None)


def test_records_without_task_or_time_have_their_handle_alone():
    """5.10's record has no task, time or free time."""
    records = [rec(64 + i, None, None, pid=None) for i in range(3)]
    assert all(joined(records))
    assert not PageOwners.same_allocation(records[0], records[1], rec(67, None, None, pid=None, handle=7))
