"""``{{ var }}`` templates in subjects and bodies: Jinja2's sandbox, strict about variables.

A missing variable is an error naming it (invalid_template), never blank output; HTML
bodies autoescape values, text bodies and subjects do not.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

_TEXT = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


class TemplateProblem(ValueError):
    """Rendering failed; the message is safe to show the client."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> Any:
    return (_HTML if html else _TEXT).from_string(source)


def check_syntax(source: str, *, html: bool, field: str) -> None:
    """Refuse a template that cannot compile, when it is stored rather than when used."""
    try:
        _compile(source, html)
    except TemplateError as exc:
        raise TemplateProblem(f"{field}: template error: {exc.message or exc}", field) from None


def render(source: str, data: dict[str, Any], *, html: bool, field: str) -> str:
    if "{" not in source:
        return source
    try:
        return str(_compile(source, html).render(data))
    except UndefinedError as exc:
        raise TemplateProblem(f"{field}: template variable {exc.message}", field) from None
    except TemplateError as exc:
        raise TemplateProblem(f"{field}: template error: {exc.message or exc}", field) from None


def render_all(subject: str, html: str, text: str, data: dict[str, Any]) -> tuple[str, str, str]:
    rendered_subject = render(subject, data, html=False, field="subject")
    if "\r" in rendered_subject or "\n" in rendered_subject:
        raise TemplateProblem(
            "subject: a template variable put a line break in the subject", "subject"
        )
    return (
        rendered_subject,
        render(html, data, html=True, field="html"),
        render(text, data, html=False, field="text"),
    )
