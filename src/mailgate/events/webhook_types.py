"""The events an endpoint can subscribe to: the message events of the event log, named
``message.<type>`` after the log's own type, and ``job.completed``."""

from __future__ import annotations

from collections.abc import Iterable

MESSAGE_EVENTS = (
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "failed",
    "opened",
    "clicked",
    "complained",
    "unsubscribed",
    "cancelled",
)
EVENT_TYPES = (*(f"message.{t}" for t in MESSAGE_EVENTS), "job.completed")
ALL = "*"


def subscription(events: Iterable[str]) -> list[str]:
    """The types named (``*`` for all), in EVENT_TYPES order; ValueError naming the
    first unknown one."""
    wanted = set()
    for name in events:
        if name == ALL:
            wanted.update(EVENT_TYPES)
        elif name in EVENT_TYPES:
            wanted.add(name)
        else:
            raise ValueError(f"unknown event type {name!r}; known: *, {', '.join(EVENT_TYPES)}")
    if not wanted:
        raise ValueError("no event types: name at least one, or *")
    return [t for t in EVENT_TYPES if t in wanted]
