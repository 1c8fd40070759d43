"""`rows.loads`, the JSON decoding of every stored document: json.loads's values and errors."""

from __future__ import annotations

import json

import pytest

from store.sqlite.rows import dumps, loads

TEXTS = [
    '{"company_id":"c-1","connection":{"id":"x","status":"Linked"},"error":null}',
    '{"a": [1, 2.5, -3e2, true, false, null], "b": "\\u00e9\\n"}',
    "[]",
    '"text"',
    "12",
    "12 ",
    " {}",
    '\n{"a":1}\n',
    "NaN",
    b'{"as":"bytes"}',
]
BROKEN = ["", "{", '{"a":1} x', "[1,]", "nope", " ", '{"a":1}{}']


@pytest.mark.parametrize("text", TEXTS)
def test_loads_is_json_loads(text: str) -> None:
    # Compared as JSON again: NaN is not equal to itself.
    assert json.dumps(loads(text)) == json.dumps(json.loads(text))
    assert type(loads(text)) is type(json.loads(text))


@pytest.mark.parametrize("text", BROKEN)
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as found:
        loads(text)
    assert str(found.value) == str(expected.value)


VALUES = [{"a": [1, 2.5, None, True], "é": "\u2603\n", "n": {"x": []}}, {}]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_is_json_dumps_compact(value: dict[str, object]) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))
