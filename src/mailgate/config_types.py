"""Field types, shared validators and the base model of every section of relay.toml
(config_service.py, config_sending.py, and the sections that live beside the code they
configure, such as events/webhook_settings.py)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from mailgate.units import parse_duration, parse_hostport, parse_rate, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _split_list(value: Any) -> Any:
    """Let an environment override give a list as 'a,b,c'."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_split_list)]


def config_relative(value: Any, info: ValidationInfo) -> Any:
    """A relative path is taken from the configuration file's directory (the validation
    context's ``base``), not from wherever a command runs: ``mailgate send --config
    /srv/app/relay.toml`` run from another directory queued into another, empty database
    that no relay read. Without a file (settings given as data) it stays as it is."""
    base = (info.context or {}).get("base")
    if base is None or not isinstance(value, str | Path) or str(value) == "":
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(base) / path


def at_runtime(info: ValidationInfo) -> bool:
    """Whether the settings are loaded to run with (serve, its reload, check-config), not
    by another command: the checks that depend on who runs and with which environment
    (a writable data_dir, readable key files, a set password_env) apply then only. An
    operator's ``mailgate queue list`` as another user, without the service's environment
    file or its rights on the TLS key, was refused for them."""
    return bool((info.context or {}).get("runtime"))


# A file or directory named in relay.toml.
ConfigPath = Annotated[Path, BeforeValidator(config_relative)]


def runtime_readable(value: Path, info: ValidationInfo) -> Path:
    """readable_file, when loaded to run with (at_runtime)."""
    return readable_file(value) if at_runtime(info) else value  # type: ignore[return-value]


def runtime_writable_dir(value: Path, info: ValidationInfo) -> Path:
    """writable_dir, when loaded to run with (at_runtime)."""
    return writable_dir(value) if at_runtime(info) else value


# A file the relay reads (a TLS or DKIM key, a CA bundle): readable when it runs.
ReadableFile = Annotated[ConfigPath, AfterValidator(runtime_readable)]
# A directory the relay writes in (data_dir): writable, or makeable, when it runs.
WritableDir = Annotated[ConfigPath, AfterValidator(runtime_writable_dir)]


class Section(BaseModel):
    """A table of relay.toml: unknown keys are errors, values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_rate(value: str) -> str:
    if value:
        parse_rate(value)
    return value


def check_listen(values: list[str]) -> list[str]:
    for value in values:
        parse_hostport(value)
    return values


def check_tls_pair(cert: Path, key: Path) -> None:
    """The certificate chain and key load as the listeners will load them (serve stopped
    with a traceback on a key that does not match its certificate, or a file that is no
    PEM)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = exc.reason or str(exc)
        raise ValueError(f"tls_cert and tls_key do not load together: {why}") from None


def writable_dir(value: Path) -> Path:
    """A directory this user can write in, or can make (serve stopped with a traceback on
    a data_dir that is a file or belongs to another user)."""
    if value.exists():
        if not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a directory")
        if not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{str(value)!r} is not writable by this user (uid {os.getuid()})")
        return value
    parent = value.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{str(value)!r} cannot be made: {str(parent)!r} is not writable")
    return value


def readable_file(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"cannot read file {str(value)!r}")
    if value is not None and not value.is_file():
        raise ValueError(f"{str(value)!r} is not a file")
    return value
