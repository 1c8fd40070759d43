"""Extract the Codat schemas the tests use into tests/fixtures/codat_oas_extract.json.

Codat publishes its OpenAPI documents in https://github.com/codatio/oas. The tests check shapes
against two of them (`Codat-Platform.json`, `Codat-Sync-Expenses.json`), which are large and are
not part of this repository. This script copies, from each document, only the schemas named in
ROOTS and everything they `$ref`, transitively, at the same JSON pointers as in the full document
(so `document#/components/schemas/Company` means the same in the extract). Prose and other
annotations that never change a validation result (descriptions, titles, examples, `x-...`
extensions) are left out.

Usage:
    python scripts/extract_codat_schemas.py [DIR]

DIR holds the two full documents; default $CODAT_OAS_DIR, else ../shared/codat-oas beside the
repository. The extract is written sorted and indented, so a regeneration diffs readably.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "codat_oas_extract.json"
DEFAULT_DIR = REPO.parent / "shared" / "codat-oas"

SOURCE_REPOSITORY = "https://github.com/codatio/oas"
# The commit of codatio/oas the documents were taken from, once someone has established it.
SOURCE_COMMIT = "unknown"

PLATFORM_DOC = "Codat-Platform.json"
EXPENSES_DOC = "Codat-Sync-Expenses.json"
WEBHOOK_EVENTS = (
    "company.created",
    "company.deleted",
    "connection.created",
    "connection.connected",
    "connection.failed",
    "connection.disconnected",
    "connection.reconnected",
    "connection.deleted",
    "read.completed.initial",
    "read.completed",
)

# Sync for Expenses' own webhooks: sync outcomes (issue 14) and rate limits.
EXPENSES_WEBHOOK_EVENTS = (
    "expenses.sync.successful",
    "expenses.sync.unsuccessful",
    "client.rateLimit.reached",
    "client.rateLimit.reset",
)


def webhook_schema(event_type: str) -> str:
    return f"/webhooks/{event_type}/post/requestBody/content/application~1json/schema"


# The JSON pointers the tests pass to `conform_to` (tests/sandbox/test_sandbox.py,
# tests/sandbox/test_webhook_bodies.py). A test that needs another one: add it here and regenerate.
ROOTS: dict[str, tuple[str, ...]] = {
    PLATFORM_DOC: (
        "/components/schemas/Company",
        "/components/schemas/Connection",
        "/components/schemas/Connection/definitions/dataConnectionStatus",
        *(webhook_schema(event) for event in WEBHOOK_EVENTS),
    ),
    EXPENSES_DOC: (
        "/components/schemas/Company",
        "/components/schemas/Connection",
        "/components/schemas/Connections",
        "/components/schemas/ErrorMessage",
        "/components/schemas/CompanyConfiguration",
        "/components/schemas/MappingOptions",
        "/components/schemas/Suppliers",
        "/components/schemas/Customers",
        *(webhook_schema(event) for event in EXPENSES_WEBHOOK_EVENTS),
        "/components/schemas/SyncCompleteWebhook",
        "/components/schemas/SyncFailedWebhook",
        "/components/schemas/CompanySyncStatus",
        "/components/schemas/Transactions",
    ),
}

# Keywords whose value is a map of names to schemas, one schema, or a list of schemas.
SCHEMA_MAPS = {"properties", "patternProperties", "definitions", "$defs", "dependentSchemas"}
SCHEMA_ONE = {
    "additionalProperties",
    "additionalItems",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
}
SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
# Annotations only: they never change whether an instance is valid.
DROPPED = {"description", "title", "example", "examples", "externalDocs", "$comment"}


def pointer_parts(pointer: str) -> list[str]:
    """`/a/b~1c` -> ["a", "b/c"] (RFC 6901, after undoing the URI fragment's %-escapes)."""
    pointer = unquote(pointer)
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"not a JSON pointer: {pointer!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def resolve(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer_parts(pointer):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"#{pointer} does not resolve (no {part!r})")
    return node


def prune_schema(schema: Any) -> Any:
    """`schema` without its annotations; subschemas pruned the same way."""
    if not isinstance(schema, dict):
        return schema  # a boolean schema
    pruned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DROPPED or key.startswith("x-"):
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            pruned[key] = {name: prune_schema(sub) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            pruned[key] = [prune_schema(sub) for sub in value]
        elif key in SCHEMA_ONE:
            is_list = isinstance(value, list)  # `items` as a list, before 2020-12
            pruned[key] = [prune_schema(s) for s in value] if is_list else prune_schema(value)
        else:
            pruned[key] = value
    return pruned


def refs(node: Any) -> set[str]:
    """Every `$ref` string anywhere in `node`."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= refs(item)
    return found


def enclosing(document: Any, pointer: str) -> str:
    """`pointer`, or the schema around it if the path goes through a list (allOf/0/...).

    Placing `.../allOf/0/x` on its own would turn `allOf` into an object; the whole schema
    that owns the list is copied instead, so every copied list is complete.
    """
    parts = pointer_parts(pointer)
    node = document
    for index, part in enumerate(parts):
        if isinstance(node, list):
            if index < 2:
                raise ValueError(f"#{pointer} goes through a list at the top of the document")
            owner = parts[: index - 1]
            return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in owner)
        node = node[part]
    return pointer


def place(extract: dict[str, Any], pointer: str, value: Any) -> None:
    parts = pointer_parts(pointer)
    if not parts:
        raise ValueError("cannot place a whole document")
    node = extract
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"#{pointer} passes through a non-object")
    node[parts[-1]] = value


def extract_document(document: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """The schemas at `roots` and all they refer to, each at its own pointer."""
    extract: dict[str, Any] = {}
    pending = list(roots)
    wanted: set[str] = set()
    while pending:
        pointer = pending.pop()
        if pointer in wanted:
            continue
        wanted.add(pointer)
        owner = enclosing(document, pointer)
        schema = prune_schema(resolve(document, owner))
        place(extract, owner, schema)
        for ref in sorted(refs(schema)):
            if not ref.startswith("#"):
                raise ValueError(f"#{owner} refers outside its document: {ref}")
            pending.append(ref[1:])
    # Schemas nested in one another were placed more than once, with equal values; check
    # that no later placement dropped anything an earlier one needs.
    for pointer in wanted:
        if resolve(extract, pointer) != prune_schema(resolve(document, pointer)):
            raise AssertionError(f"#{pointer} changed while extracting")
    return extract


def extract(directory: Path) -> dict[str, Any]:
    """The whole fixture, from the full documents in `directory`."""
    documents: dict[str, Any] = {}
    digests: dict[str, str] = {}
    blobs: dict[str, str] = {}
    for name, roots in ROOTS.items():
        raw = (directory / name).read_bytes()
        digests[name] = hashlib.sha256(raw).hexdigest()
        # What git calls the file: `git log --all --find-object=<id>` in a clone of codatio/oas
        # finds the commits that have exactly this file.
        blobs[name] = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
        documents[name] = extract_document(json.loads(raw), roots)
    return {
        "source": {
            "repository": SOURCE_REPOSITORY,
            "commit": SOURCE_COMMIT,
            "sha256": digests,
            "git_blob": blobs,
            "roots": {name: list(roots) for name, roots in ROOTS.items()},
            "regenerate": "python scripts/extract_codat_schemas.py [DIR with the full documents]",
            "pruned": "only ROOTS and what they $ref; annotations "
            + ", ".join(sorted(DROPPED))
            + " and x-* dropped",
        },
        "documents": documents,
    }


def dumps(fixture: dict[str, Any]) -> str:
    return json.dumps(fixture, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def default_directory() -> Path:
    return Path(os.environ.get("CODAT_OAS_DIR") or DEFAULT_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory", nargs="?", type=Path, help="folder of the full documents")
    parser.add_argument("--output", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    directory = args.directory or default_directory()
    missing = [name for name in ROOTS if not (directory / name).is_file()]
    if missing:
        print(f"{', '.join(missing)} not found in {directory}", file=sys.stderr)
        return 2
    text = dumps(extract(directory))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text)} bytes) from {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
