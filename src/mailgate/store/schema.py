"""The queue's schema: one definition for SQLite and PostgreSQL.

This is the schema at the newest migration (``store/migrations/versions``): every table
or column added here arrives in a new revision there, and a test checks the two agree.

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
    func,
    text,
)

metadata = MetaData()

# Autoincrement primary keys: INTEGER on SQLite (rowid alias), BIGINT elsewhere.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

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
    Column("job_id", String(36), nullable=True),  # the batch it came in
    # The one provider it may go to ("" = the routes decide).
    Column("provider", Text, nullable=False, default="", server_default=""),
    # 1: the first attempt decides (a temporary failure fails it, without a DSN).
    Column("attempt_once", SmallInteger, nullable=False, default=0, server_default="0"),
    # When [retention] bodies emptied ``raw`` (NULL: the body is there).
    Column("purged_at", Double, nullable=True),
)
Index("ix_messages_created_at", messages.c.created_at)
Index("ix_messages_key_created", messages.c.key_id, messages.c.created_at)
# By status, newest first (the dashboard's status search pages by created_at).
Index("ix_messages_status", messages.c.status, messages.c.created_at)
# The dashboard's sender search (exact address, case-insensitive), newest first.
Index("ix_messages_sender", func.lower(messages.c.sender), messages.c.created_at)
# The dashboard's job search, newest first; only messages that came in a job.
Index(
    "ix_messages_job",
    messages.c.job_id,
    messages.c.created_at,
    sqlite_where=messages.c.job_id.is_not(None),
    postgresql_where=messages.c.job_id.is_not(None),
)
# The bodies still there, oldest first: what the body purge walks (store/retention.py).
Index(
    "ix_messages_unpurged",
    messages.c.created_at,
    sqlite_where=messages.c.purged_at.is_(None),
    postgresql_where=messages.c.purged_at.is_(None),
)
# Complaints (ARF) name their message by its Message-ID. Hash on PostgreSQL: a client's
# Message-ID may be longer than a B-tree entry allows.
Index(
    "ix_messages_message_id_header",
    messages.c.message_id_header,
    postgresql_using="hash",
)
# The dashboard's subject search (a substring of 3 characters or more). PostgreSQL: this
# trigram index. SQLite: the FTS5 table below, which no Table here can describe.
Index(
    "ix_messages_subject_trgm",
    messages.c.subject,
    postgresql_using="gin",
    postgresql_ops={"subject": "gin_trgm_ops"},
).ddl_if(dialect="postgresql")
# SQLite's subject index (revision 0006): an FTS5 table, trigram tokenizer, its rowid the
# message's rowid, emptied by a trigger on messages. Its name, and the prefix of the
# shadow tables FTS5 makes beside it.
SQLITE_SUBJECT_FTS = "messages_subject_fts"
# The messages whose subjects it does not hold yet (revision 0009): an insert trigger puts
# their rowids here, store/subject_index.py moves them into it in bulk.
SQLITE_SUBJECT_PENDING = "messages_subject_pending"

# The bodies of big messages (big_rows.BIG_MESSAGE on) on SQLite, written in place with
# incremental blob I/O (revision 0008): SQLite refuses that in ``messages``, whose
# expression indexes could name any column, and ``raw`` there is not the record's last
# column, so SQLite builds a whole copy of the row to insert it. ``messages.raw`` of such a
# message is b"". PostgreSQL keeps every body in ``messages.raw`` (the table stays empty):
# nodes of revision 0007 read them there while a cluster upgrades one node at a time.
message_bodies = Table(
    "message_bodies",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("raw", LargeBinary, nullable=False),  # last: blob I/O writes it in place
    ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
)

# One row per tag of a message, filled by a trigger on messages (revision 0006) from its
# JSON ``tags``: the dashboard's tag search walks ix_message_tags_tag, newest first.
message_tags = Table(
    "message_tags",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("tag", Text, primary_key=True),
    Column("created_at", Double, nullable=False),  # the message's
    ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
    sqlite_with_rowid=False,  # two B-trees, not three
)
Index(
    "ix_message_tags_tag", message_tags.c.tag, message_tags.c.created_at, message_tags.c.message_id
)

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
    Column("job_id", String(36), nullable=True),  # the message's, for per-job counts
    # The id the upstream gave in its reply to DATA (or the maildir file name).
    Column("provider_message_id", Text, nullable=False, default="", server_default=""),
    # When Store.requeue last made it due again after a failure: [retry] max_age counts
    # from here (revision 0012).
    Column("retried_at", Double, nullable=True),
    ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
)
Index("ix_deliveries_due", deliveries.c.lane, deliveries.c.next_attempt_at)
Index("ix_deliveries_lease_owner", deliveries.c.lease_owner)
Index("ix_deliveries_status", deliveries.c.status)
# The dashboard's recipient search: exact address, case-insensitive.
Index("ix_deliveries_recipient", func.lower(deliveries.c.recipient))
# A job's progress is one aggregate over this index, never a scan of its messages.
Index(
    "ix_deliveries_job",
    deliveries.c.job_id,
    deliveries.c.status,
    sqlite_where=deliveries.c.job_id.is_not(None),
    postgresql_where=deliveries.c.job_id.is_not(None),
)

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
    # A bounce's or deferral's category (delivery/categories.py), "" for other events.
    Column("category", String(32), nullable=False, default="", server_default=""),
    # JSON object for engagement events (user_agent, ip, url); "" for the others.
    Column("data", Text, nullable=False, default="", server_default=""),
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
    Column("default_from", Text, nullable=False, default="", server_default=""),
    # Accepted recipients per calendar period, e.g. "10000/month" or "500/d"; "" = none.
    Column("quota", String(32), nullable=False, default="", server_default=""),
    # When the key last authenticated, to within a minute (store/keys.py); NULL: never.
    Column("last_used_at", Double, nullable=True),
)

# Recipients accepted per key and period ("2026-12" or "2026-12-03"), for key quotas.
quota_usage = Table(
    "quota_usage",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("used", Integer, nullable=False),
)

# A batch of messages, controlled as one: state is what an operator or client asked for
# (active, paused, stopped); progress is counted from the deliveries (ix_deliveries_job).
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("source", String(16), nullable=False),
    Column("campaign_id", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("started_at", Double, nullable=True),  # the first attempt of any of its deliveries
)
Index("ix_jobs_key_created", jobs.c.key_id, jobs.c.created_at)
Index("ix_jobs_state", jobs.c.state)  # the few resuming, paused or stopped (revision 0010)

job_events = Table(
    "job_events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("type", String(16), nullable=False),
    Column("at", Double, nullable=False),
    Column("detail", Text, nullable=False, default=""),
    ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
)
Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)

templates = Table(
    "templates",
    metadata,
    Column("id", String(64), primary_key=True),  # ours, or the client's own
    Column("name", String(200), nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("html", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("active", SmallInteger, nullable=False, default=1),
    Column("from_address", Text, nullable=False, default="", server_default=""),
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

# One-click unsubscribes (RFC 8058): the address takes no more mail from that sending
# domain (the envelope sender's); other domains of the relay may still write to it.
unsubscribes = Table(
    "unsubscribes",
    metadata,
    Column("address", String(320), primary_key=True),  # lower-cased
    Column("domain", String(255), primary_key=True),  # lower-cased sending domain
    Column("message_id", String(36), nullable=False, default=""),  # the mail it came from
    Column("source", String(16), nullable=False),  # "one-click", "page" or "mailto"
    Column("created_at", Double, nullable=False),
)
Index("ix_unsubscribes_created", unsubscribes.c.created_at)

# Dashboard sessions ended by a logout before they expire (the cookie is signed, so the
# server keeps the ended ones, until their expiry; store/ui.py).
ui_sessions_ended = Table(
    "ui_sessions_ended",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", Double, nullable=False),
)

# Dashboard sessions as they are made (revision 0006), so that a user can list the active
# sessions of their key and end one; ending it still goes through ui_sessions_ended,
# which every page checks. Sessions made before 0006 have no row.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("client", Text, nullable=False, default=""),  # the address it logged in from
    Column("user_agent", Text, nullable=False, default=""),
)
Index("ix_ui_sessions_key", ui_sessions.c.key_id, ui_sessions.c.expires_at)

# Relay-wide values every node shares, made once (e.g. the tracking links' HMAC key).
settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Where events go out. Endpoints from relay.toml are kept here too (source "config"), so
# that their deliveries have a row to point at; /v1/webhooks makes those of source "api".
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list of event types
    Column("secret", Text, nullable=False),  # whsec_...
    # During a rotation the old secret signs too, until previous_until.
    Column("previous_secret", Text, nullable=False, default="", server_default=""),
    Column("previous_until", Double, nullable=True),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("source", String(16), nullable=False),
    Column("disabled_at", Double, nullable=True),  # a 410, or an operator
    Column("disabled_reason", Text, nullable=False, default="", server_default=""),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# (webhook type, endpoint): what the outbox triggers of revision 0003 join events against.
webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("type", String(32), primary_key=True),
    Column("endpoint_id", String(36), primary_key=True),
    ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
)

# The outbox: one row per (endpoint, event), inserted by the triggers in the transaction
# that inserts the event. Its id is the stable webhook-id. next_attempt_at is NULL once
# final; a claim moves it to the lease expiry, as for mail deliveries.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("endpoint_id", String(36), nullable=False),
    Column("event_id", BigInteger, nullable=True),
    Column("job_event_id", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # pending, succeeded, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Double, nullable=True),
    Column("lease_owner", Text, nullable=True),
    Column("last_status", Integer, nullable=True),  # the HTTP status of the last attempt
    Column("last_error", Text, nullable=False, default="", server_default=""),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=True),
    ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.next_attempt_at,
    sqlite_where=webhook_deliveries.c.next_attempt_at.is_not(None),
    postgresql_where=webhook_deliveries.c.next_attempt_at.is_not(None),
)
# An endpoint's deliveries newest first (and its deletion). Every event writes this,
# the due index and the row; success touches only the due index (revision 0007 says why).
Index(
    "ix_webhook_deliveries_listing",
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.id,
)
# The failed ones (listing and replay by status "failed"): only failures enter it.
Index(
    "ix_webhook_deliveries_failed",
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.id,
    sqlite_where=text("status = 'failed'"),
    postgresql_where=text("status = 'failed'"),
)
