"""DATA's bytes, as many as arrived at a time -> the message as queued, and where it ended.

Reading DATA a line at a time cost an await, a buffer search and a copy per line: about
20 us of a 2 KB message's 200 us in the relay, and hundreds of thousands of awaits for a
20 MB one. Here whole runs of lines are checked at once (a few C scans) and kept as they
arrived when none needs work, which is nearly always; a run with a line that needs work
goes line by line, with the same rules:

* the end is <CRLF>.<CRLF> only, so <LF>.<LF> or <LF>.<CRLF> cannot split a message
  (SMTP smuggling);
* a bare LF becomes CRLF (Postfix's ``smtpd_forbid_bare_newline = normalize``), and so
  does a bare CR in the body; in the header section a bare CR becomes a space, as no MTA
  may take it for a line end (RFC 5321 2.3.8): an application that strips LFs from a
  header value would otherwise let a CR start a header of the sender's choosing there;
* a leading dot is removed (RFC 5321 4.5.2);
* a line over 998 octets refuses the message (500 5.5.2), as do more than LINE_CAP
  bytes without a LF (CR_RUN_CAP if bare CRs end lines among them); a message over the
  size limit gets 552 5.3.4, one that does not fit the in-flight budget 452 4.3.1. The
  rest of a refused message is still read (and dropped) up to its end.
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate import replies
from mailgate.models import SmtpReply

MAX_LINE = 998  # octets of a line without its CRLF (RFC 5321 4.5.3.1.6)
# Bytes of a line up to and including its LF beyond which it is refused unread: what the
# line-by-line reader's stream limit (1001) let through. Bounds what a line without a LF
# can make the relay hold.
LINE_CAP = 1002
# The same for a run of lines ended by bare CRs (old Mac line endings) with no LF yet.
CR_RUN_CAP = 64 * 1024
_END = b"\r\n.\r\n"


class DataParser:
    """One DATA transaction's parser: feed() what arrives until it says where DATA ended.

    ``hold(size)``: whether the transaction may hold ``size`` bytes (the in-flight budget).
    """

    def __init__(self, limit: int, hold: Callable[[int], bool]) -> None:
        self._limit = limit
        self._hold = hold
        self.error: SmtpReply | None = None
        self.size = 0
        self._pieces: list[bytes] = []  # the message so far, each piece whole CRLF lines
        self._after_crlf = True  # the last line ended with CRLF (DATA's own did)
        self._partial = b""  # the start of a line whose LF has not come yet
        self._dropping = False  # inside a line over LINE_CAP, dropped up to its LF
        self._dropped_cr = False  # what was dropped of it ended with CR
        self._in_header = True  # no empty line yet

    def content(self) -> bytes:
        """The message as queued (CRLF lines, dots removed); empty after an error."""
        pieces = self._pieces
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def feed(self, data: bytes) -> int:
        """Take what arrived: -1 while DATA goes on, else how many bytes of ``data`` were
        DATA's (what follows belongs to the next commands)."""
        pos, n = 0, len(data)
        while pos < n:
            if self._dropping:
                lf = data.find(b"\n", pos)
                if lf < 0:
                    self._dropped_cr = data[n - 1] == 0x0D
                    return -1
                self._dropping = False
                ended_cr = data[lf - 1] == 0x0D if lf > pos else self._dropped_cr
                self._after_crlf = ended_cr
                pos = lf + 1
            elif self._partial:
                lf = data.find(b"\n", pos)
                if lf < 0:
                    self._carry(data[pos:])
                    return -1
                line = self._partial + data[pos : lf + 1]
                self._partial = b""
                pos = lf + 1
                if self._line(line):
                    return pos
            else:
                last = data.rfind(b"\n", pos)
                if last < 0:
                    self._carry(data[pos:])
                    return -1
                end = self._lines(data, pos, last + 1)
                if end >= 0:
                    return end
                pos = last + 1
        return -1

    def _carry(self, start: bytes) -> None:
        """A line's bytes without its LF: kept until it comes, or dropped once too long."""
        partial = self._partial + start
        # Bare CRs end lines too (each checked against MAX_LINE once the LF comes): such
        # a run may be longer, up to CR_RUN_CAP.
        bare_cr = partial.find(b"\r", 0, len(partial) - 1) >= 0
        if len(partial) < (CR_RUN_CAP if bare_cr else LINE_CAP):
            self._partial = partial
            return
        self._partial = b""
        self._refuse(replies.LINE_TOO_LONG)
        self._dropping = True
        self._dropped_cr = partial[-1] == 0x0D

    def _lines(self, data: bytes, start: int, stop: int) -> int:
        """Whole lines ``data[start:stop]``: -1, or where DATA ended among them."""
        if self._after_crlf and data.startswith(b".\r\n", start):
            return start + 3
        end = data.find(_END, start, stop)
        upto = stop if end < 0 else end + 2
        if self.error is not None:  # refused already: only where its lines end matters
            self._after_crlf = upto - start >= 2 and data[upto - 2] == 0x0D
            return -1 if end < 0 else end + 5
        run = data[start:upto]
        if (
            run[0] != 0x2E  # no dot to remove on the first line,
            and b"\n." not in run  # nor on the others
            and run.count(b"\r") == run.count(b"\n") == run.count(b"\r\n")  # no bare CR/LF
            and (len(run) <= MAX_LINE + 2 or max(map(len, run.split(b"\r\n"))) <= MAX_LINE)
        ):
            self._after_crlf = True
            if self._in_header and (run.startswith(b"\r\n") or b"\r\n\r\n" in run):
                self._in_header = False
            if self._count(len(run)):
                self._pieces.append(run)
        else:
            i = 0
            while i < len(run):
                lf = run.index(b"\n", i)
                self._line(run[i : lf + 1])  # never the end: that was found above
                i = lf + 1
        return -1 if end < 0 else end + 5

    def _line(self, line: bytes) -> bool:
        """One whole line: True if it is the end of DATA."""
        if self._after_crlf and line == b".\r\n":
            return True
        if line.endswith(b"\r\n"):
            body, self._after_crlf = line[:-2], True
        else:
            body, self._after_crlf = line[:-1], False
        if self.error is not None:
            return False
        if body[:1] == b".":
            body = body[1:]
        if self._in_header:
            if not body:
                self._in_header = False
            elif b"\r" in body:
                body = body.replace(b"\r", b" ")
        parts = body.split(b"\r")
        if len(line) > CR_RUN_CAP or any(len(p) > MAX_LINE for p in parts):
            self._refuse(replies.LINE_TOO_LONG)
            return False
        if not self._count(len(body) + 2):
            return False
        self._pieces.append(b"".join([p + b"\r\n" for p in parts]))
        return False

    def _count(self, grown: int) -> bool:
        """``grown`` more bytes (as they came on the wire but for the stuffing dots, as SIZE
        counts them, RFC 1870): False, and the message refused, if they pass the size
        limit or the in-flight budget."""
        self.size += grown
        if self.size > self._limit:
            self._refuse(replies.MESSAGE_TOO_BIG)
            return False
        if not self._hold(self.size):
            self._refuse(replies.INFLIGHT_FULL)
            return False
        return True

    def _refuse(self, reply: SmtpReply) -> None:
        """The first refusal stands; what was kept goes (the rest is read and dropped)."""
        if self.error is None:
            self.error = reply
        self._pieces.clear()
