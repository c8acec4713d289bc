"""json_text: pydantic-core's JSON on the request path, held to the json module's answers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.json_text import dumps, dumps_text, parse

# Every JSON value the json module reads: big integers, floats with NaN and Infinity
# (both read them), any text (lone surrogates included: they reach a body as escapes).
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)

# The pieces of JSON text and of near misses, for bodies made of them at random.
PIECES = [*'{}[]:,"\\ue.-+0123456789', "true", "false", "null", "NaN", "Infinity", " ", "\t",
          "\n", "\r", "\x0c", "\x00", "\x1f", "\x7f", "\u00e9", "\u2028", "\ud800", "\ufeff",
          "u00e9", "ud800", "udc00", "01", "1e400"]  # fmt: skip


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, NaN included, and of the same types (1 is not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def json_module(body: bytes) -> tuple[bool, Any]:
    """What read_json's fallback makes of ``body``: (True, value) or (False, None)."""
    try:
        return True, json.loads(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):
        return False, None


@settings(max_examples=600, deadline=None)
@given(values, st.sampled_from([None, 1, 2]), st.booleans())
def test_what_parse_reads_the_json_module_reads_alike(
    value: Any, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    raw = body.encode("utf-8", "surrogatepass")
    ok, expected = json_module(raw)
    assert ok
    got = parse(raw)
    if got is not None:  # None: refused, and the json module decides
        assert same(got, expected)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=14))
def test_parse_accepts_nothing_the_json_module_refuses(pieces: list[str]) -> None:
    raw = "".join(pieces).encode("utf-8", "surrogatepass")
    got = parse(raw)
    if got is not None:
        ok, expected = json_module(raw)
        assert ok, raw
        assert same(got, expected), raw


@pytest.mark.parametrize(
    "raw",
    [
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark: the json module skips it
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-le"),
        b'{"a": "\\ud800"}',  # a lone surrogate: read_json names its field
        b'{"a": "\\udc00x"}',
        b"[" * 300 + b"]" * 300,  # deeper than pydantic-core goes, not than json
        b"null",
    ],
)
def test_what_parse_refuses_is_left_to_the_json_module(raw: bytes) -> None:
    assert parse(raw) is None
    assert json_module(raw)[0]


def test_big_integers_stay_exact() -> None:
    assert parse(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert dumps({"n": -(2**70)}) == b'{"n":-1180591620717411303424}'


@settings(max_examples=600, deadline=None)
@given(values)
def test_dumps_writes_the_values_json_dumps_writes(value: Any) -> None:
    try:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: the same error as before
        with pytest.raises(UnicodeEncodeError):
            dumps(value)
        assert dumps_text(value) == json.dumps(value)  # as a column held it before
        return
    out = dumps(value)
    assert same(json.loads(out), json.loads(expected))
    assert dumps_text(value) == out.decode()
    if not any(isinstance(v, float) for v in _leaves(value)):
        assert out == expected  # the very same text; floats may spell an exponent apart


def test_dumps_keeps_non_ascii_and_the_constants() -> None:
    assert (
        dumps({"s": "é\u2028</script>", "l": (1, 2)})
        == '{"s":"é\u2028</script>","l":[1,2]}'.encode()
    )
    assert dumps([math.nan, math.inf, -math.inf]) == b"[NaN,Infinity,-Infinity]"


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]
