"""DATA's parser against a line-by-line model of the same rules, cut at every place."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate import replies
from mailgate.ingress.smtp_data import CR_RUN_CAP, LINE_CAP, MAX_LINE, DataParser
from mailgate.models import SmtpReply

Outcome = tuple[SmtpReply | None, bytes, int]


def model(stream: bytes, limit: int, budget: int) -> Outcome | None:
    """The rules one line at a time (as the relay read DATA before): (error, content,
    bytes of DATA including its end), or None if the stream holds no end."""
    after_crlf, error, size, out, pos, in_header = True, None, 0, [], 0, True
    while (lf := stream.find(b"\n", pos)) >= 0:
        line = stream[pos : lf + 1]
        pos = lf + 1
        if after_crlf and line == b".\r\n":
            return error, b"" if error else b"".join(out), pos
        after_crlf = line.endswith(b"\r\n")
        if error:
            continue
        body = line[:-2] if after_crlf else line[:-1]
        if body[:1] == b".":
            body = body[1:]
        if in_header:  # up to the first empty line a bare CR is a space
            if not body:
                in_header = False
            body = body.replace(b"\r", b" ")
        parts = body.split(b"\r")  # in the body a bare CR ends a line too
        if len(line) > CR_RUN_CAP or any(len(p) > MAX_LINE for p in parts):
            error = replies.LINE_TOO_LONG
            continue
        size += len(body) + 2
        if size > limit:
            error = replies.MESSAGE_TOO_BIG
            continue
        if size > budget:
            error = replies.INFLIGHT_FULL
            continue
        out.extend(p + b"\r\n" for p in parts)
    return None


def parse(chunks: list[bytes], limit: int, budget: int) -> Outcome | None:
    parser = DataParser(limit, lambda size: size <= budget)
    used = 0
    for chunk in chunks:
        end = parser.feed(chunk)
        if end >= 0:
            return parser.error, parser.content(), used + end
        used += len(chunk)
    return None


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(p % (len(stream) + 1) for p in points)})
    return [stream[a:b] for a, b in pairwise(edges) if b > a]


# Lines made of what matters to the rules: dots, bare CR and LF, long runs.
PIECES = [b"a", b"Subject: x", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n"]
PIECES += [b"y" * 500, b"z" * 997, b"w" * 1100]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=40),
    st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8),
    st.sampled_from([50, 2000, 10_000]),
    st.sampled_from([40, 3000, 1 << 30]),
)
def test_same_as_line_by_line(pieces: list[bytes], points: list[int], limit: int, budget: int):
    stream = b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    expected = model(stream, limit, budget)
    assert expected is not None
    assert parse(cut(stream, points), limit, budget) == expected
    assert parse([bytes([b]) for b in stream], limit, budget) == expected


def test_a_plain_message_is_kept_as_it_came_and_the_next_command_is_left() -> None:
    message = b"Subject: hi\r\n\r\n" + b"x" * 76 + b"\r\n"
    parser = DataParser(10_000, lambda size: True)
    data = message + b".\r\nMAIL FROM:<a@b.test>\r\n"
    assert parser.feed(data) == len(message) + 3
    assert parser.content() == message
    assert parser.size == len(message)


def test_stuffing_dots_do_not_count_toward_the_size() -> None:
    """RFC 1870: a message of exactly the limit fits however many of its lines start with
    a dot (each was sent doubled; it passed the limit by one byte per such line)."""
    message = b"Subject: dots\r\n\r\n" + b".x\r\n" * 10
    parser = DataParser(len(message), lambda size: True)
    wire = message.replace(b"\r\n.", b"\r\n..")
    assert parser.feed(wire + b".\r\n") == len(wire) + 3
    assert (parser.error, parser.content(), parser.size) == (None, message, len(message))


def test_the_end_must_follow_a_crlf() -> None:
    parser = DataParser(10_000, lambda size: True)
    assert parser.feed(b"a\n.\nb\n.\r\nc\r\n") == -1  # <LF>.<LF>, <LF>.<CRLF>: content
    assert parser.feed(b".\r\n") == 3
    assert parser.content() == b"a\r\n\r\nb\r\n\r\nc\r\n"  # each "." lost its stuffing dot


def test_an_empty_message_ends_at_once() -> None:
    parser = DataParser(10_000, lambda size: True)
    assert parser.feed(b".\r\nQUIT\r\n") == 3
    assert (parser.error, parser.content()) == (None, b"")


def test_a_line_without_end_is_dropped_not_held() -> None:
    parser = DataParser(1 << 30, lambda size: True)
    for _ in range(100):
        assert parser.feed(b"x" * 65536) == -1
    assert len(parser._partial) < LINE_CAP  # nothing of it is held
    assert parser.error is replies.LINE_TOO_LONG
    assert parser.feed(b"\r\nmore\r\n.\r\n") == 11
    assert parser.content() == b""


def test_a_cr_at_a_chunk_edge_still_makes_the_end() -> None:
    parser = DataParser(1 << 30, lambda size: True)
    assert parser.feed(b"x" * 5000 + b"\r") == -1  # a long line, dropped; it ended in CR
    assert parser.feed(b"\n.\r\n") == 4
    assert parser.error is replies.LINE_TOO_LONG


def test_the_budget_is_asked_for_the_size_so_far() -> None:
    asked: list[int] = []
    parser = DataParser(1 << 30, lambda size: asked.append(size) or size < 30)
    assert parser.feed(b"a" * 18 + b"\r\n") == -1
    assert parser.feed(b"b" * 18 + b"\r\n.\r\n") == 23
    assert asked == [20, 40]
    assert parser.error is replies.INFLIGHT_FULL


def test_lines_ended_by_bare_crs_are_taken_past_a_line_cap_without_lf() -> None:
    """Old Mac line endings: a run of 200 bare-CR lines has no LF for 2,200 bytes; each
    line is normalised to CRLF (it was refused as one line too long)."""
    stream = b"Subject: cr\r\n\r\n" + b"short line\r" * 200 + b"\r\n.\r\n"
    expected = b"Subject: cr\r\n\r\n" + b"short line\r\n" * 200 + b"\r\n"
    for points in ([], list(range(100, len(stream), 100))):
        assert parse(cut(stream, points), 10**6, 10**6) == (None, expected, len(stream))
    long_run = b"\r\n" + b"x" * 600 + b"\r" + b"y" * 600 + b"\r\n.\r\n"
    assert parse([long_run], 10**6, 10**6) == (
        None,
        b"\r\n" + b"x" * 600 + b"\r\n" + b"y" * 600 + b"\r\n",
        len(long_run),
    )


def test_a_bare_cr_in_the_header_section_is_a_space() -> None:
    """A CR alone is no line end (RFC 5321 2.3.8): in a header it cannot start another
    header (an application that strips LFs from a subject let a CR through), in the
    body it ends a line (old Mac text)."""
    stream = (
        b"From: app@example.com\r\nSubject: Order 42\rReply-To: evil@example.net\r\n"
        b"\r\nline\rnext\r\n.\r\n"
    )
    expected = (
        b"From: app@example.com\r\nSubject: Order 42 Reply-To: evil@example.net\r\n"
        b"\r\nline\r\nnext\r\n"
    )
    for points in ([], list(range(1, len(stream)))):
        assert parse(cut(stream, points), 10**6, 10**6) == (None, expected, len(stream))
    # Headers ended by bare LFs: their empty line ends the header section all the same.
    lf = b"Subject: a\rb\n\nc\rd\r\n.\r\n"
    assert parse([lf], 10**6, 10**6) == (None, b"Subject: a b\r\n\r\nc\r\nd\r\n", len(lf))
    # A header line joined by its CRs is one line: over 998 octets it is refused.
    joined = b"Subject: " + b"x" * 600 + b"\r" + b"y" * 600 + b"\r\n\r\nbody\r\n.\r\n"
    assert parse([joined], 10**6, 10**6) == (replies.LINE_TOO_LONG, b"", len(joined))
