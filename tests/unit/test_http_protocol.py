"""The HTTP protocol's one send per answer (ingress/http_protocol.py): what is written
reaches the socket whole and in order, a head waits only for its body or one turn of the
loop, and closing sends what waits first."""

from __future__ import annotations

import asyncio
from typing import Any

from mailgate.ingress.http_protocol import JOIN_MAX, _HeadHolding

HEAD = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n"


class _Recorder:
    """A transport that records each write (one send each on a real socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def _run(body: Any) -> _Recorder:
    async def main() -> _Recorder:
        inner = _Recorder()
        await body(_HeadHolding(inner, asyncio.get_running_loop()), inner)  # type: ignore[arg-type]
        return inner

    return asyncio.run(main())


def test_a_head_and_its_body_go_out_as_one_write() -> None:
    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(HEAD)
        assert inner.writes == []
        t.write(b"{}")
        assert inner.writes == [HEAD + b"{}"]
        await asyncio.sleep(0)
        assert inner.writes == [HEAD + b"{}"]  # the turn's flush finds nothing left

    _run(body)


def test_a_big_body_is_not_copied_to_join_its_head() -> None:
    big = memoryview(b"x" * (JOIN_MAX + 1))

    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(HEAD)
        t.write(big)
        assert inner.writes == [HEAD, bytes(big)]

    _run(body)


def test_a_head_alone_goes_out_at_the_next_turn_of_the_loop() -> None:
    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(HEAD)  # a HEAD request's answer: no body follows
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inner.writes == [HEAD]

    _run(body)


def test_other_writes_are_not_held_and_keep_their_order() -> None:
    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(b"1a\r\n" + b"x" * 26 + b"\r\n")  # a chunk of a streamed body
        assert len(inner.writes) == 1
        t.write(HEAD)
        t.writelines([b"a", b"b"])
        t.write(b"c")
        assert inner.writes[1:] == [HEAD + b"ab", b"c"]

    _run(body)


def test_close_and_write_eof_send_what_waits_first() -> None:
    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(HEAD)
        assert t.get_write_buffer_size() == len(HEAD)
        t.close()
        assert inner.writes == [HEAD] and inner.closed
        await asyncio.sleep(0)
        assert inner.writes == [HEAD]

    _run(body)


def test_a_held_head_is_dropped_once_the_connection_is_gone() -> None:
    async def body(t: _HeadHolding, inner: _Recorder) -> None:
        t.write(HEAD)
        t.abort()  # the peer reset: nothing can be sent any more
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inner.aborted and inner.writes == []
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)

    _run(body)
