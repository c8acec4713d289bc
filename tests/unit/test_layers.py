"""The CLI, the submission package and analysis do not import the HTTP ingress: a send
request becomes a Submission in ``mailgate.submission``, which both ingresses and
``mailgate send`` use, so the CLI never loads Starlette routes to queue a message."""

from __future__ import annotations

import ast
from pathlib import Path

import mailgate

ROOT = Path(mailgate.__file__).parent
LOWER = ("commands", "submission", "analysis")


def _ingress_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # function-level too
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {name}"
            for name in names
            if name == "mailgate.ingress" or name.startswith("mailgate.ingress.")
        ]
    return found


def test_lower_layers_do_not_import_the_http_ingress() -> None:
    files = [p for package in LOWER for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 10  # the packages are where this test looks
    offenders = [line for path in files for line in _ingress_imports(path)]
    assert offenders == []
