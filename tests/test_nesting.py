"""The nesting bounds every decoder asks before a recursive decoder sees outside bytes."""

from __future__ import annotations

import json

import pytest

from trustfabric.nesting import MAX_NESTING, json_nesting_exceeds, msgpack_nesting_exceeds


@pytest.mark.parametrize("text, deep", [
    (b"[" * MAX_NESTING + b"]" * MAX_NESTING, False),
    (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), True),
    (b'{"a":' * (MAX_NESTING + 1) + b"1" + b"}" * (MAX_NESTING + 1), True),
    (b"[" * 100_000, True),  # unterminated: still refused before any decoder recurses
    (json.dumps(["[" * 500, "{" * 500]).encode(), False),  # brackets inside strings do not nest
    (json.dumps({'k\\"[': "\\\"[[[" * 200}).encode(), False),  # nor after escaped quotes
    ("[" * (MAX_NESTING + 1) + "\ud800", True),  # text with a lone surrogate is measured too
    (json.dumps([[i, {"k": [i]}] for i in range(5000)]).encode(), False),  # wide, shallow
])
def test_json_nesting(text, deep):
    assert json_nesting_exceeds(text) is deep


def test_msgpack_nesting_is_exact_at_the_bound():
    assert not msgpack_nesting_exceeds(b"\x91" * MAX_NESTING + b"\xc0")
    assert msgpack_nesting_exceeds(b"\x91" * (MAX_NESTING + 1) + b"\xc0")
    assert not msgpack_nesting_exceeds(b"\xdd\xff\xff\xff\xff")  # a huge announced length, no body: not deep
