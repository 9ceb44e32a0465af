"""JSON Merge Patch: RFC 7396 appendix A, every example, and the inputs left unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from proxy.session_patch import merge_patch

#: RFC 7396 appendix A: (original, patch, result), verbatim.
APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7396_appendix_a(original: str, patch: str, result: str) -> None:
    assert merge_patch(json.loads(original), json.loads(patch)) == json.loads(result)


def test_neither_input_is_changed() -> None:
    target: dict[str, Any] = {"a": {"b": 1, "c": 2}, "d": [1]}
    patch: dict[str, Any] = {"a": {"b": None, "e": {"f": 1}}, "d": None}
    before = (copy.deepcopy(target), copy.deepcopy(patch))
    assert merge_patch(target, patch) == {"a": {"c": 2, "e": {"f": 1}}}
    assert (target, patch) == before
