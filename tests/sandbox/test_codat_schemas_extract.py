"""tests/fixtures/codat_oas_extract.json, the part of Codat's OpenAPI documents the tests use.

Always: the extract is self-contained (every `$ref` in it resolves inside it), covers every
pointer the tests need, is stored in its canonical form, and names its source. When Codat's
full documents are at hand ($CODAT_OAS_DIR, or ../shared/codat-oas beside the repository), the
same test also re-extracts from them and requires the stored extract to be equal, and checks
that sample bodies get the same verdict from the extract as from the full documents. The test's
id says which of the two it did.
"""

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from processor.sandbox.webhook_bodies import (
    COMPANY_EVENTS,
    CONNECTION_EVENTS,
    READ_EVENTS,
    company_event,
    connection_error,
    connection_event,
    new_company,
    new_connection,
)
from scripts.extract_codat_schemas import (
    DEFAULT_DIR,
    ROOTS,
    SOURCE_REPOSITORY,
    WEBHOOK_EVENTS,
    dumps,
    extract,
    refs,
    resolve,
    webhook_schema,
)
from tests.sandbox.codat_schemas import (
    EXPENSES_DOC,
    FIXTURE,
    PLATFORM_DOC,
    fixture,
    registry,
    schema_errors,
)


def full_documents() -> Path | None:
    """Where Codat's full documents are, if anywhere: $CODAT_OAS_DIR must hold them if set."""
    if os.environ.get("CODAT_OAS_DIR"):
        return Path(os.environ["CODAT_OAS_DIR"])
    if all((DEFAULT_DIR / name).is_file() for name in ROOTS):
        return DEFAULT_DIR
    return None


FULL = full_documents()
MODE = "and-equals-extraction-from-full-documents" if FULL else "only-full-documents-absent"


def samples() -> list[tuple[str, str, Any]]:
    """(document, pointer, instance): bodies as we build them, and broken ones."""
    company = new_company("Bank of Dave", description="ours-42", tags={"region": "uk"})
    connection = new_connection(company["id"], "gbol")
    failed = {**connection, "dataConnectionErrors": [connection_error("The user cancelled.")]}
    no_id = {key: value for key, value in connection.items() if key != "id"}
    error = {
        "statusCode": 401,
        "service": "PublicApi",
        "error": "Unauthorized",
        "correlationId": "c0ffee",
        "validation": None,
        "canBeRetried": "Unknown",
        "detailedErrorCode": 0,
    }
    page = {
        "results": [connection],
        "pageNumber": 1,
        "pageSize": 100,
        "totalResults": 1,
        "_links": {"self": {"href": "/x"}, "current": {"href": "/x?page=1"}},
    }
    shapes: list[tuple[str, Any]] = [
        ("/components/schemas/Company", company),
        ("/components/schemas/Company", {**company, "dataConnections": [connection]}),
        ("/components/schemas/Company", {**company, "id": "not-a-uuid", "tags": {"k": 1}}),
        ("/components/schemas/Connection", connection),
        ("/components/schemas/Connection", failed),
        ("/components/schemas/Connection", {**connection, "status": "Unlinkd", "extra": 1}),
        ("/components/schemas/Connection", no_id),
    ]
    found = [(document, pointer, body) for document in ROOTS for pointer, body in shapes]
    status = "/components/schemas/Connection/definitions/dataConnectionStatus"
    found += [(PLATFORM_DOC, status, value) for value in ("Linked", "Connected", None)]
    for event in COMPANY_EVENTS:
        body = company_event(event, company)
        found.append((PLATFORM_DOC, webhook_schema(event), body))
        found.append((PLATFORM_DOC, webhook_schema(event), {**body, "payload": {"id": 7}}))
    for event in CONNECTION_EVENTS:
        body = connection_event(event, company, failed)
        found.append((PLATFORM_DOC, webhook_schema(event), body))
        wrong = {**body, "payload": {**body["payload"], "connection": no_id}}
        found.append((PLATFORM_DOC, webhook_schema(event), wrong))
    found += [
        (EXPENSES_DOC, "/components/schemas/ErrorMessage", error),
        (EXPENSES_DOC, "/components/schemas/ErrorMessage", {**error, "statusCode": "401"}),
        (EXPENSES_DOC, "/components/schemas/Connections", page),
        (EXPENSES_DOC, "/components/schemas/Connections", {**page, "results": [no_id]}),
    ]
    return found


def assert_self_contained() -> None:
    stored = FIXTURE.read_text()
    assert stored == dumps(json.loads(stored)), "not in canonical form: regenerate it"
    loaded = fixture()
    assert set(loaded) == {"source", "documents"}
    assert set(loaded["documents"]) == set(ROOTS)
    for name, document in loaded["documents"].items():
        resolver = registry(name, document).resolver()
        pending = list(ROOTS[name])
        assert sorted(pending) == sorted(loaded["source"]["roots"][name])
        seen: set[str] = set()
        while pending:
            pointer = pending.pop()
            if pointer in seen:
                continue
            seen.add(pointer)
            resolver.lookup(f"urn:codat:{name}#{pointer}")  # raises if it does not resolve
            for ref in refs(resolve(document, pointer)):
                assert ref.startswith("#/"), f"{name}: {ref} refers outside the document"
                pending.append(ref[1:])
        assert len(seen) > len(ROOTS[name]), f"{name}: no $ref followed, nothing checked"
    source = loaded["source"]
    assert source["repository"] == SOURCE_REPOSITORY == "https://github.com/codatio/oas"
    assert source["commit"]  # a commit hash, or "unknown" (tests/fixtures/README.md)
    assert set(source["sha256"]) == set(ROOTS)
    assert all(len(digest) == 64 for digest in source["sha256"].values())
    assert set(source["git_blob"]) == set(ROOTS)
    assert all(len(blob) == 40 for blob in source["git_blob"].values())
    assert "scripts/extract_codat_schemas.py" in source["regenerate"]


def assert_equals_extraction_from(directory: Path) -> None:
    missing = [name for name in ROOTS if not (directory / name).is_file()]
    assert not missing, f"{missing} not in {directory} ($CODAT_OAS_DIR or ../shared/codat-oas)"
    fresh = dumps(extract(directory))
    stored = FIXTURE.read_text()
    diff = "".join(
        list(
            difflib.unified_diff(
                stored.splitlines(True), fresh.splitlines(True), "stored", "re-extracted"
            )
        )[:60]
    )
    assert stored == fresh, (
        f"{FIXTURE.name} is not what {directory} gives: run "
        f"`python scripts/extract_codat_schemas.py {directory}`\n{diff}"
    )
    full = {name: registry(name, json.loads((directory / name).read_text())) for name in ROOTS}
    pruned = {name: registry(name, fixture()["documents"][name]) for name in ROOTS}
    verdicts = []
    for document, pointer, instance in samples():
        expected = sorted(schema_errors(instance, pointer, document, full[document]))
        got = sorted(schema_errors(instance, pointer, document, pruned[document]))
        assert got == expected, f"{document}#{pointer}: {instance}"
        verdicts.append(not expected)
    assert any(verdicts) and not all(verdicts), "the samples should be both valid and invalid"


@pytest.mark.parametrize("full", [FULL], ids=[MODE])
def test_extract_is_self_contained(full: Path | None) -> None:
    assert_self_contained()
    if full is not None:
        assert_equals_extraction_from(full)


def test_extract_covers_every_webhook_the_service_sends() -> None:
    assert set(COMPANY_EVENTS + CONNECTION_EVENTS + READ_EVENTS) <= set(WEBHOOK_EVENTS)
    platform = fixture()["documents"][PLATFORM_DOC]
    for event in WEBHOOK_EVENTS:
        assert webhook_schema(event) in ROOTS[PLATFORM_DOC]
        assert isinstance(resolve(platform, webhook_schema(event)), dict)
