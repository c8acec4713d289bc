"""The plain-address fast path answers exactly as email-validator does."""

from __future__ import annotations

import string

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate.address_check import _PLAIN, _plain, checked_address


def reference(addr: str) -> str | None:
    try:
        r = validate_email(
            addr, check_deliverability=False, allow_smtputf8=True, test_environment=True
        )
    except EmailNotValidError:
        return None
    return str(r.ascii_email or r.normalized)


def ours(addr: str) -> str | None:
    try:
        return checked_address(addr)
    except EmailNotValidError:
        return None


label = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=70)
near_plain = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    st.text(
        string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-\"", min_size=0, max_size=70
    ),
    st.lists(label, min_size=0, max_size=4),
    st.sampled_from(
        [
            "com",
            "COM",
            "test",
            "local",
            "localhost",
            "onion",
            "arpa",
            "invalid",
            "c0m",
            "123",
            "x",
            "museum",
            "a" * 64,
        ]
    ),
)


@settings(max_examples=600, deadline=None)
@given(st.from_regex(_PLAIN, fullmatch=True) | near_plain)
@example("A.b@Example.COM")
@example("x@ab--cd.com")
@example("x@xn--abc.com")
@example("a@b.test")
@example("a@foo.local")
@example("a@sub.localhost")
@example("a..b@x.com")
@example("." + "a" * 64 + "@x.com")
@example("a" * 65 + "@x.com")
@example("a@" + ("b" * 63 + ".") * 4 + "com")
def test_same_answer_as_email_validator(addr: str) -> None:
    assert ours(addr) == reference(addr)


def test_the_fast_path_takes_common_addresses() -> None:
    """Else the test above would only compare email-validator with itself."""
    for addr in ("user00.0001@example.net", "First.Last+tag@Mail.Example.COM", "a@b.test"):
        assert _plain(addr) is not None, addr
    for addr in ("ü@example.com", "a@xn--bcher-kva.example", "a@x.c0m", '"q"@x.com'):
        assert _plain(addr) is None, addr
