"""The ledger's tables (SQLite and PostgreSQL alike) and their versions.

A ledger records the migrations applied to it in `schema_version`; `migrate` applies the ones
it lacks, in order, when `Ledger` connects, inside one transaction that holds the writers'
lock (SQLite: the writers' gate and BEGIN IMMEDIATE; PostgreSQL: the advisory lock), so of
workers starting at once one migrates and the others find it done. A ledger made before
versions existed (no `schema_version`, but the tables of migration 1) is stamped version 1:
migration 1's `CREATE ... IF NOT EXISTS` creates whatever an older ledger still lacked, as
the code then did at every connect, and changes nothing that exists. A ledger of a version
newer than the code knows is refused (`SchemaTooNew`).

To change the schema, append a `Migration` with the next version: never edit one that was
released (ledgers in production carry it; tests/test_ledger_migrations.py holds each released
migration's checksum). `TABLES` is computed over all of them. Statements are split on `;`:
no semicolon inside a statement or comment.

A small runner rather than Alembic: the ledger speaks raw SQL through sqlite3 and psycopg,
with no SQLAlchemy models for Alembic to compare, and must migrate inside its own connection
and writers' lock on two backends; Alembic would bring SQLAlchemy, an env.py and a versions
directory, and still need that lock wrapped around it. Ordered SQL scripts and a version
table are all the ledger needs (about 50 lines).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its version (1, 2, ...), what it does, its SQL."""

    version: int
    description: str
    sql: str

    def statements(self) -> list[str]:
        return [s.strip() for s in self.sql.split(";") if s.strip()]


#: Migration 1: the ledger as the code created it before schema versions (`SCHEMA` until then).
_V1 = """
CREATE TABLE IF NOT EXISTS claims (
    claim_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,             -- OPEN, ASSEMBLED, DECIDED, REJECTED
    reason TEXT,                      -- why a REJECTED claim was rejected, for its later lines
    source_partition INTEGER,         -- input partition of its first line (expiry waits for it)
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_open ON claims (status, first_seen);
CREATE TABLE IF NOT EXISTS claim_lines (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    body TEXT NOT NULL,               -- the validated line
    original TEXT NOT NULL,           -- the object as received
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS decisions (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS rejections (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS paid_lines (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    member_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS paid_lines_member ON paid_lines (member_id);
CREATE TABLE IF NOT EXISTS unit_usage (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    authorization_number TEXT NOT NULL,
    units TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS unit_usage_auth ON unit_usage (authorization_number);
CREATE TABLE IF NOT EXISTS claim_drug_days (
    claim_id TEXT NOT NULL,           -- the claim whose drug line supports per diem that day
    member_id TEXT NOT NULL,
    service_date TEXT NOT NULL,
    PRIMARY KEY (claim_id, service_date)
);
CREATE INDEX IF NOT EXISTS claim_drug_days_member ON claim_drug_days (member_id);
CREATE TABLE IF NOT EXISTS reversals (
    claim_id TEXT NOT NULL,           -- the reversed (original) line (its decision stays in decisions)
    line_number INTEGER NOT NULL,
    reversed_by TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS reversals_by ON reversals (reversed_by);
CREATE TABLE IF NOT EXISTS corrections (
    original_claim_id TEXT PRIMARY KEY,  -- a claim is reversed at most once
    claim_id TEXT NOT NULL UNIQUE,       -- the replacement or void that reversed it
    claim_frequency TEXT NOT NULL        -- 7 (replacement) or 8 (void)
);
CREATE TABLE IF NOT EXISTS outbox (
    claim_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS input_progress (
    input_partition INTEGER PRIMARY KEY,
    read_to_end_at DOUBLE PRECISION NOT NULL  -- last time a worker saw it with nothing left
);
CREATE TABLE IF NOT EXISTS claim_repeats (
    claim_id TEXT NOT NULL,           -- a line sent again (identical) while its claim was assembled:
    line_number INTEGER NOT NULL,     -- each copy is answered too, when the claim is decided or rejected
    copies INTEGER NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS claim_messages (
    input_partition INTEGER NOT NULL, -- the input messages of claims being assembled, so a re-delivery
    input_offset BIGINT NOT NULL,     -- (same offset) is told apart from a line sent again (a new one)
    claim_id TEXT NOT NULL,
    PRIMARY KEY (input_partition, input_offset)
);
CREATE INDEX IF NOT EXISTS claim_messages_claim ON claim_messages (claim_id);
CREATE TABLE IF NOT EXISTS settled_by (
    claim_id TEXT PRIMARY KEY,         -- the message that decided the claim (claims.internal.priced) or
    source_partition INTEGER NOT NULL, -- rejected it (claims.lines.submitted): its re-delivery answers for
    source_offset BIGINT NOT NULL      -- the whole claim again, another copy does not (issue 12)
);
CREATE TABLE IF NOT EXISTS settled_lines (
    claim_id TEXT NOT NULL,           -- the lines (and copies) the message that rejected the claim answered:
    line_number INTEGER NOT NULL,     -- its re-delivery answers these again, not the lines that came
    copies INTEGER NOT NULL,          -- later and were answered by their own messages
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS remittance_lines (
    claim_id TEXT NOT NULL,           -- what the 837 said that the 835 answers with (REF*6R, SV101-7,
    line_number INTEGER NOT NULL,     -- patient name, SBR09, ISA15), kept once its claim_lines row goes
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS control_numbers (
    sender TEXT PRIMARY KEY,          -- the ISA06 of the interchanges numbered (one sequence each)
    last_value BIGINT NOT NULL        -- the last number handed out (ISA13, GS06, TRN02, 1..999999999)
);
CREATE TABLE IF NOT EXISTS member_locks (
    member_id TEXT PRIMARY KEY
);
"""

#: manual review (POLICY.md *Manual review*): the queue of pended lines, the append-only
#: history of their reviews, and the outbox of reviewers' final records
_V2 = """
CREATE TABLE IF NOT EXISTS pends (
    claim_id TEXT NOT NULL,           -- a line pended for manual review (POLICY.md *Manual review*): its
    line_number INTEGER NOT NULL,     -- decision (PENDED, then final) is in decisions, its holds in
    reason TEXT NOT NULL,             -- paid_lines and unit_usage as a paid line's are
    queue TEXT NOT NULL,
    authorization_number TEXT,        -- the claim's, for the reviewer's view of the units it holds
    charge_amount TEXT NOT NULL,      -- what the reviewer's amount may not exceed
    suggested_amount TEXT NOT NULL,   -- what the rules would allow (a PAY without an amount)
    pended_at TEXT NOT NULL,          -- ISO 8601, UTC: the queue is oldest first
    state TEXT NOT NULL,              -- OPEN, DECIDED (by a reviewer), REVERSED (by a correction)
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS pends_open ON pends (state, queue, pended_at);
CREATE TABLE IF NOT EXISTS review_history (
    claim_id TEXT NOT NULL,           -- every event of a pended line's review, append-only:
    line_number INTEGER NOT NULL,     -- PENDED, DECIDED, REVERSED: nothing updates or deletes a row
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,              -- the rule that pended it, the reviewer, or the correcting claim
    at TEXT NOT NULL,
    body TEXT NOT NULL,               -- the event's details (JSON)
    PRIMARY KEY (claim_id, line_number, seq)
);
CREATE TABLE IF NOT EXISTS decision_outbox (
    claim_id TEXT NOT NULL,           -- a reviewer's final record, stored with the decision and kept
    line_number INTEGER NOT NULL,     -- until it is published (a crash in between publishes it on restart)
    body TEXT NOT NULL,
    PRIMARY KEY (claim_id, line_number)
);
"""

#: Monitor Mode's history run (`shadow --from-ledger`): a decided claim's lines as submitted
_V3 = """
CREATE TABLE IF NOT EXISTS decided_lines (
    claim_id TEXT NOT NULL,           -- a decided claim's lines as submitted, kept once its claim_lines
    line_number INTEGER NOT NULL,     -- rows go: Monitor Mode's history run decides them again
    service_date TEXT NOT NULL,       -- ISO date of service (the history run selects by it)
    decided_at DOUBLE PRECISION NOT NULL,  -- when the claim was decided (the order the run replays)
    body TEXT NOT NULL,               -- the line as received
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS decided_lines_service_date ON decided_lines (service_date);
"""

#: the access log (CONTRACT.md *API clients and the access log*): one entry per request that read
#: or changed a claim's data, append-only (only retention deletes), the claims each touched,
#: and the outbox of entries not yet published on claims.audit.access
_V4 = """
CREATE TABLE IF NOT EXISTS access_log (
    entry_id TEXT PRIMARY KEY,        -- one request's entry: nothing updates a row, only retention
    at TEXT NOT NULL,                 -- (CLAIMS_ACCESS_LOG_RETENTION_DAYS) deletes, by at (ISO 8601 UTC)
    client TEXT,                      -- the client's or reviewer's name (null: no valid token)
    action TEXT NOT NULL,             -- the operationId
    status INTEGER NOT NULL,          -- the HTTP status answered
    request_id TEXT NOT NULL,
    body TEXT NOT NULL                -- the entry as published (JSON)
);
CREATE INDEX IF NOT EXISTS access_log_at ON access_log (at);
CREATE INDEX IF NOT EXISTS access_log_client ON access_log (client, at);
CREATE TABLE IF NOT EXISTS access_log_claims (
    claim_id TEXT NOT NULL,           -- who touched this claim: an entry's claims, one row each
    at TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    PRIMARY KEY (claim_id, at, entry_id)
);
CREATE INDEX IF NOT EXISTS access_log_claims_at ON access_log_claims (at);
CREATE TABLE IF NOT EXISTS access_outbox (
    entry_id TEXT PRIMARY KEY,        -- an entry stored with its request and kept until it is published
    client TEXT,                      -- on claims.audit.access (a crash in between publishes it later)
    body TEXT NOT NULL
);
"""

#: reprocessing after a retroactive reference change (CONTRACT.md *Reprocessing ...*): the
#: index a reference change finds decided claims by, the queue of changes to look at, the
#: proposals, the adjustments made and their outbox
_V5 = """
CREATE TABLE IF NOT EXISTS reprocess_index (
    kind TEXT NOT NULL,               -- authorization, ndc, code or member (rules/reprocess.py)
    value TEXT NOT NULL,              -- the authorization number, 11-digit NDC, procedure code, member id
    service_date TEXT NOT NULL,       -- ISO date of service for ndc and code, '' for the claim-level kinds
    claim_id TEXT NOT NULL,           -- a decided claim (written when it is decided or adjusted)
    as_of DOUBLE PRECISION NOT NULL,  -- when the claim was complete (adjusted): a change recorded before it is not its trigger
    PRIMARY KEY (kind, value, service_date, claim_id)
);
CREATE TABLE IF NOT EXISTS reference_changes (
    change_id TEXT PRIMARY KEY,       -- the change's identity (topic, partition, offset): recorded once
    topic TEXT NOT NULL,              -- the reference topic and key that changed
    ref_key TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL               -- PENDING until its proposals are made, then DONE
);
CREATE INDEX IF NOT EXISTS reference_changes_pending ON reference_changes (state, received_at);
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id TEXT PRIMARY KEY,     -- derived from the change and the claim: made once per change
    claim_id TEXT NOT NULL,
    status TEXT NOT NULL,             -- OPEN, SUPERSEDED, WITHDRAWN, APPROVED, REJECTED
    change_id TEXT NOT NULL,
    created_at TEXT NOT NULL,         -- ISO 8601: the API lists oldest first
    body TEXT NOT NULL                -- the proposal as published, with its current status
);
CREATE UNIQUE INDEX IF NOT EXISTS proposals_one_open ON proposals (claim_id) WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS proposals_status ON proposals (status, created_at);
CREATE TABLE IF NOT EXISTS adjustments (
    claim_id TEXT PRIMARY KEY,        -- the minted <claim_id>~A<n>
    adjusts TEXT NOT NULL,            -- the submitted claim it descends from
    reverses TEXT NOT NULL UNIQUE,    -- the version it reversed
    n INTEGER NOT NULL,
    proposal_id TEXT NOT NULL UNIQUE,
    UNIQUE (adjusts, n)
);
CREATE TABLE IF NOT EXISTS adjusted_lines (
    claim_id TEXT NOT NULL,           -- an adjusted claim's lines as submitted (its root's), which a
    line_number INTEGER NOT NULL,     -- later reprocessing decides again (decided_lines keeps only
    body TEXT NOT NULL,               -- submitted claims, for Monitor Mode's history run)
    PRIMARY KEY (claim_id, line_number)
);
CREATE TABLE IF NOT EXISTS reprocess_outbox (
    item TEXT PRIMARY KEY,            -- what to publish, stored in the transaction that made it:
    topic TEXT NOT NULL,              -- a proposal's new status, an adjustment's records and 835
    msg_key TEXT NOT NULL,
    made_at DOUBLE PRECISION NOT NULL,
    ord INTEGER NOT NULL,
    body TEXT NOT NULL
)
"""

#: one drainer at a time per outbox, across the workers sharing the ledger (streams/ledger/leases.py)
_V6 = """
CREATE TABLE IF NOT EXISTS outbox_leases (
    outbox TEXT PRIMARY KEY,          -- outbox, decision_outbox, reprocess_outbox or access_outbox
    owner TEXT NOT NULL,              -- the worker draining it (a random id per worker process)
    until DOUBLE PRECISION NOT NULL   -- when the lease passes on if its holder neither extends nor gives it back
)
"""

#: when each row of the two outboxes without a time was stored (0: before this migration), for
#: the age of the oldest row waiting (`claims_outbox_oldest_row_age_seconds`)
_V7 = """
ALTER TABLE outbox ADD COLUMN made_at DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE decision_outbox ADD COLUMN made_at DOUBLE PRECISION NOT NULL DEFAULT 0
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the ledger's 18 tables, as created before schema versions", _V1),
    Migration(2, "manual review: pends, review_history, decision_outbox", _V2),
    Migration(3, "Monitor Mode's history run: decided_lines", _V3),
    Migration(4, "the access log: access_log, access_log_claims, access_outbox", _V4),
    Migration(5, "reprocessing: reprocess_index, reference_changes, proposals, adjustments, adjusted_lines, "
                 "reprocess_outbox", _V5),
    Migration(6, "one drainer per outbox: outbox_leases", _V6),
    Migration(7, "when outbox and decision_outbox rows were stored: made_at", _V7),
)

#: the version this code migrates a ledger to
LATEST: int = MIGRATIONS[-1].version

#: the SQL of every migration, in order
SCHEMA = "".join(m.sql for m in MIGRATIONS)

#: The tables the migrations create, in order.
TABLES: tuple[str, ...] = tuple(stmt.split("(")[0].split()[-1] for m in MIGRATIONS for stmt in m.statements()
                                if "CREATE TABLE" in stmt)

#: where a ledger records the migrations applied to it (not one of `TABLES`)
VERSION_TABLE = "schema_version"


class SchemaTooNew(RuntimeError):
    """The ledger was migrated by newer code than this."""


def migrate(q: Callable[..., Any], postgres: bool, migrations: tuple[Migration, ...] = MIGRATIONS) -> tuple[int, int]:
    """Bring the ledger to the last of `migrations`, inside the caller's transaction, which
    holds the writers' lock; `q(sql, *params)` runs one statement (`?` placeholders).
    Returns (version before, version after); 0 before: a new ledger."""
    if _exists(q, postgres, VERSION_TABLE):
        current = q(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()[0] or 0
        stamped = False
    else:
        q(f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
          "applied_at DOUBLE PRECISION NOT NULL)")
        current, stamped = 0, _exists(q, postgres, "claims")  # made by the code before versions
    known = migrations[-1].version
    if current > known:
        raise SchemaTooNew(f"has schema version {current}, newer than this code's {known}: run the code that "
                           f"migrated it (or newer), or restore a ledger of version {known} or earlier")
    for m in migrations:
        if m.version > current:
            for statement in m.statements():
                q(statement)
            note = " (stamped: the ledger was created before schema versions)" if stamped and m.version == 1 else ""
            q(f"INSERT INTO {VERSION_TABLE} (version, description, applied_at) VALUES (?, ?, ?)",
              m.version, m.description + note, time.time())
    return current, max(current, known)


def _exists(q: Callable[..., Any], postgres: bool, table: str) -> bool:
    if postgres:  # in the connection's search_path, where the ledger's statements create it
        return q("SELECT to_regclass(?::text) IS NOT NULL", table).fetchone()[0]
    return q("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", table).fetchone() is not None
