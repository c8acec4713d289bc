"""Quick pickling for the dataclasses that cross the pipes to the child processes.

A slots dataclass pickles through the generic ``__getstate__``/``__setstate__`` of
``dataclasses``, which call ``fields()`` and set each attribute one by one: under HTTP
load that was about 6% of the relay's CPU (the writer's jobs, the delivery process's
claims and results). Reduced to (class, field values) it is rebuilt by its ``__init__``.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, TypeVar

T = TypeVar("T")


def by_fields(cls: type[T]) -> type[T]:
    """Class decorator (under ``@dataclass``): pickle as ``cls(*field values)``."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ argument")
    get = operator.attrgetter(*(f.name for f in fields))
    if len(fields) == 1:

        def reduce(self: Any) -> tuple[type[T], tuple[Any, ...]]:
            return cls, (get(self),)
    else:

        def reduce(self: Any) -> tuple[type[T], tuple[Any, ...]]:
            return cls, get(self)

    cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]
    return cls
