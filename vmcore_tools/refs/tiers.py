"""Known and inferred holds: which referenced candidates the dump proves
held, and which only a guess holds.

A reference is *proved* when it needs no rule (``Reference.rule`` empty: a
pointer in live memory, a ring slot, a table read by its layout, a
page_owner record) and the memory that holds its word is live: memory
outside the candidates, or a candidate that is itself proved held
(``Reference.source``).  A reference that rests on an inference
(``registry.INFERENCES``: an allocation run, a physical-address match, a
table's shape) holds its page only by that inference, and so does every
word in that page's memory: a leaked page taken for a run's tail makes
the pages its contents name look held too (pages linked through their own
contents).  The pages held only that way are the *inferred tier*: the
report lists them beside the orphans, never among the held.

    >>> known = known_holds(result.references)
    >>> tier = inferred_holds(result.references, known)
    >>> tier[pfn]
    'allocation run'
"""

from __future__ import annotations

from vmcore_tools.refs.references import Reference


def known_holds(references: dict[int, list[Reference]]) -> set[int]:
    """The candidates (head PFNs) a proved reference holds: one with no rule
    from live memory outside the referenced candidates, or from a
    candidate so held (a fixed point over the candidates' own words)."""
    held = references.keys()
    known: set[int] = set()
    by_source: dict[int, list[int]] = {}
    for target, refs in references.items():
        for r in refs:
            if r.rule:
                continue
            if r.source < 0 or r.source not in held:
                known.add(target)
                break
            if r.source != target:
                by_source.setdefault(r.source, []).append(target)
    todo = list(known)
    while todo:
        for target in by_source.get(todo.pop(), ()):
            if target not in known:
                known.add(target)
                todo.append(target)
    return known


def inferred_holds(references: dict[int, list[Reference]], known: set[int]) -> dict[int, str]:
    """The referenced candidates no proved reference holds, each with the
    rule its hold rests on: its own reference's, or, for a page named only
    from the memory of pages held by inference, the rule of the page it
    was named from (the first found, sources before the pages they name)."""
    tier = {t: next((r.rule for r in refs if r.rule), "") for t, refs in references.items() if t not in known}
    by_source: dict[int, list[int]] = {}
    for target, rule in tier.items():
        if not rule:
            for r in references[target]:
                if r.source in tier and r.source != target:
                    by_source.setdefault(r.source, []).append(target)
    todo = [t for t, rule in tier.items() if rule]
    while todo:
        source = todo.pop()
        for target in by_source.get(source, ()):
            if not tier[target]:
                tier[target] = tier[source]
                todo.append(target)
    # every page here goes back to one a rule holds (the closure reads only
    # held pages), unless the references kept per page (engine._kept) lost it
    return {t: rule or "named only by pages held by inference" for t, rule in tier.items()}
