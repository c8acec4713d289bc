"""SMTP AUTH PLAIN and LOGIN against API keys, as async aiosmtpd handler hooks.

aiosmtpd's own ``authenticator`` is synchronous; these hooks replace its PLAIN and LOGIN so
the key lookup awaits the store instead of blocking the event loop. Each failure is
answered after a growing delay, and the third on one connection ends it (421 4.7.0).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, AuthResult

from mailgate import replies
from mailgate.credentials import authenticate
from mailgate.store import Store

if TYPE_CHECKING:
    from mailgate.ingress.smtp_session import RelaySMTP

log = logging.getLogger(__name__)

MAX_FAILURES = 3


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _refuse(message: str) -> AuthResult:
    # handled=False with a message: aiosmtpd sends it (without one the client would hang).
    return AuthResult(success=False, handled=False, message=message)


# aiosmtpd's challenge_auth has already answered a "*" or a non-base64 reply (501): one
# reply per command, or a pipelining client reads the next answer as this one's.
_ANSWERED = AuthResult(success=False, handled=True)


async def _first_answer(server: RelaySMTP, args: list[str], challenge: str) -> bytes | AuthResult:
    """The initial response sent with AUTH, else the client's answer to ``challenge``;
    the refusal when there is none or it is not base64."""
    if len(args) == 1:
        answer: Any = await server.challenge_auth(challenge)
        return _ANSWERED if answer is MISSING else bytes(answer)
    decoded = _b64(args[1])
    return _refuse("501 5.5.2 Cannot decode base64") if decoded is None else decoded


class AuthHooks:
    """Mixed into the SMTP handler; aiosmtpd finds the ``auth_*`` methods by name."""

    store: Store
    login_failure_delay: float

    async def auth_PLAIN(self, server: RelaySMTP, args: list[str]) -> AuthResult:
        raw = await _first_answer(server, args, "")
        if isinstance(raw, AuthResult):
            return raw
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return _refuse("501 5.5.2 Cannot split auth value")
        authzid, authcid, password = parts
        if authzid and authzid.lower() != authcid.lower():  # user names match in any case
            # RFC 4616 2: a client may not ask to act as another identity than the one it
            # proves; a key acts only as itself (it was ignored, so the client believed it
            # sent as someone else).
            return await self._failed(server, authcid.decode("utf-8", "replace"))
        return await self._verify(server, authcid, password)

    async def auth_LOGIN(self, server: RelaySMTP, args: list[str]) -> AuthResult:
        login = await _first_answer(server, args, server.AuthLoginUsernameChallenge)
        if isinstance(login, AuthResult):
            return login
        password: Any = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if password is MISSING:
            return _ANSWERED
        return await self._verify(server, login, bytes(password))

    async def _verify(self, server: RelaySMTP, login: bytes, password: bytes) -> AuthResult:
        user = login.decode("utf-8", "replace")
        try:
            credential = await authenticate(self.store, user, password.decode("utf-8", "replace"))
        except Exception:
            log.exception("AUTH lookup failed")
            return _refuse("454 4.7.0 Temporary authentication failure")
        if credential is not None:
            if credential.scope not in ("send", "admin"):
                log.info(
                    "AUTH refused for key %s: scope %s cannot send",
                    credential.name,
                    credential.scope,
                )
            else:
                log.info("AUTH ok for key %s from %s", credential.name, server.peer_address)
                return AuthResult(success=True, auth_data=credential)
        return await self._failed(server, user)

    async def _failed(self, server: RelaySMTP, user: str) -> AuthResult:
        """A failed AUTH: counted, answered after a delay growing with each, and the
        connection closed at MAX_FAILURES."""
        server.auth_failures += 1
        log.warning(
            "AUTH failed (%d) for user %r from %s",
            server.auth_failures,
            user[:64],
            server.peer_address,
        )
        await asyncio.sleep(self.login_failure_delay * server.auth_failures)
        if server.auth_failures >= MAX_FAILURES:
            await server.push(replies.AUTH_TOO_MANY.line())
            server.close_connection()
            return AuthResult(success=False, handled=True)
        return _refuse(replies.AUTH_INVALID.line())
