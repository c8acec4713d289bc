"""Outbound PIPELINING (RFC 2920) against a scripted server on a loopback port.

The server here answers nothing until the whole group (MAIL, the RCPTs, DATA) has arrived,
so a client that waited for each reply would time out; it then answers each command in a
write of its own, a pause between them, as a server that handles the lines one by one
does (aiosmtplib's own reader drops replies that come like that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiosmtplib import SMTPResponseException

from mailgate.models import Outcome
from mailgate.transports.session import Endpoint, StageError, Timeouts, connect, transaction
from mailgate.transports.smtp_wire import parse_reply

TIMEOUTS = Timeouts(connect=5, command=3, data=3)
BODY = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Script:
    """How the server answers a group (a reply per command; RCPT's by recipient), and
    what it received."""

    mail: str = "250 2.1.0 OK"
    rcpt: dict[str, str] = field(default_factory=dict)  # recipient -> reply (default 250)
    data: str = "354 go ahead"
    end: str = "250 2.0.0 queued"
    drop_after_group: bool = False
    groups: list[list[bytes]] = field(default_factory=list)  # the lines of each group
    messages: list[bytes] = field(default_factory=list)
    ehlo: list[str] = field(default_factory=lambda: ["PIPELINING", "8BITMIME"])


async def _serve(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async def say(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)  # each reply in a segment of its own

    await say("220 scripted.test ESMTP")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            ext = ["250-scripted.test", *(f"250-{e}" for e in script.ehlo[:-1])]
            writer.write(("\r\n".join([*ext, f"250 {script.ehlo[-1]}"]) + "\r\n").encode())
            await writer.drain()
        elif verb == b"RSET":
            await say("250 reset")
        elif verb == b"QUIT":
            await say("221 bye")
            break
        elif verb == b"MAIL":
            group = [line]
            while not group[-1].upper().startswith(b"DATA"):
                group.append(await reader.readline())  # nothing answered before DATA
            script.groups.append(group)
            if script.drop_after_group:
                writer.close()
                return
            await say(script.mail)
            for rcpt in group[1:-1]:
                address = rcpt.decode().split("<", 1)[1].split(">", 1)[0]
                await say(script.rcpt.get(address, "250 2.1.5 OK"))
            await say(script.data)
            if script.data.startswith("354"):
                try:
                    script.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                except asyncio.IncompleteReadError:
                    break  # the client went away instead of sending a message
                await say(script.end)
        else:
            await say("500 unexpected")
    writer.close()


async def _with_server(script: Script, body: Callable[[int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0)
    try:
        await body(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def _send(script: Script, recipients: list[str], *, times: int = 1) -> list[list[object]]:
    """``times`` transactions on one connection; each one's results (or StageError)."""
    outcomes: list[list[object]] = []

    async def body(port: int) -> None:
        client = await connect(
            Endpoint("127.0.0.1", port, "scripted.test", "none"), "me.test", TIMEOUTS
        )
        for _ in range(times):
            try:
                outcomes.append(
                    list(
                        await transaction(
                            client,
                            "from@src.test",
                            recipients,
                            BODY,
                            provider="p",
                            timeouts=TIMEOUTS,
                        )
                    )
                )
            except StageError as exc:
                outcomes.append([exc])
        client.close()

    asyncio.run(_with_server(script, body))
    return outcomes


def test_the_envelope_and_data_go_out_as_one_group() -> None:
    script = Script()
    (results,) = _send(script, ["a@dest.test", "b@dest.test"])
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]  # type: ignore[attr-defined]
    assert script.groups == [
        [
            b"MAIL FROM:<from@src.test>\r\n",
            b"RCPT TO:<a@dest.test>\r\n",
            b"RCPT TO:<b@dest.test>\r\n",
            b"DATA\r\n",
        ]
    ]
    assert script.messages == [b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"]


def test_a_connection_carries_one_group_after_another() -> None:
    script = Script()
    outcomes = _send(script, ["a@dest.test"], times=3)
    assert all(r.outcome is Outcome.SENT for (r,) in outcomes)  # type: ignore[attr-defined]
    assert len(script.groups) == 3 and len(script.messages) == 3


def test_a_refused_recipient_fails_alone() -> None:
    script = Script(rcpt={"b@dest.test": "550 5.1.1 no such user"})
    (results,) = _send(script, ["a@dest.test", "b@dest.test", "c@dest.test"])
    outcomes = [(r.outcome, r.stage, r.reply.code) for r in results]  # type: ignore[attr-defined]
    assert outcomes == [
        (Outcome.SENT, "data", 250),
        (Outcome.PERMANENT, "rcpt", 550),
        (Outcome.SENT, "data", 250),
    ]


def test_every_recipient_refused_sends_no_message_even_after_354() -> None:
    """A server that says 354 although it took no recipient gets no message; the
    connection is given up (the next transaction starts on a new one)."""
    script = Script(rcpt={"a@dest.test": "550 5.1.1 no"}, data="354 go ahead anyway")
    outcomes = _send(script, ["a@dest.test"], times=2)
    (first,) = outcomes[0]
    assert (first.outcome, first.reply.code) == (Outcome.PERMANENT, 550)  # type: ignore[attr-defined]
    assert script.messages == []
    (second,) = outcomes[1]
    assert isinstance(second, StageError)  # the closed connection, not a desynced one


def test_a_refused_sender_is_the_whole_transactions_failure() -> None:
    script = Script(
        mail="550 5.7.1 sender refused",
        rcpt={"a@dest.test": "503 5.5.1 no MAIL"},
        data="503 5.5.1 no",
    )
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert (error.stage, error.reply.code) == ("mail", 550)
    assert script.messages == []


def test_data_refused_fails_the_taken_recipients_with_its_reply() -> None:
    script = Script(data="451 4.3.0 try later")
    (results,) = _send(script, ["a@dest.test"])
    ((r),) = results
    assert (r.outcome, r.stage, r.reply.code) == (Outcome.TEMPORARY, "data", 451)  # type: ignore[attr-defined]


def test_a_connection_dropped_before_the_replies_is_a_mail_stage_failure() -> None:
    script = Script(drop_after_group=True)
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert error.stage == "mail" and error.reply.code == 451  # retried: nothing was sent


def test_without_pipelining_commands_go_one_by_one() -> None:
    """A server that does not offer PIPELINING would wait forever for the group to end:
    the client must not send one to it (here the script answers only complete groups, so
    one-by-one MAIL would time out, proving the relay checks the extension)."""
    script = Script(ehlo=["8BITMIME"])
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert script.groups == []  # MAIL came alone: the server was still waiting for DATA


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"250 OK\r\n", (250, "OK")),
        (b"250-first\r\n250-second\r\n250 last\r\n", (250, "first\nsecond\nlast")),
        (b"354 go\r\n250 extra\r\n", (354, "go")),
    ],
)
def test_replies_are_read_as_aiosmtplib_reads_them(wire: bytes, expected: tuple[int, str]) -> None:
    buffer = bytearray(wire)
    assert parse_reply(buffer) == expected


def test_a_partial_reply_waits_for_the_rest() -> None:
    buffer = bytearray(b"250-first\r\n250 la")
    assert parse_reply(buffer) is None
    buffer += b"st\r\n"
    assert parse_reply(buffer) == (250, "first\nlast")
    assert buffer == b""


@pytest.mark.parametrize("wire", [b"hello\r\n", b"2" * 9000 + b"\r\n", b"250-x\r\n" * 6000])
def test_malformed_or_huge_replies_are_refused(wire: bytes) -> None:
    with pytest.raises(SMTPResponseException):
        parse_reply(bytearray(wire))
