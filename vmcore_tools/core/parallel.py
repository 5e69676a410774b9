"""Reading the dump in several processes: ``--jobs``.

Fact: a drgn read holds Python's lock from start to end (measured on a
kdump core: two threads, each with a Program of its own, read 1 GiB no
faster than one), so threads cannot share the decompression that bounds a
scan of a compressed dump.  Processes can: a child forked from the
analysis shares its memory (copy on write) and its Program's open core
(``pread`` keeps no shared file offset), reads its part, decides what it
read the way the parent would, and sends back only what it found.  The
parent merges the parts in their order, so the result is the one a single
process gives.

    for found in forked_map(task, parts, jobs):     # in the order of parts
        merge(found)

Where ``fork`` is not available, or with one job, the parts run here, one
after another.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import drgn

#: the Program cache key of the jobs asked for (``set_jobs``)
JOBS_KEY = "vmcore_tools.jobs"

_task: Callable[[Any], Any] | None = None


def default_jobs() -> int:
    """The CPUs this process may run on, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:       # not Linux
        return max(1, min(8, os.cpu_count() or 1))


def set_jobs(prog: drgn.Program, jobs: int) -> None:
    """Read ``prog``'s memory in ``jobs`` processes where a reader can."""
    prog.cache[JOBS_KEY] = max(1, jobs)


def jobs_of(prog: drgn.Program) -> int:
    """The jobs asked for ``prog`` (1 unless ``set_jobs`` said otherwise)."""
    return prog.cache.get(JOBS_KEY, 1)


def can_fork() -> bool:
    """Whether this platform forks (``forked_map`` runs its parts here otherwise)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _run(part: Any) -> Any:
    assert _task is not None
    return _task(part)


def forked_map(task: Callable[[Any], Any], parts: Sequence[Any], jobs: int) -> Iterator[Any]:
    """``task(part)`` for each of ``parts``, in ``jobs`` forked processes, in
    the order of ``parts``; an exception in a child is raised here."""
    global _task
    if jobs <= 1 or len(parts) <= 1 or not can_fork():
        yield from map(task, parts)
        return
    _task = task
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(parts))) as pool:
            yield from pool.imap(_run, parts)
    finally:
        _task = None
