"""Templates of only ``{{ name }}`` render without Jinja's per-call context, exactly as
Jinja renders them (the sandbox, autoescape in html); anything else still goes to Jinja."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate import rendering
from mailgate.rendering import TemplateProblem, render

_PIECES = st.lists(
    st.one_of(
        st.text(alphabet="ab <>&'\"{}%#-\r\n\t", max_size=8),
        st.sampled_from(
            [
                "{{ name }}",
                "{{code}}",
                "{{\n name\t}}",
                "{{ missing }}",
                "{{ true }}",
                "{{ range }}",
                "{{ name|upper }}",
                "{{- name }}",
                "{% if name %}x{% endif %}",
                "{# c #}",
                "{{{ name }}",
                "{{ name }}}",
            ]
        ),
    ),
    max_size=6,
)
_VALUES = st.one_of(
    st.text(max_size=6),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def _by_jinja(source: str, data: dict[str, Any], html: bool) -> str | Exception:
    try:
        return (rendering._HTML if html else rendering._TEXT).from_string(source).render(data)
    except Exception as exc:
        return exc


@given(_PIECES, _VALUES, _VALUES, st.booleans())
def test_same_as_jinja(pieces: list[str], name: Any, code: Any, html: bool) -> None:
    source = "".join(pieces)
    data = {"name": name, "code": code}
    expected = _by_jinja(source, data, html)
    try:
        got: str | Exception = render(source, data, html=html, field="html")
    except TemplateProblem as exc:
        got = exc
    if isinstance(expected, Exception):
        assert isinstance(got, TemplateProblem), (source, got)
    else:
        # (a source without "{" is returned as it is: Jinja would turn its CRs into LFs;
        # the MIME builder makes every line ending CRLF either way)
        assert got == expected or (
            "{" not in source and got.replace("\r\n", "\n").replace("\r", "\n") == expected
        ), source


def test_plain_templates_skip_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_jinja(source: str, html: bool) -> Any:
        raise AssertionError("compiled with Jinja")

    monkeypatch.setattr(rendering, "_compile", no_jinja)
    out = render("Hi {{ name }} <{{code}}>", {"name": "<b>", "code": 7}, html=True, field="html")
    assert out == "Hi &lt;b&gt; <7>"
