"""Codat's published OpenAPI documents (../shared/codat-oas), as JSON Schema validators."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# Beside the repository, as in CI; CODAT_OAS_DIR points elsewhere (e.g. from a clone in /tmp).
OAS = Path(os.environ.get("CODAT_OAS_DIR") or Path(__file__).parents[2] / "shared" / "codat-oas")
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
def _registry(document: str) -> Registry:
    if not (OAS / document).is_file():
        pytest.fail(
            f"Codat's OpenAPI document {document} is not in {OAS} (shared/ beside the repo)"
        )
    contents = _nullable(json.loads((OAS / document).read_text()))
    resource = Resource.from_contents(contents, default_specification=DRAFT202012)
    return Registry().with_resource(f"urn:codat:{document}", resource)


def conform_to(instance: Any, pointer: str, document: str) -> None:
    """Fail with every schema error of `instance` against `document#pointer`."""
    validator = Draft202012Validator(
        {"$ref": f"urn:codat:{document}#{pointer}"},
        registry=_registry(document),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, "\n".join(errors)
