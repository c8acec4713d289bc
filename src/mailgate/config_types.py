"""Field types, shared validators and the base model of every section of relay.toml
(config_service.py, config_sending.py, and the sections that live beside the code they
configure, such as events/webhook_settings.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from mailgate.units import parse_duration, parse_hostport, parse_rate, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _split_list(value: Any) -> Any:
    """Let an environment override give a list as 'a,b,c'."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_split_list)]


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


def readable_file(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"cannot read file {str(value)!r}")
    if value is not None and not value.is_file():
        raise ValueError(f"{str(value)!r} is not a file")
    return value
