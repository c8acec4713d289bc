"""One pass of the standard library's HTML parser over an html body: what the checks need.

html.parser is lenient (it never raises on bad markup), so structure problems are found by
keeping our own stack of open elements: an end tag that closes nothing, or closes over
elements that needed their own end tag, and elements left open at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Elements that never have an end tag (HTML Living Standard, "void elements").
VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "basefont",
        "bgsound",
        "frame",
        "keygen",
    ]
)
# Elements whose end tag may be omitted: leaving them open is valid HTML.
OPTIONAL_END = frozenset(
    [
        "html",
        "head",
        "body",
        "p",
        "li",
        "dt",
        "dd",
        "option",
        "optgroup",
        "tr",
        "td",
        "th",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "caption",
        "rb",
        "rt",
        "rtc",
        "rp",
    ]
)
ACTIVE = frozenset({"script", "form", "iframe", "object", "embed", "applet"})
_HIDDEN_TEXT = frozenset({"script", "style", "head", "title", "template"})
_SPACE = re.compile(r"\s+")
MAX_PROBLEMS = 5  # an issue names a few problems, not all of a broken document's


@dataclass(slots=True)
class HtmlFacts:
    links: list[str] = field(default_factory=list)  # href values of <a> / <area>
    images: int = 0  # <img> elements (tracking pixels included: they are images)
    text: str = ""  # the visible text, whitespace collapsed
    active: dict[str, int] = field(default_factory=dict)  # script/form/iframe/... counts
    problems: list[str] = field(default_factory=list)  # unclosed or mismatched tags


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.facts = HtmlFacts()
        self.stack: list[str] = []
        self.hidden = 0
        self.chunks: list[str] = []

    def _problem(self, text: str) -> None:
        if len(self.facts.problems) < MAX_PROBLEMS:
            self.facts.problems.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)
            if tag in _HIDDEN_TEXT:
                self.hidden += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)  # <br/>, <img .../>: nothing stays open

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            for name, value in attrs:
                if name == "href" and value:
                    self.facts.links.append(value.strip())
        elif tag == "img":
            self.facts.images += 1
        if tag in ACTIVE:
            self.facts.active[tag] = self.facts.active.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if tag not in self.stack:
            self._problem(f"</{tag}> closes no open <{tag}>")
            return
        while self.stack:
            top = self.stack.pop()
            if top in _HIDDEN_TEXT:
                self.hidden -= 1
            if top == tag:
                break
            if top not in OPTIONAL_END:
                self._problem(f"<{top}> is not closed before </{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.chunks.append(data)

    def finish(self) -> HtmlFacts:
        self.close()
        for tag in reversed(self.stack):
            if tag not in OPTIONAL_END:
                self._problem(f"<{tag}> is never closed")
        self.facts.text = _SPACE.sub(" ", " ".join(self.chunks)).strip()
        return self.facts


def scan(html: str) -> HtmlFacts:
    """Links, images, visible text, active content and structure problems of ``html``."""
    scanner = _Scanner()
    scanner.feed(html)
    return scanner.finish()
