"""One outbound SMTP conversation (aiosmtplib): connect, EHLO, TLS, AUTH, one transaction.

Shared by the provider transport (pooled smarthost connections) and the MX transport
(recipients' own servers), so that every outbound conversation, its timeouts and the
classification of its replies live in one place.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailgate.delivery.classify import classify, connection_reply, parse_reply
from mailgate.models import AttemptResult, Outcome, SmtpReply
from mailgate.transports.smtp_wire import (
    COMPLETED,
    RCPT_TAKEN,
    STREAM_FROM,
    PipelineLost,
    chunked,
    envelope_commands,
    pipelined,
    send_data,
)

TlsMode = Literal["starttls", "implicit", "none", "opportunistic"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    command: float = 300.0
    data: float = 600.0  # the reply to the end of DATA: RFC 5321 allows 10 minutes


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect. ``address`` is dialled; ``name`` is checked in the cert."""

    address: str
    port: int
    name: str
    tls: TlsMode
    verify: bool = True
    ca_file: str | None = None
    username: str = ""
    password: str = ""


class StageError(Exception):
    """A failure before recipients were addressed; applies to the whole transaction."""

    def __init__(self, stage: str, reply: SmtpReply, *, retry_fresh: bool = False) -> None:
        super().__init__(reply.line())
        self.stage = stage
        self.reply = reply
        self.retry_fresh = retry_fresh

    def results(self, provider: str, n: int) -> list[AttemptResult]:
        outcome = classify(self.stage, self.reply)
        return [AttemptResult(outcome, self.reply, provider, self.stage) for _ in range(n)]


def reply_of(exc: BaseException) -> SmtpReply:
    if isinstance(exc, SMTPResponseException):
        return parse_reply(exc.code, exc.message)
    if isinstance(exc, SMTPTimeoutError | asyncio.TimeoutError):
        return connection_reply("timeout", f"timeout: {exc}".strip(": "))
    if isinstance(exc, ssl.SSLError):
        return connection_reply("tls", f"TLS failure: {exc}")
    if isinstance(exc, SMTPServerDisconnected):
        return connection_reply("dropped", f"connection lost: {exc}")
    if isinstance(exc, SMTPConnectError | ConnectionError | OSError):
        return connection_reply("refused", f"cannot connect: {exc}")
    return connection_reply("internal", f"{type(exc).__name__}: {exc}")


def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(ep: Endpoint, local_hostname: str, timeouts: Timeouts) -> aiosmtplib.SMTP:
    """An open, greeted (and, as configured, encrypted and authenticated) connection."""
    ctx = tls_context(ep.verify, ep.ca_file) if ep.tls != "none" else None
    client = aiosmtplib.SMTP(
        hostname=ep.address,
        port=ep.port,
        local_hostname=local_hostname,
        timeout=timeouts.connect,
        use_tls=ep.tls == "implicit",
        start_tls=False,
        tls_context=ctx if ep.tls == "implicit" else None,
        validate_certs=ep.verify,
    )
    stage = "connect"
    try:
        await client.connect()
        stage = "ehlo"
        await client.ehlo(timeout=timeouts.command)
        stage = "starttls"
        offered = client.supports_extension("starttls")
        if ep.tls == "starttls" and not offered:
            raise StageError(
                "starttls",
                SmtpReply(451, "4.7.4", f"{ep.name} does not offer STARTTLS, which is required"),
            )
        if ep.tls in ("starttls", "opportunistic") and offered:
            await client.starttls(
                server_hostname=ep.name,
                validate_certs=ep.verify,
                tls_context=ctx,
                timeout=timeouts.command,
            )
            await client.ehlo(timeout=timeouts.command)
        stage = "auth"
        if ep.username:
            await client.login(ep.username, ep.password, timeout=timeouts.command)
    except StageError:
        client.close()
        raise
    except SMTPAuthenticationError as exc:
        client.close()
        raise StageError("auth", reply_of(exc)) from exc
    except (TimeoutError, SMTPException, OSError, ssl.SSLError) as exc:
        client.close()
        raise StageError(stage, reply_of(exc)) from exc
    return client


async def _rset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset(timeout=30)
    except (TimeoutError, SMTPException, OSError):
        client.close()


async def transaction(
    client: aiosmtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    data: bytes,
    *,
    provider: str,
    timeouts: Timeouts,
    reused: bool = False,
    chunking: bool = True,
) -> list[AttemptResult]:
    """MAIL, one RCPT per recipient, DATA: one classified result per recipient, in order.

    ``chunking``: BDAT instead of DATA where the server offers CHUNKING (and PIPELINING)
    and the message is smaller than smtp_wire.STREAM_FROM.
    Raises StageError when nothing was addressed yet (MAIL failed, connection lost).
    """
    options: list[str] = []
    if not data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
    if utf8:
        if not client.supports_extension("smtputf8"):
            reply = SmtpReply(553, "5.6.7", "the receiving server does not support SMTPUTF8")
            raise StageError("mail", reply)
        options.append("SMTPUTF8")
    encoding = "utf-8" if utf8 else "ascii"
    if client.supports_extension("pipelining"):
        commands = envelope_commands(sender, recipients, options, encoding)
        chunk = chunking and len(data) < STREAM_FROM and client.supports_extension("chunking")
        return await _pipelined(client, commands, data, provider, timeouts, reused, chunk)
    try:
        await client.mail(sender, options=options, encoding=encoding, timeout=timeouts.command)
    except SMTPResponseException as exc:
        await _rset(client)
        raise StageError("mail", reply_of(exc)) from exc
    except (TimeoutError, SMTPException, OSError) as exc:
        raise StageError("mail", reply_of(exc), retry_fresh=reused) from exc

    results: list[AttemptResult | None] = [None] * len(recipients)
    accepted: list[int] = []
    for i, rcpt in enumerate(recipients):
        try:
            await client.rcpt(rcpt, encoding=encoding, timeout=timeouts.command)
            accepted.append(i)
        except SMTPResponseException as exc:
            results[i] = _refused_rcpt(reply_of(exc), provider)
        except (TimeoutError, SMTPException, OSError) as exc:
            raise StageError("rcpt", reply_of(exc)) from exc
    if not accepted:
        await _rset(client)
        return [r for r in results if r is not None]
    try:
        response = await send_data(client, data, timeout=timeouts.data)
        reply = parse_reply(response.code, response.message)
        outcome = Outcome.SENT
    except SMTPResponseException as exc:
        reply = reply_of(exc)
        outcome = _refused_data(reply)
        await _rset(client)
    except (TimeoutError, SMTPException, OSError) as exc:
        # Lost after DATA: the server may or may not have taken it. Retrying may
        # duplicate; not retrying may lose it. Delivery is at-least-once: retry.
        raise StageError("data", reply_of(exc)) from exc
    return _in_order(results, accepted, AttemptResult(outcome, reply, provider, "data"))


def _refused_rcpt(reply: SmtpReply, provider: str) -> AttemptResult:
    return AttemptResult(classify("rcpt", reply), reply, provider, "rcpt")


def _refused_data(reply: SmtpReply) -> Outcome:
    """A DATA or message not answered as it should be. A 2xx/3xx there is a protocol
    violation (e.g. 250 instead of 354: the body was never sent), so it cannot count as
    delivered."""
    return classify("data", reply) if reply.code >= 400 else Outcome.TEMPORARY


def _in_order(
    results: list[AttemptResult | None], accepted: list[int], data: AttemptResult
) -> list[AttemptResult]:
    """The recipients' results in order: ``data`` for each accepted one."""
    for i in accepted:
        results[i] = data
    return [r for r in results if r is not None]


async def _pipelined(
    client: aiosmtplib.SMTP,
    commands: list[bytes],
    data: bytes,
    provider: str,
    timeouts: Timeouts,
    reused: bool,
    chunk: bool,
) -> list[AttemptResult]:
    """:func:`transaction` with a server that offers PIPELINING (smtp_wire.py), the
    message after DATA or in a BDAT chunk: the same results, stages and classification as
    one command at a time."""
    send = chunked if chunk else pipelined
    try:
        got = await send(
            client, commands, data, command_timeout=timeouts.command, data_timeout=timeouts.data
        )
    except PipelineLost as lost:
        fresh = reused and lost.stage == "mail"
        raise StageError(lost.stage, reply_of(lost.cause), retry_fresh=fresh) from lost
    mail, *rcpts = got.envelope
    if mail.code != COMPLETED:
        await _rset(client)
        raise StageError("mail", parse_reply(mail.code, mail.message))
    results: list[AttemptResult | None] = [None] * len(rcpts)
    accepted: list[int] = []
    for i, response in enumerate(rcpts):
        if response.code in RCPT_TAKEN:
            accepted.append(i)
        else:
            results[i] = _refused_rcpt(parse_reply(response.code, response.message), provider)
    if not accepted:
        await _rset(client)
        return [r for r in results if r is not None]
    final = got.message if got.message is not None else got.data
    assert final is not None  # DATA's reply is always read; BDAT's once a recipient is taken
    reply = parse_reply(final.code, final.message)
    if got.message is not None and final.code == COMPLETED:
        outcome = Outcome.SENT
    else:
        outcome = _refused_data(reply)
        await _rset(client)
    return _in_order(results, accepted, AttemptResult(outcome, reply, provider, "data"))


async def quit_quietly(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit(timeout=2)
    except (TimeoutError, SMTPException, OSError):
        client.close()
