"""The template sandbox's bounds (rendering.py): what would take the event loop or memory
is refused, and the everyday uses of the same filters and methods are not."""

from __future__ import annotations

import pytest

from mailgate.rendering import TemplateProblem, render


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 'a\nb'|indent }}", "a\n    b"),  # indent's own default width (4)
        ("{{ 'a\nb'|indent(2, true) }}", "  a\n  b"),
        ("{{ 'x'|center(5) }}", "  x  "),
        ("{{ '{:,}'.format(25000000) }}", "25,000,000"),  # a big number is no width
        ("{{ '%d items' % 12345678901 }}", "12345678901 items"),
        ("{{ 'x'.rjust(3) }}", "  x"),
        ("{% for c in 'abc' %}{{ c }}{% endfor %}", "abc"),
        ("{{ [1, 2] + [3] }}", "[1, 2, 3]"),
        ("{{ 'a' ~ 'b' }}", "ab"),
    ],
)
def test_everyday_templates_render(source: str, expected: str) -> None:
    assert render(source, {}, html=False, field="text") == expected


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("{% set s='x'*4000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", "loop"),
        ("{{ ''|center(100000000) }}", "width"),
        ("{{ 'x'|center(width=100000000) }}", "width"),
        ("{{ 'x'.ljust(100000000) }}", "width"),
        ("{{ '%20000000d'|format(1) }}", "format width"),
        ("{{ '{:>200000000}'.format(1) }}", "format width"),
        ("{{ '%200000000d' % 1 }}", "format width"),
        ("{% set a='x'*9000000 %}{% set b=a~a %}{{ b|length }}", "too long"),
        ("{% set l = range(100000)|list %}{% set l = l+l %}{{ l|length }}", "too long"),
    ],
)
def test_what_would_take_the_loop_or_memory_is_refused(source: str, why: str) -> None:
    with pytest.raises(TemplateProblem, match=why):
        render(source, {}, html=False, field="text")
