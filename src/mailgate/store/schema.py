"""The queue's schema: one definition for SQLite and PostgreSQL.

Timestamps are Unix seconds as doubles, so both engines compare and index them the same
way. A delivery's ``next_attempt_at`` is NULL once it is final; a claim moves it to the
lease expiry, so a crashed node's work becomes due again by itself.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

# Autoincrement primary keys: INTEGER on SQLite (rowid alias), BIGINT elsewhere.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Double, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("sender", Text, nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("message_id_header", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False),
    Column("credential", Text, nullable=False, default=""),
    Column("client_address", Text, nullable=False, default=""),
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    # The API key that submitted it ("" for trusted networks): who may read it back.
    Column("key_id", String(32), nullable=False, default=""),
    # Derived from the deliveries, kept up to date in the same transactions.
    Column("status", String(16), nullable=False, default="queued"),
    Column("display_to", Text, nullable=False, default="[]"),  # JSON: header To addresses
    Column("tags", Text, nullable=False, default="[]"),  # JSON list of strings
    Column("metadata", Text, nullable=False, default="{}"),  # JSON object
    Column("tracking", Text, nullable=False, default="{}"),  # JSON object
    Column("scheduled_at", Double, nullable=True),
    # The DKIM-Signature header(s) made on the first attempt, reused by every retry.
    Column("dkim", LargeBinary, nullable=True),
)
Index("ix_messages_created_at", messages.c.created_at)
Index("ix_messages_key_created", messages.c.key_id, messages.c.created_at)
Index("ix_messages_status", messages.c.status)

deliveries = Table(
    "deliveries",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("rcpt_idx", Integer, primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("status", String(16), nullable=False),
    # lane 0: never attempted (fresh mail); lane 1: retries. Fresh mail is claimed first.
    Column("lane", SmallInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Double, nullable=True),
    Column("lease_owner", Text, nullable=True),
    Column("provider", Text, nullable=False, default=""),
    Column("last_response", Text, nullable=False, default=""),
    Column("updated_at", Double, nullable=False),
    ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
)
Index("ix_deliveries_due", deliveries.c.lane, deliveries.c.next_attempt_at)
Index("ix_deliveries_lease_owner", deliveries.c.lease_owner)
Index("ix_deliveries_status", deliveries.c.status)

events = Table(
    "events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False),
    Column("rcpt_idx", Integer, nullable=True),
    Column("recipient", Text, nullable=False, default=""),
    Column("type", String(16), nullable=False),
    Column("at", Double, nullable=False),
    Column("provider", Text, nullable=False, default=""),
    Column("response", Text, nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
)
Index("ix_events_message", events.c.message_id, events.c.id)
Index("ix_events_at", events.c.at)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("domains", Text, nullable=False, default=""),  # comma-separated; empty = all
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
    Column("rate", String(32), nullable=False, default=""),  # e.g. "10/s"; "" = [http] default
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("html", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("active", SmallInteger, nullable=False, default=1),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Idempotency-Key: the first answer to a (key, Idempotency-Key), kept for 24 h.
idempotency = Table(
    "idempotency",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("idem_key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Double, nullable=False),
)
Index("ix_idempotency_created", idempotency.c.created_at)

# Addresses no mail goes to any more (hard bounce, complaint, unsubscribe, manual).
suppressions = Table(
    "suppressions",
    metadata,
    Column("address", String(320), primary_key=True),  # lower-cased
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("message_id", String(36), nullable=False, default=""),
    Column("created_at", Double, nullable=False),
)
Index("ix_suppressions_created", suppressions.c.created_at)
