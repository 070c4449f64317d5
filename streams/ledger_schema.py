"""The ledger's tables (SQLite and PostgreSQL alike), created at connect if missing.

Statements are split on `;` for PostgreSQL: no semicolon inside a statement or comment.
"""

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS decided_lines (
    claim_id TEXT NOT NULL,           -- a decided claim's lines as submitted, kept once its claim_lines
    line_number INTEGER NOT NULL,     -- rows go: Monitor Mode's history run decides them again
    service_date TEXT NOT NULL,       -- ISO date of service (the history run selects by it)
    decided_at DOUBLE PRECISION NOT NULL,  -- when the claim was decided (the order the run replays)
    body TEXT NOT NULL,               -- the line as received
    PRIMARY KEY (claim_id, line_number)
);
CREATE INDEX IF NOT EXISTS decided_lines_service_date ON decided_lines (service_date);
CREATE TABLE IF NOT EXISTS member_locks (
    member_id TEXT PRIMARY KEY
);
"""

#: The tables SCHEMA creates, in order.
TABLES: tuple[str, ...] = tuple(stmt.split("(")[0].split()[-1] for stmt in SCHEMA.split(";") if "CREATE TABLE" in stmt)
