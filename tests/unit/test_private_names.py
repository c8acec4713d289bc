"""The private names of our dependencies that mailgate relies on, checked against the
installed versions: a release that renames one or changes its parameters fails here, naming
the symbol, instead of breaking the relay at run time. pyproject.toml caps these libraries
below their next release line (docs/dependencies.md); raising a cap starts with this test.

Where they are used: aiosmtpd's (and asyncio's StreamReader buffer) in the SMTP session
class (ingress/smtp_session.py), aiosmtplib's in the outbound wire module
(transports/smtp_wire.py), uvicorn's in the HTTP listener's server and protocol
(ingress/http_server.py, http_protocol.py), asyncio's TLS layer in the implicit-TLS
listener (ingress/smtp_listeners.py), dkimpy's in the signer (delivery/dkim.py),
Jinja2's in the template sandbox (rendering.py).
"""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, qualified name, the parameters we pass or override with)
CALLABLES = [
    ("aiosmtpd.smtp", "SMTP._handle_client", ["self"]),
    ("aiosmtpd.smtp", "SMTP._getaddr", ["self", "arg"]),
    ("aiosmtpd.smtp", "SMTP._getparams", ["self", "params"]),
    ("aiosmtpd.smtp", "SMTP._timeout_cb", ["self"]),
    ("aiosmtpd.smtp", "SMTP._reset_timeout", ["self", "duration"]),
    ("aiosmtpd.smtp", "SMTP._call_handler_hook", ["self", "command", "args"]),
    ("aiosmtpd.smtp", "SMTP._set_post_data_state", ["self"]),
    ("aiosmtplib.protocol", "SMTPProtocol._drain_helper", ["self"]),
    ("aiosmtplib.protocol", "SMTPProtocol.read_response", ["self", "timeout"]),
    ("uvicorn", "Server.startup", ["self", "sockets"]),
    ("uvicorn", "Server.main_loop", ["self"]),
    *(
        ("uvicorn.protocols.http.httptools_impl", f"HttpToolsProtocol.{name}", params)
        for name, params in [
            ("connection_made", ["self", "transport"]),
            ("connection_lost", ["self", "exc"]),
            ("data_received", ["self", "data"]),
            ("on_message_begin", ["self"]),
            ("on_headers_complete", ["self"]),
            ("on_message_complete", ["self"]),
            ("send_400_response", ["self", "msg"]),
            ("timeout_keep_alive_handler", ["self"]),
        ]
    ),
    # The template sandbox's bounds (rendering.py): every {% for %} is rewritten to count
    # its items, and ~ to measure what it built.
    ("jinja2.sandbox", "SandboxedEnvironment._parse", ["self", "source", "name", "filename"]),
    ("jinja2.compiler", "CodeGenerator.visit_Concat", ["self", "node", "frame"]),
    # The implicit-TLS listener's TLS layer (ingress/smtp_listeners.py), as aiosmtpd's
    # STARTTLS makes it.
    (
        "asyncio.sslproto",
        "SSLProtocol.__init__",
        [
            *("self", "loop", "app_protocol", "sslcontext", "waiter", "server_side"),
            *("server_hostname", "call_connection_made", "ssl_handshake_timeout"),
            "ssl_shutdown_timeout",
        ],
    ),
    ("dkim", "rfc822_parse", ["message"]),
    (
        "dkim",
        "hash_headers",
        ["hasher", "canonicalize_headers", "headers", "include_headers", "sigheader", "sig"],
    ),
]
# Private attributes of an aiosmtpd session and an aiosmtplib protocol that the relay
# reads or sets.
ATTRIBUTES = [
    ("aiosmtplib.protocol", "SMTPProtocol", "_command_lock"),
    ("aiosmtplib.protocol", "SMTPProtocol", "_response_pending"),
    ("aiosmtpd.smtp", "SMTP", "_reader"),
    ("aiosmtpd.smtp", "SMTP", "_writer"),
    ("aiosmtpd.smtp", "SMTP", "_tls_protocol"),
    ("aiosmtpd.smtp", "SMTP", "_auth_require_tls"),
    ("aiosmtpd.smtp", "SMTP", "_timeout_handle"),
    ("aiosmtpd.smtp", "SMTP", "_timeout_duration"),
    ("asyncio.streams", "StreamReader", "_buffer"),  # what follows DATA, past the client's end
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "loop"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "transport"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "timeout_keep_alive"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "timeout_keep_alive_task"),
]


def _resolve(module: str, qualname: str) -> object:
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            pytest.fail(f"{module}.{qualname} is gone from the installed version")
    return obj


@pytest.mark.parametrize(("module", "qualname", "params"), CALLABLES, ids=lambda v: str(v))
def test_private_callable_keeps_its_parameters(
    module: str, qualname: str, params: list[str]
) -> None:
    found = list(inspect.signature(_resolve(module, qualname)).parameters)  # type: ignore[arg-type]
    assert found == params, f"{module}.{qualname} now takes {found}, mailgate expects {params}"


@pytest.mark.parametrize(("module", "cls", "attr"), ATTRIBUTES, ids=lambda v: str(v))
def test_private_attribute_is_still_set(module: str, cls: str, attr: str) -> None:
    source = inspect.getsource(_resolve(module, cls))  # type: ignore[arg-type]
    assert f"self.{attr} =" in source or f"self.{attr}:" in source, (
        f"{module}.{cls} no longer sets {attr}"
    )
