"""The durable queue: schema, engines, group commit and every SQL statement."""

from mailgate.store.keys import KeyRecord
from mailgate.store.store import DeliveryUpdate, NewMessage, Store

__all__ = ["DeliveryUpdate", "KeyRecord", "NewMessage", "Store"]
