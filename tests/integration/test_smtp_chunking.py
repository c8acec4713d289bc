"""Outbound CHUNKING (RFC 3030 BDAT, with RFC 2920 PIPELINING) against a scripted server
on a loopback port.

With PIPELINING the server answers nothing until the whole group has arrived (MAIL, the
RCPTs and BDAT with its chunk, or DATA), so a client that waited for a reply before
sending the message would time out; it then answers each command in a write of its own,
a pause between them. Without PIPELINING it answers each line as it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from mailgate.models import Outcome
from mailgate.transports.session import Endpoint, StageError, Timeouts, connect, transaction
from mailgate.transports.smtp_wire import STREAM_FROM, chunk_form

TIMEOUTS = Timeouts(connect=5, command=3, data=3)
BODY = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Script:
    """How the server answers (RCPT's reply by recipient) and what it received."""

    mail: str = "250 2.1.0 OK"
    rcpt: dict[str, str] = field(default_factory=dict)  # recipient -> reply (default 250)
    bdat: str = "250 2.0.0 queued as chunk"
    end: str = "250 2.0.0 queued after DATA"
    drop_before_replies: bool = False
    drop_before_bdat_reply: bool = False
    ehlo: list[str] = field(default_factory=lambda: ["PIPELINING", "CHUNKING", "8BITMIME"])
    groups: list[list[bytes]] = field(default_factory=list)  # the command lines of each
    chunks: list[bytes] = field(default_factory=list)  # each BDAT's data
    messages: list[bytes] = field(default_factory=list)  # each DATA's, up to the dot
    connections: int = 0


async def _serve(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    script.connections += 1
    pipelining = "PIPELINING" in script.ehlo

    async def say(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)  # each reply in a segment of its own

    def reply_to(line: bytes) -> str:
        if line[:4].upper() == b"MAIL":
            return script.mail
        address = line.decode().split("<", 1)[1].split(">", 1)[0]
        return script.rcpt.get(address, "250 2.1.5 OK")

    await say("220 scripted.test ESMTP")
    group: list[bytes] = []
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            ext = ["250-scripted.test", *(f"250-{e}" for e in script.ehlo[:-1])]
            writer.write(("\r\n".join([*ext, f"250 {script.ehlo[-1]}"]) + "\r\n").encode())
            await writer.drain()
        elif verb in (b"MAIL", b"RCPT"):
            group.append(line)
            if not pipelining:
                await say(reply_to(line))
        elif verb in (b"BDAT", b"DATA"):
            group.append(line)
            script.groups.append(group)
            if verb == b"BDAT":
                script.chunks.append(await reader.readexactly(int(line.split()[1])))
            if script.drop_before_replies:
                writer.close()
                return
            if pipelining:
                for command in group[:-1]:
                    await say(reply_to(command))
            if verb == b"BDAT":
                if script.drop_before_bdat_reply:
                    writer.close()
                    return
                await say(script.bdat)
            else:
                await say("354 go ahead")
                script.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                await say(script.end)
            group = []
        elif verb == b"RSET":
            group = []
            await say("250 reset")
        elif verb == b"QUIT":
            await say("221 bye")
            break
        else:
            await say("500 unexpected")
    writer.close()


async def _with_server(script: Script, body: Callable[[int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(script, r, w), "127.0.0.1", 0, limit=4 * STREAM_FROM
    )
    try:
        await body(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def _send(
    script: Script,
    recipients: list[str],
    *,
    times: int = 1,
    data: bytes = BODY,
    chunking: bool = True,
) -> list[list[object]]:
    """``times`` transactions on one connection; each one's results (or StageError)."""
    outcomes: list[list[object]] = []

    async def body(port: int) -> None:
        client = await connect(
            Endpoint("127.0.0.1", port, "scripted.test", "none"), "me.test", TIMEOUTS
        )
        for _ in range(times):
            try:
                results = await transaction(
                    client,
                    "from@src.test",
                    recipients,
                    data,
                    provider="p",
                    timeouts=TIMEOUTS,
                    chunking=chunking,
                )
                outcomes.append(list(results))
            except StageError as exc:
                outcomes.append([exc])
        client.close()

    asyncio.run(_with_server(script, body))
    return outcomes


def _summary(results: list[object]) -> list[tuple[Outcome, str, int]]:
    return [(r.outcome, r.stage, r.reply.code) for r in results]  # type: ignore[attr-defined]


def test_the_envelope_and_the_message_go_out_as_one_group() -> None:
    script = Script()
    (results,) = _send(script, ["a@dest.test", "b@dest.test"])
    assert _summary(results) == [(Outcome.SENT, "data", 250), (Outcome.SENT, "data", 250)]
    assert results[0].reply.text == "queued as chunk"  # type: ignore[attr-defined]
    assert script.groups == [
        [
            b"MAIL FROM:<from@src.test>\r\n",
            b"RCPT TO:<a@dest.test>\r\n",
            b"RCPT TO:<b@dest.test>\r\n",
            b"BDAT %d LAST\r\n" % len(BODY),
        ]
    ]
    assert script.chunks == [BODY]  # as it is: no dot doubled, nothing appended
    assert script.messages == []


def test_a_connection_carries_one_chunked_transaction_after_another() -> None:
    script = Script()
    outcomes = _send(script, ["a@dest.test"], times=3)
    assert [_summary(o) for o in outcomes] == [[(Outcome.SENT, "data", 250)]] * 3
    assert len(script.chunks) == 3 and script.connections == 1


@pytest.mark.parametrize(
    ("data", "chunk"),
    [
        (b"Subject: x\n\nbare LF\nend", b"Subject: x\r\n\r\nbare LF\r\nend\r\n"),
        (b"Subject: x\r\n\r\nbare CR\rno final line end", None),
        (b"", b"\r\n"),
    ],
)
def test_the_chunk_carries_the_lines_data_would(data: bytes, chunk: bytes | None) -> None:
    """The same lines as after DATA (CRLF line ends, a final CRLF), the BDAT size
    counting them exactly."""
    script = Script()
    (results,) = _send(script, ["a@dest.test"], data=data)
    assert _summary(results) == [(Outcome.SENT, "data", 250)]
    expected = chunk if chunk is not None else chunk_form(data)
    assert expected.endswith(b"\r\n") and b"\r\r" not in expected
    assert script.chunks == [expected]
    assert script.groups[0][-1] == b"BDAT %d LAST\r\n" % len(expected)


def test_a_refused_recipient_fails_alone() -> None:
    script = Script(rcpt={"b@dest.test": "550 5.1.1 no such user"})
    (results,) = _send(script, ["a@dest.test", "b@dest.test", "c@dest.test"])
    assert _summary(results) == [
        (Outcome.SENT, "data", 250),
        (Outcome.PERMANENT, "rcpt", 550),
        (Outcome.SENT, "data", 250),
    ]


def test_every_recipient_refused_closes_the_connection() -> None:
    """The server had to read and drop the chunk; the next transaction goes on a new
    connection all the same (here: the closed one fails it, as the pool would not reuse
    it)."""
    script = Script(rcpt={"a@dest.test": "550 5.1.1 no"}, bdat="554 5.5.1 no valid recipients")
    outcomes = _send(script, ["a@dest.test"], times=2)
    assert _summary(outcomes[0]) == [(Outcome.PERMANENT, "rcpt", 550)]
    (second,) = outcomes[1]
    assert isinstance(second, StageError) and second.stage == "mail"


def test_a_refused_sender_is_the_whole_transactions_failure() -> None:
    script = Script(
        mail="550 5.7.1 sender refused",
        rcpt={"a@dest.test": "503 5.5.1 no MAIL"},
        bdat="503 5.5.1 no",
    )
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert (error.stage, error.reply.code) == ("mail", 550)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [("451 4.3.0 try later", Outcome.TEMPORARY), ("554 5.6.0 content refused", Outcome.PERMANENT)],
)
def test_a_refused_chunk_fails_the_taken_recipients_with_its_reply(
    reply: str, outcome: Outcome
) -> None:
    script = Script(bdat=reply)
    outcomes = _send(script, ["a@dest.test"], times=2)
    assert _summary(outcomes[0]) == [(outcome, "data", int(reply[:3]))]
    (second,) = outcomes[1]
    assert isinstance(second, StageError)  # the connection was closed after the refusal


def test_a_connection_dropped_before_the_replies_is_a_mail_stage_failure() -> None:
    script = Script(drop_before_replies=True)
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert (error.stage, error.reply.code) == ("mail", 451)


def test_a_connection_dropped_after_the_envelope_is_a_data_stage_failure() -> None:
    """The message went out with the commands: it may have been kept, so it is retried
    as a loss after DATA is (at-least-once), not as a transaction that never started."""
    script = Script(drop_before_bdat_reply=True)
    ((error,),) = _send(script, ["a@dest.test"])
    assert isinstance(error, StageError)
    assert (error.stage, error.reply.code) == ("data", 451)
    assert len(script.chunks) == 1


def test_chunking_off_sends_data() -> None:
    script = Script()
    (results,) = _send(script, ["a@dest.test"], chunking=False)
    assert _summary(results) == [(Outcome.SENT, "data", 250)]
    assert script.chunks == [] and script.groups[0][-1] == b"DATA\r\n"
    assert script.messages == [b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"]


def test_a_big_message_goes_after_data_in_pieces() -> None:
    data = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + b".y\r\n" * (STREAM_FROM // 4)
    script = Script()
    (results,) = _send(script, ["a@dest.test"], data=data)
    assert _summary(results) == [(Outcome.SENT, "data", 250)]
    assert script.chunks == []
    assert script.messages[0] == data.replace(b"\r\n.y", b"\r\n..y") + b".\r\n"


def test_without_pipelining_the_commands_go_one_by_one_and_the_message_after_data() -> None:
    script = Script(ehlo=["CHUNKING", "8BITMIME"])
    (results,) = _send(script, ["a@dest.test", "b@dest.test"])
    assert _summary(results) == [(Outcome.SENT, "data", 250)] * 2
    assert script.chunks == [] and script.groups[0][-1] == b"DATA\r\n"


def test_without_chunking_offered_the_message_goes_after_data() -> None:
    script = Script(ehlo=["PIPELINING", "8BITMIME"])
    (results,) = _send(script, ["a@dest.test"])
    assert _summary(results) == [(Outcome.SENT, "data", 250)]
    assert script.chunks == [] and len(script.messages) == 1
