"""The JSON schemas themselves: valid Draft 2020-12, one per document kind
the code emits, and the class list the same as the classifier's."""

from __future__ import annotations

import re
from pathlib import Path

from jsonschema import Draft202012Validator

from vmcore_tools.census.classes import PageClass

from ..schemas import SCHEMA_DIR, schemas

PACKAGE = Path(__file__).resolve().parents[2] / "vmcore_tools"


def test_every_schema_is_valid_and_named_for_its_file():
    for path in SCHEMA_DIR.glob("*.json"):
        s = schemas()[f"urn:vmcore-tools:{path.stem.rsplit('-', 1)[0]}:{path.stem.rsplit('-', 1)[1]}"]
        Draft202012Validator.check_schema(s)


def test_every_document_kind_the_code_emits_has_a_schema():
    emitted = set()
    for source in PACKAGE.rglob("*.py"):
        emitted |= set(re.findall(r'"vmcore-tools/([a-z]+)/(\d+)"', source.read_text()))
    assert emitted, "the code names its document kinds"
    ids = set(schemas())
    for kind, version in emitted:
        assert f"urn:vmcore-tools:{kind}:{version}" in ids, kind
        s = schemas()[f"urn:vmcore-tools:{kind}:{version}"]
        assert s["properties"]["schema"]["const"] == f"vmcore-tools/{kind}/{version}"


def test_schema_classes_are_the_classifiers_classes():
    classes = schemas()["urn:vmcore-tools:common:1"]["$defs"]["classes"]
    labels = {c.label for c in PageClass if c != PageClass.NO_PAGE}
    assert set(classes["properties"]) == labels == set(classes["required"])
    assert all(p.get("description") for p in classes["properties"].values())
