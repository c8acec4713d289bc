"""Field types and the base model shared by every section of relay.toml (config.py and the
sections that live beside the code they configure, such as events/webhook_settings.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from mailgate.units import parse_duration, parse_size

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
