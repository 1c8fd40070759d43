"""Codat's published schemas, as JSON Schema validators.

They are read from tests/fixtures/codat_oas_extract.json: the part of Codat's OpenAPI documents
(github.com/codatio/oas) the tests use, at the same JSON pointers as in the full documents.
scripts/extract_codat_schemas.py makes it; tests/fixtures/README.md says how.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

FIXTURE = Path(__file__).parent.parent / "fixtures" / "codat_oas_extract.json"
PLATFORM_DOC = "Codat-Platform.json"
EXPENSES_DOC = "Codat-Sync-Expenses.json"


def _nullable(node: Any) -> Any:
    """Codat's 3.1 documents still say `nullable: true` (OpenAPI 3.0): make it JSON Schema."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        if "$ref" in node:
            node["anyOf"] = [{"$ref": node.pop("$ref")}, {"type": "null"}]
        elif isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
    return node


@cache
def fixture() -> dict[str, Any]:
    """The extract as stored: {"source": ..., "documents": {name: pruned document}}."""
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text())
    return loaded


def registry(document: str, contents: dict[str, Any]) -> Registry:
    """`contents` (a whole or pruned OpenAPI document) as the resource `urn:codat:{document}`."""
    resource = Resource.from_contents(_nullable(contents), default_specification=DRAFT202012)
    found: Registry = Registry().with_resource(f"urn:codat:{document}", resource)
    return found


@cache
def _registry(document: str) -> Registry:
    return registry(document, fixture()["documents"][document])


def schema_errors(instance: Any, pointer: str, document: str, against: Registry) -> list[str]:
    """Every schema error of `instance` against `document#pointer` in `against`."""
    validator = Draft202012Validator(
        {"$ref": f"urn:codat:{document}#{pointer}"},
        registry=against,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def _has(document: str, pointer: str) -> bool:
    node: Any = fixture()["documents"][document]
    for part in pointer.lstrip("/").split("/") if pointer else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def conform_to(instance: Any, pointer: str, document: str) -> None:
    """Fail with every schema error of `instance` against `document#pointer`."""
    if not _has(document, pointer):
        pytest.fail(
            f"{document}#{pointer} is not in {FIXTURE.name}: add it to ROOTS in"
            " scripts/extract_codat_schemas.py and regenerate (tests/fixtures/README.md)"
        )
    errors = schema_errors(instance, pointer, document, _registry(document))
    assert not errors, "\n".join(errors)
