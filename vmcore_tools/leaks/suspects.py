"""Suspects: the orphans grouped by what a vectorized pass can tell --
order and refcount pattern -- and, where a group is read whole, by the
device its stale frames were sent to, its allocation site, what its flags
say it was and whom its page_pool serves.  Evidence that needs a page's
bytes or records is read from an even sample of each group (``SAMPLE``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.core.stages import run_stage
from vmcore_tools.leaks.candidates import Orphans
from vmcore_tools.leaks.evidence import (PageSample, Sniffer, contents_text, device_label, history_text,
                                         page_history)
from vmcore_tools.mm.page_owner import PageOwner
from vmcore_tools.net.page_pool import pool_owners_of
from vmcore_tools.core.arrays import unique


#: refcounts from here up look like an rx ring's pagecnt_bias (USHRT_MAX-based)
BIAS_LIKE = 1024


#: allocations of a group whose bytes and records are read (evenly spaced)
SAMPLE = 64


#: run-length PFN ranges listed per suspect
RANGES_LISTED = 32


#: refcount patterns, in grouping order
PATTERNS = ("bias", "fresh", "other")


@dataclass
class Suspect:
    id: int
    label: str
    pages: int
    allocations: int
    orders: list[int]
    refcount_min: int
    refcount_max: int
    netdev: str | None
    driver: str | None
    rings_using_order: list[str]
    alloc_site: str | None = None     # page_owner: the function that allocated them
    #: allocations whose bytes (and page_owner records) were read
    sampled: int = 0
    #: of those, how many showed a frame sent to each local device ("eth2 (i40e)")
    frames: dict[str, int] = field(default_factory=dict)
    #: of those, how many held each kind of contents (evidence.CONTENT_KINDS)
    contents: dict[str, int] = field(default_factory=dict)
    #: pages per NUMA node (exact)
    nodes: dict[str, int] = field(default_factory=dict)
    #: the first ``RANGES_LISTED`` runs of contiguous orphaned pages: [first PFN, pages]
    ranges: list[list[int]] = field(default_factory=list)
    #: how many such runs the group has in all
    range_count: int = 0
    #: of the sampled allocations, how many were each kind of page cache
    #: before their owner let them go (evidence.HISTORY_KINDS)
    history: dict[str, int] = field(default_factory=dict)
    #: of the sampled page_pool pages, how many came from a pool serving
    #: each device (rings.page_pool.pool_owner; "" where the pool names none)
    pools: dict[str, int] = field(default_factory=dict)


def refcount_pattern(refcount: np.ndarray) -> np.ndarray:
    """Index into ``PATTERNS`` per refcount (uint8): bias-like (an rx
    ring's pagecnt_bias was lost with the page), 1 (fresh), or other."""
    out = np.full(refcount.size, 2, np.uint8)
    out[refcount == 1] = 1
    out[refcount >= BIAS_LIKE] = 0
    return out


def group_key(order: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """The group of allocations by order and refcount pattern, a byte each:
    ``order * len(PATTERNS) + pattern``."""
    return order * np.uint8(len(PATTERNS)) + pattern


def group_keys(found: Orphans, step: int = 1 << 18) -> np.ndarray:
    """Each orphan's ``group_key``, made a slice at a time."""
    key = np.empty(len(found), np.uint8)
    for lo in range(0, key.size, step):
        sl = slice(lo, lo + step)
        key[sl] = group_key(found.order[sl], found.pattern[sl])
    return key


@dataclass
class RefcountSummary:
    """What the grouping needs of the orphans' refcounts (``refcount_summary``)."""

    pattern: np.ndarray                     # uint8 per allocation: index into PATTERNS
    ranges: dict[int, tuple[int, int]]      # group key: lowest and highest refcount
    few: dict[int, int]                     # PFN: refcount, of the groups no larger than SAMPLE


def refcount_summary(pfn: np.ndarray, order: np.ndarray, refcount: np.ndarray,
                     step: int = 1 << 18) -> RefcountSummary:
    """What the grouping needs of the refcounts of the allocations at
    ``pfn`` of ``order``, a slice at a time: each one's pattern (a byte),
    each group key's lowest and highest refcount, and the refcounts of the
    groups small enough to be read whole and split (their parts' ranges).
    So the refcounts themselves need not be kept: 4 bytes an orphan."""
    out = RefcountSummary(np.empty(refcount.size, np.uint8), {}, {})
    sizes: Counter[int] = Counter()
    for lo in range(0, refcount.size, step):
        sl = slice(lo, lo + step)
        out.pattern[sl] = refcount_pattern(refcount[sl])
        part, keys = refcount[sl], group_key(order[sl], out.pattern[sl])
        for k in unique(keys).tolist():
            at = part[keys == k]
            low, high = int(at.min()), int(at.max())
            if k in out.ranges:
                low, high = min(low, out.ranges[k][0]), max(high, out.ranges[k][1])
            out.ranges[k] = (low, high)
            sizes[k] += at.size
    few = np.array([k for k, n in sizes.items() if n <= SAMPLE], np.uint8)
    if few.size:
        for lo in range(0, refcount.size, step):
            sl = slice(lo, lo + step)
            pick = np.isin(group_key(order[sl], out.pattern[sl]), few)
            out.few.update(zip(pfn[sl][pick].tolist(), refcount[sl][pick].tolist()))
    return out


def even_sample(n: int, k: int = SAMPLE) -> np.ndarray:
    """``min(n, k)`` ranks spread evenly over ``range(n)``."""
    return np.arange(n) if n <= k else unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def members_at(mask: np.ndarray, ranks: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """Indexes of the members of ``mask`` at the given ranks (sorted), found
    a slice at a time (no index array of all members)."""
    out, seen, want = [], 0, 0
    for lo in range(0, mask.size, step):
        part = mask[lo:lo + step]
        n = int(np.count_nonzero(part))
        if want < ranks.size and ranks[want] < seen + n:
            end = np.searchsorted(ranks, seen + n)
            out.append(lo + np.flatnonzero(part)[ranks[want:end] - seen])
            want = end
        seen += n
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def pfn_ranges(pfn: np.ndarray, mask: np.ndarray, order: int,
               step: int = 1 << 18) -> tuple[list[list[int]], int]:
    """Runs of contiguous pages covered by the allocations ``pfn[mask]``
    (sorted, all of ``order``): the first ``RANGES_LISTED`` as [first PFN,
    pages], and how many in all; a slice at a time."""
    size = 1 << order
    listed: list[list[int]] = []
    count, prev = 0, -2 * size          # the last allocation of the slices before
    for lo in range(0, pfn.size, step):
        p = pfn[lo:lo + step][mask[lo:lo + step]]
        if not p.size:
            continue
        starts = np.flatnonzero(np.diff(p, prepend=prev) != size)
        lead = int(starts[0]) if starts.size else p.size      # allocations going on with the last run
        if lead and listed and count == len(listed):
            listed[-1][1] += lead * size
        ends = np.append(starts[1:], p.size)
        for s_, e_ in zip(starts[:RANGES_LISTED - len(listed)].tolist(), ends.tolist()):
            listed.append([int(p[s_]), (e_ - s_) * size])
        count += int(starts.size)
        prev = int(p[-1])
    return listed, count


def group_suspects(c: Census, found: Orphans, sampled: dict[int, PageSample],
                   records: dict[int, PageOwner], problems: list[str]) -> list[Suspect]:
    """Group the orphans, largest group first, and set ``found.suspect``.

    Groups are made by order and refcount pattern, over all orphans at once
    (a byte per orphan).  Each group's bytes, flags and page_owner records
    are read from an even sample of ``SAMPLE`` allocations (into ``sampled``
    and ``records``).  A group read whole is split by the device its frames
    were sent to, by its allocation site, by what its flags say it was
    (``evidence.page_history``) and, for page_pool pages, by whom their
    pool serves; a larger one stays whole, with its sample's shares.

    Memory: the key byte per orphan, and one group's mask at a time.  A
    larger group is kept as its key and its mask made again when its
    suspect is written; a group read whole is at most ``SAMPLE``
    allocations, kept as the indexes of its members.  (A mask per group
    kept them all alive at once: a byte per orphan and group.)"""
    histories: dict[int, str] = {}
    pool_owners: dict[int, str] = {}
    sniff = run_stage("evidence: frames", lambda: Sniffer(c), None, problems)
    owners = c.page_owners
    ring_orders = c.rings.orders_by_driver(c.memmap)
    key = group_keys(found)
    #: (pattern, order, key of a larger group | indexes of a part of a group read whole, pages, device, site)
    groups: list[tuple[str, int, int | np.ndarray, int, tuple[str | None, str | None], str | None]] = []
    for k in unique(key).tolist():
        mask = key == k
        n = int(np.count_nonzero(mask))
        pick = members_at(mask, even_sample(n))
        del mask
        pfns = found.pfn[pick]
        order = k // len(PATTERNS)
        if sniff is not None:
            def read() -> None:
                for p in pfns.tolist():
                    if (s := sniff(p, order)) is not None:
                        sampled[p] = s
            run_stage("evidence: contents", read, None, problems)
        if owners is not None:
            records.update(run_stage("evidence: page_owner", lambda: owners.lookup(pfns), {}, problems))
        histories.update(run_stage("evidence: history", lambda: page_history(c, pfns), {}, problems))
        from_pools = [p for p in pfns.tolist() if histories.get(p) == "page_pool page"]
        if from_pools:
            pool_owners.update(run_stage("evidence: page_pool", lambda: pool_owners_of(c.prog, from_pools), {},
                                         problems))
        pattern = PATTERNS[k % len(PATTERNS)]
        if pick.size < n:
            groups.append((pattern, order, k, n << order, _device(pfns, sampled), None))
            continue
        split: dict[tuple, list[int]] = {}
        for i, p in zip(pick.tolist(), pfns.tolist()):
            s, rec = sampled.get(p), records.get(p)
            dev = (s.frame.netdev, s.frame.driver) if s and s.frame and s.frame.netdev else (None, None)
            split.setdefault((dev, rec.alloc_site if rec else None, histories.get(p), pool_owners.get(p)),
                             []).append(i)
        for (dev, site, _, _), idx in split.items():
            groups.append((pattern, order, np.array(idx, np.int64), len(idx) << order, dev, site))

    suspects = []
    for sid, (pattern, order, members, _, (netdev, driver), site) in enumerate(sorted(groups, key=lambda g: -g[3])):
        if isinstance(members, int):        # a larger group: all orphans of its key
            mask = key == members
            found.suspect[mask] = sid
            pfn, refcounts = found.pfn, found.refcount_ranges[members]
        else:                               # a part of a group read whole: its members
            found.suspect[members] = sid
            pfn = found.pfn[members]
            mask = np.ones(members.size, bool)
            part = [found.few_refcounts[p] for p in pfn.tolist()]
            refcounts = (min(part), max(part))
        suspects.append(_suspect(c, sid, pattern, order, pfn, refcounts, mask, netdev, driver, site, sampled,
                                 ring_orders, histories, pool_owners))
        del mask
    return suspects


def _device(pfns: np.ndarray, sampled: dict[int, PageSample]) -> tuple[str | None, str | None]:
    """The local device most of a sample's frames were sent to, if most were."""
    devs = Counter((s.frame.netdev, s.frame.driver) for p in pfns.tolist()
                   if (s := sampled.get(p)) and s.frame and s.frame.netdev)
    if devs:
        dev, n = devs.most_common(1)[0]
        if 2 * n > pfns.size:
            return dev
    return None, None


def _suspect(c: Census, sid: int, pattern: str, order: int, pfn: np.ndarray, refcounts: tuple[int, int],
             mask: np.ndarray, netdev: str | None, driver: str | None, site: str | None,
             sampled: dict[int, PageSample], ring_orders: dict[int, list[str]], histories: dict[int, str],
             pool_owners: dict[int, str]) -> Suspect:
    """The suspect of the orphans ``pfn[mask]`` (``pfn`` sorted; their
    lowest and highest refcount)."""
    n = int(np.count_nonzero(mask))
    sample = pfn[members_at(mask, even_sample(n))].tolist()
    seen = [sampled[p] for p in sample if p in sampled]
    frames = Counter(s.frame.device for s in seen if s.frame and s.frame.device)
    contents = Counter(s.contents for s in seen)
    nodes: dict[str, int] = {}
    for z in c.zones:           # pfn is sorted: each zone is a slice of it
        lo, hi = np.searchsorted(pfn, [z.start_pfn, z.end_pfn])
        inside = int(np.count_nonzero(mask[lo:hi])) << order
        if inside:
            nodes[str(z.node)] = nodes.get(str(z.node), 0) + inside
    ranges, range_count = pfn_ranges(pfn, mask, order)
    s = Suspect(sid, "", n << order, n, [order], *refcounts, netdev, driver, sorted(ring_orders.get(order, [])),
                site, len(seen), dict(frames), dict(contents), nodes, ranges, range_count,
                dict(Counter(histories[p] for p in sample if p in histories)),
                dict(Counter(pool_owners[p] for p in sample if p in pool_owners)))
    s.label = _label(pattern, s)
    return s


def _label(pattern: str, s: Suspect) -> str:
    order_txt = "/".join(str(o) for o in s.orders)
    lo, hi = s.refcount_min, s.refcount_max
    refcount = f"refcount {lo}" if lo == hi else f"refcount {lo}-{hi}"
    what = {
        "bias": f"{refcount}, bias-like: an rx ring's pagecnt_bias was lost with them",
        "fresh": f"refcount 1, {contents_text(s.contents, s.sampled)}",
        "other": refcount,
    }[pattern]
    was_cache = bool(s.history) and sum(s.history.values()) == s.sampled
    if was_cache:       # all of them were page cache: no ring to suspect
        kind = max(s.history, key=s.history.get)
        what = f"{refcount}, {history_text(kind, lo, hi, s.pools)}"
    elif s.history:
        what += "; " + ", ".join(f"{k} released but referenced in {v} of {s.sampled} sampled"
                                 for k, v in sorted(s.history.items()))
    text = f"{s.allocations} order-{order_txt} allocations ({s.pages} pages), {what}"
    whole = s.sampled == s.allocations
    if s.netdev:
        device = device_label(s.netdev, s.driver)
        text += f"; stale frames addressed to {device}"
        if not whole:
            text += f" in {s.frames.get(device, 0)} of {s.sampled} sampled"
    elif s.rings_using_order and not was_cache:
        text += f"; rings using order-{order_txt} pages: {', '.join(s.rings_using_order)}"
    if s.alloc_site:
        text += f"; allocated by {s.alloc_site}"
    return text
