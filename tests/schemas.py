"""Validate a ``--json`` document against the schema it names
(``vmcore_tools/schemas/<kind>-<version>.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "vmcore_tools" / "schemas"


def schemas() -> dict[str, dict]:
    """Every schema by its ``$id``."""
    return {s["$id"]: s for s in (json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json")))}


_REGISTRY = Registry().with_resources((sid, Resource.from_contents(s)) for sid, s in schemas().items())


def validate(doc: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` is what its ``schema`` key promises."""
    kind, version = doc["schema"].removeprefix("vmcore-tools/").split("/")
    schema = schemas()[f"urn:vmcore-tools:{kind}:{version}"]
    Draft202012Validator(schema, registry=_REGISTRY).validate(doc)


def without_timings(doc):
    """``doc`` without what depends on the clock (``seconds``, ``gb_per_s``):
    what two runs on one core must agree on."""
    if isinstance(doc, dict):
        return {k: without_timings(v) for k, v in doc.items() if k not in ("seconds", "gb_per_s")}
    if isinstance(doc, list):
        return [without_timings(x) for x in doc]
    return doc
