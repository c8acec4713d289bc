"""The docs name every setting of relay.toml.example and every HTTP error code the code can
answer with: a key or code added without its documentation fails here, naming it."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from mailgate.config import Settings

ROOT = Path(__file__).parents[2]
SRC = ROOT / "src" / "mailgate"
# The native API's error shapes; the compatibility dialects answer in their seeds' shapes,
# and the dashboard in pages.
NATIVE = [p for p in SRC.rglob("*.py") if not {"compat", "ui"} & set(p.parts)]


def docs_text() -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(f.read_text() for f in files)


def setting_names(table: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from setting_names(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:  # [[providers]], [[domains]]...
                yield from setting_names(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_setting_of_the_example_is_documented() -> None:
    example = tomllib.loads((ROOT / "relay.toml.example").read_text())
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(
        {
            name
            for name in setting_names(example)
            if not re.search(rf"`{re.escape(name.rsplit('.', 1)[-1])}\b", reference)
        }
    )
    assert not missing, f"not in docs/configuration.md: {missing}"


_CODE = re.compile(r"[a-z]+(_[a-z]+)+|[a-z]{4,}")


def _string(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def error_codes() -> dict[str, str]:
    """Each code a native answer can carry -> where it is raised."""
    found: dict[str, str] = {}
    for path in NATIVE:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            code = None
            codes: list[str | None] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name == "ApiError" and len(node.args) >= 2:
                    codes.append(_string(node.args[1]))
                if name == "invalid" and node.args:  # submission.prepare.invalid(code, ...)
                    codes.append(_string(node.args[0]))
                codes += [_string(k.value) for k in node.keywords if k.arg == "error_code"]
                receiver = getattr(getattr(node.func, "value", None), "id", "")
                if name == "get" and receiver == "codes" and len(node.args) == 2:
                    codes.append(_string(node.args[1]))
            elif isinstance(node, ast.Dict):  # {"code": "...", "message": ...}
                codes += [
                    _string(v)
                    for k, v in zip(node.keys, node.values, strict=True)
                    if _string(k) == "code"
                ]
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                names = [getattr(t, "id", "") for t in node.targets]
                if any("codes" in n.lower() for n in names):  # a table of codes
                    codes += [_string(v) for v in node.value.values]
            for code in codes:
                if code and _CODE.fullmatch(code):
                    found.setdefault(code, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_scan_finds_the_codes() -> None:
    codes = error_codes()
    # A change to how errors are raised must not leave the other test checking nothing.
    assert {"invalid_json", "payload_too_large", "recipient_suppressed", "missing_from"} <= set(
        codes
    ), sorted(codes)
    assert len(codes) >= 40, sorted(codes)


def test_every_error_code_is_documented() -> None:
    text = docs_text()
    missing = {code: at for code, at in error_codes().items() if f"`{code}`" not in text}
    assert not missing, f"error codes not in README.md or docs/: {missing}"


def fields_of(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        kind = info.annotation
        inner = get_args(kind)[0] if get_origin(kind) is list else kind
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from fields_of(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_the_example_holds_every_setting() -> None:
    """relay.toml.example is the full reference: every key of every section is in it, set
    or commented out."""
    example = (ROOT / "relay.toml.example").read_text()
    keys = set(re.findall(r"^[# ]*([a-z_]+)\s*=", example, re.MULTILINE))
    keys |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=", example))  # in inline tables
    missing = sorted(
        name
        for name in fields_of(Settings)
        if name != "source" and name.rsplit(".", 1)[-1] not in keys
    )
    assert not missing, f"not in relay.toml.example: {missing}"
