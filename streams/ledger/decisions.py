"""What a decided claim establishes, recorded over an open ledger transaction: its decisions,
the queue entries of its pended lines, its paid (and pended) lines' fingerprints and units, and
its drug days. `Ledger.decide` records a claim with it, and an adjustment
(streams/ledger/reprocess.py) records the minted claim the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rules.engine import Outcome
from streams.ledger import review as review_store
from contract.models import ClaimLine


def insert_rows(q, head: str, rows: Sequence[tuple], tail: str = "") -> None:
    """`head` ("INSERT INTO t (a, b) VALUES") with every row of `rows`, as one statement (one
    multi-row VALUES): on PostgreSQL one statement to send instead of one per row, on SQLite
    the same rows inserted. A failing row fails the statement, and so the transaction or
    savepoint it is in, as a failing single-row insert did. In an optimistic PostgreSQL batch
    the rows wait for the batch's others of the same statement (`Batched.defer`)."""
    defer = getattr(q, "defer", None)
    if defer is not None and rows:
        defer(head, rows, tail)
    elif rows:
        marks = "(" + ", ".join("?" * len(rows[0])) + ")"
        q(f"{head} {', '.join([marks] * len(rows))}{tail}", *[v for row in rows for v in row])


def record_outcome(q, claim_id: str, member: str, outcome: Outcome, lines: Mapping[int, ClaimLine]) -> None:
    """`outcome`'s new decisions of `claim_id` and what they establish (`lines`: its lines by number)."""
    insert_rows(q, "INSERT INTO decisions (claim_id, line_number, body) VALUES",
                [(claim_id, d.line_number, d.model_dump_json()) for d in outcome.new_decisions])
    review_store.record_pends(q, outcome.new_decisions, lines)
    insert_rows(q, "INSERT INTO paid_lines (claim_id, line_number, member_id, fingerprint) VALUES",
                [(claim_id, number, member_id, fingerprint) for fingerprint, number, member_id in outcome.paid])
    insert_rows(q, "INSERT INTO unit_usage (claim_id, line_number, authorization_number, units) VALUES",
                [(claim_id, number, auth, str(units)) for auth, number, units in outcome.units])
    insert_rows(q, "INSERT INTO claim_drug_days (claim_id, member_id, service_date) VALUES",
                [(claim_id, member, day.isoformat()) for day in outcome.drug_days], " ON CONFLICT DO NOTHING")
