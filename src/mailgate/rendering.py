"""``{{ var }}`` templates in subjects and bodies: Jinja2's sandbox, strict about variables.

A missing variable is an error naming it (invalid_template), never blank output; HTML
bodies autoescape values, text bodies and subjects do not.

Templates come from API clients, so rendering is bounded as well as sandboxed: any error
a template raises is the client's (422, never a 500), and ``**``, sequence ``*`` and
``+``, ``~``, format widths, ``range()``, ``{% for %}`` iterations and the output have
limits, so one request cannot take seconds of the event loop or gigabytes of memory
(``{{ 9 ** (9 ** 9) }}``, nested loops over a long string, ``''|center(10**9)``).
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError, safe_range
from markupsafe import escape

MAX_OUTPUT = 10_000_000  # characters one field may render to, and any string it builds
MAX_ITEMS = 100_000  # items of a list or tuple a template builds (range()'s own limit)
MAX_RANGE_ITEMS = 1_000_000  # range() items in all, per rendered field
# {% for %} iterations in all, per rendered field: two loops over a 4,000-character string
# took 1.85 s of the event loop, every request of the relay waiting behind them.
MAX_LOOP_ITEMS = 200_000
_MAX_POWER_BITS = 4096

_range_budget: ContextVar[list[int]] = ContextVar("range_budget")
_loop_budget: ContextVar[list[int]] = ContextVar("loop_budget")
# A width or precision in a format string (str.format, %, the format filter) that would
# make a string longer than MAX_OUTPUT before anything could measure it.
_HUGE_FORMAT = re.compile(r"\{[^{}]*:[^{}]*\d{8,}[^{}]*\}|%[-+ #0]*(?:\d{8,}|\d*\.\d{8,})")


def _counted(iterable: Any) -> Any:
    """What every ``{% for %}`` iterates (the AST is rewritten so): its items, counted
    against the field's loop budget."""
    budget = _loop_budget.get([MAX_LOOP_ITEMS])
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise SecurityError(f"more than {MAX_LOOP_ITEMS} loop iterations in one template")
        yield item


def _too_long(value: Any, extra: int = 0) -> bool:
    """Whether a string or sequence (grown by ``extra``) passes what a template may build:
    doubling a string ten times in a row would take gigabytes before the output's own
    limit saw it, and 100 additions of a 100,000-item list took 3 s."""
    if isinstance(value, str):
        return len(value) + extra > MAX_OUTPUT
    return isinstance(value, list | tuple) and len(value) + extra > MAX_ITEMS


def _sized(value: Any) -> Any:
    """A value built by ``~``, refused when too long (_too_long)."""
    if _too_long(value):
        raise SecurityError("a value built by the template would be too long")
    return value


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _HUGE_FORMAT.search(text):
        raise SecurityError("a format width or precision too large")


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.sized(")
        super().visit_Concat(node, frame)
        self.write(")")


def _bounded_range(*args: int) -> range:
    items = safe_range(*args)  # one range: at most 100,000 items (jinja2's own limit)
    budget = _range_budget.get([MAX_RANGE_ITEMS])
    budget[0] -= len(items)
    if budget[0] < 0:
        raise SecurityError(f"more than {MAX_RANGE_ITEMS} range() items in one template")
    return items


class _BoundedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=True, **options)
        self.globals["range"] = _bounded_range
        self.filters["mg_counted"] = _counted
        self.filters["center"] = _bounded_filter(self.filters["center"])
        self.filters["indent"] = _bounded_filter(self.filters["indent"])
        self.filters["format"] = _format_filter(self.filters["format"])
        self.sized = _sized

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, "mg_counted", [], [], None, None, lineno=loop.lineno
            )
        return tree

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls from templates: a str method's width past MAX_OUTPUT (``'x'.ljust(10**9)``)
        and a format width that would build a string past it (str.format) are refused."""
        if getattr(__obj, "__name__", "") in _WIDTH_METHODS and isinstance(
            getattr(__obj, "__self__", None), str
        ):
            _check_width((*args[:1], kwargs.get("width")))
        _check_format(getattr(getattr(__obj, "__wrapped__", None), "__self__", None))
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise SecurityError("the result of ** would be too large")
        elif operator == "*":
            seq, times = (left, right) if isinstance(right, int) else (right, left)
            sequence = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sequence and times > 1 and _too_long(seq, len(seq) * (times - 1)):
                raise SecurityError("the result of * would be too long")
        elif operator == "%":
            _check_format(left)
        elif operator == "+":
            both = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
            if both and _too_long(left, len(right)):
                raise SecurityError("the result of + would be too long")
        return super().call_binop(context, operator, left, right)


# str methods whose first argument is a width to pad to.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _check_width(values: Any) -> None:
    for width in values:
        if isinstance(width, int) and width > MAX_OUTPUT:
            raise SecurityError("a width this large would build too long a value")


def _bounded_filter(fn: Any) -> Any:
    """center and indent, refusing a width past MAX_OUTPUT (the value is built first);
    their own defaults and keywords are kept."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_width((*args[:1], kwargs.get("width")))
        return fn(value, *args, **kwargs)

    return bounded


def _format_filter(fn: Any) -> Any:
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_format(value)
        return fn(value, *args, **kwargs)

    return bounded


_TEXT = _BoundedSandbox(autoescape=False)
_HTML = _BoundedSandbox(autoescape=True)


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


# ``{{ name }}`` and nothing else: most API templates. Rendered without Jinja's per-call
# context (three per message were 40% of preparing a batch of 1000), with Jinja's results:
# str() of the value, escaped in html. Anything else (filters, tags, comments, whitespace
# control, literals such as true/none, a name the data lacks) goes to Jinja.
_PLAIN_VARIABLE = re.compile(r"\{\{[ \t\r\n]*([A-Za-z_][A-Za-z0-9_]*)[ \t\r\n]*\}\}")
_NEWLINES = re.compile(r"\r\n|\r")
_NOT_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})


@lru_cache(maxsize=512)
def _plain(source: str) -> tuple[list[str], list[str]] | None:
    """The literal text around each variable and the variables' names, or None unless the
    template is only text and ``{{ name }}``."""
    parts = _PLAIN_VARIABLE.split(source)
    literals, names = parts[0::2], parts[1::2]
    for text in literals:
        if "{{" in text or "{%" in text or "{#" in text or text.endswith("{"):
            return None
    if _NOT_NAMES.intersection(names):
        return None
    return [_NEWLINES.sub("\n", text) for text in literals], names  # as Jinja's lexer does


def _render_plain(literals: list[str], names: list[str], data: dict[str, Any], html: bool) -> str:
    out = [literals[0]]
    for name, text in zip(names, literals[1:], strict=True):
        value = data[name]
        out.append(escape(value) if html else str(value))
        out.append(text)
    return "".join(out)


def render(source: str, data: dict[str, Any], *, html: bool, field: str) -> str:
    if "{" not in source:
        return source
    plain = _plain(source)
    if plain is not None and all(name in data for name in plain[1]):
        rendered = _render_plain(*plain, data, html)
        if len(rendered) > MAX_OUTPUT:
            raise TemplateProblem(
                f"{field}: the template renders to more than {MAX_OUTPUT} characters", field
            )
        return rendered
    token = _range_budget.set([MAX_RANGE_ITEMS])
    loops = _loop_budget.set([MAX_LOOP_ITEMS])
    try:
        template = _compile(source, html)
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(data):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateProblem(
                    f"{field}: the template renders to more than {MAX_OUTPUT} characters", field
                )
            chunks.append(chunk)
        return "".join(chunks)
    except UndefinedError as exc:
        raise TemplateProblem(f"{field}: template variable {exc.message}", field) from None
    except TemplateError as exc:
        raise TemplateProblem(f"{field}: template error: {exc.message or exc}", field) from None
    except TemplateProblem:
        raise
    except Exception as exc:  # e.g. {{ 1 / 0 }}, {{ "a" + 1 }}: the template's fault
        raise TemplateProblem(
            f"{field}: template error: {type(exc).__name__}: {exc}"[:500], field
        ) from None
    finally:
        _range_budget.reset(token)
        _loop_budget.reset(loops)


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
