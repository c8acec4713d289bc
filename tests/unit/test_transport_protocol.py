"""Every transport offers what the router asks of the Transport protocol (``direct``, and
``gate`` and ``tls_policy`` as keywords of ``deliver``): the router calls them all alike."""

from __future__ import annotations

import inspect

import pytest

from mailgate.transports.base import Transport
from mailgate.transports.maildir import MaildirTransport
from mailgate.transports.mx import MxTransport
from mailgate.transports.smtp import SmtpTransport


@pytest.mark.parametrize(
    ("cls", "direct"), [(SmtpTransport, False), (MxTransport, True), (MaildirTransport, False)]
)
def test_transports_have_the_protocols_members(cls: type, direct: bool) -> None:
    assert cls.direct is direct
    wanted = inspect.signature(Transport.deliver).parameters
    got = inspect.signature(cls.deliver).parameters
    assert list(got) == list(wanted)
    for name in ("gate", "tls_policy"):
        assert got[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert got[name].default is None
