"""A request body's bytes as JSON, and what no JSON value the relay takes may hold.

pydantic-core parses first (json_text); what it refuses, the json module decides, with
its precise error. Either way the values are checked for what JSON text cannot carry
and Python's parsers still read: a lone surrogate (from a \\uD800 escape), NaN or an
infinity. A refusal is a 400 ``invalid_json`` naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from mailgate import json_text
from mailgate.submission.prepare import ApiError
from mailgate.text import utf8_encodable


def decode(held: list[bytearray]) -> Any:
    """The body in ``held`` (taken out of it, so that only this holds the bytes) as JSON."""
    body = held.pop()
    obj = json_text.parse(body)
    if obj is not None:
        return _finite(obj)
    try:
        # What pydantic-core refused, the json module decides (json_text says why).
        # Decoded first and the bytes dropped before parsing (json.loads of bytes decodes
        # them itself, and holds them with the text and the values parsed: with a big
        # attachment three copies at once, now two).
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        del body
        escapes = _SURROGATE_ESCAPE.search(text) is not None
        obj = json.loads(text)
        del text
    except (ValueError, UnicodeDecodeError) as exc:
        why = str(exc)
        if "integer string conversion" in why:  # Python's limit, in Python's words
            why = "a number has more than 4300 digits"
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {why}") from None
    except RecursionError:
        raise _too_deep() from None
    if escapes:
        where = _where(obj, _lone_surrogate)
        if where is not None:
            raise ApiError(
                400,
                "invalid_json",
                "the body is not valid JSON text: an unpaired UTF-16 surrogate escape"
                f" in {where or 'the body'}",
                where or None,
            )
    return _finite(obj)


# A \uD800-\uDFFF escape: only through one can a JSON body hold a lone surrogate (UTF-8
# cannot encode them), which no header, address or stored text can carry.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: object) -> bool:
    return isinstance(value, str) and not utf8_encodable(value)


def _non_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _first_bad(obj: Any, path: str, bad: Callable[[object], bool]) -> str | None:
    """The field path of the first value (or key) that is ``bad``, or None."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            found = _first_bad(item, f"{path}[{i}]", bad)
            if found is not None:
                return found
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if bad(key):
                return f"{path}.{key!a}" if path else ascii(key)
            found = _first_bad(value, f"{path}.{key}" if path else key, bad)
            if found is not None:
                return found
    elif bad(obj):
        return path
    return None


def _where(obj: Any, bad: Callable[[object], bool]) -> str | None:
    """:func:`_first_bad` from the top; a body nested past Python's recursion is a 400."""
    try:
        return _first_bad(obj, "", bad)
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> ApiError:
    return ApiError(400, "invalid_json", "the body is nested too deeply")


def _finite(obj: Any) -> Any:
    """``obj``, unless it holds NaN or an infinity: JSON has no such number (both parsers
    read ``NaN``, ``Infinity`` and 1e400), and an answer or a webhook echoing one would
    not be JSON. 400 naming the field."""
    where = _where(obj, _non_finite)
    if where is None:
        return obj
    raise ApiError(
        400,
        "invalid_json",
        f"the body is not valid JSON: {where or 'the body'} is NaN, an infinity or a number"
        " too large for a double",
        where or None,
    )
