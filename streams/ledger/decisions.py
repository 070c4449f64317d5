"""What a decided claim establishes, recorded over an open ledger transaction: its decisions,
the queue entries of its pended lines, its paid (and pended) lines' fingerprints and units, and
its drug days. `Ledger.decide` records a claim with it, and an adjustment
(streams/ledger/reprocess.py) records the minted claim the same way."""

from __future__ import annotations

from collections.abc import Mapping

from rules.engine import Outcome
from streams.ledger import review as review_store
from contract.models import ClaimLine


def record_outcome(q, claim_id: str, member: str, outcome: Outcome, lines: Mapping[int, ClaimLine]) -> None:
    """`outcome`'s new decisions of `claim_id` and what they establish (`lines`: its lines by number)."""
    for d in outcome.new_decisions:
        q("INSERT INTO decisions (claim_id, line_number, body) VALUES (?, ?, ?)", claim_id, d.line_number, d.model_dump_json())
    review_store.record_pends(q, outcome.new_decisions, lines)
    for fingerprint, number, member_id in outcome.paid:
        q("INSERT INTO paid_lines (claim_id, line_number, member_id, fingerprint) VALUES (?, ?, ?, ?)",
          claim_id, number, member_id, fingerprint)
    for auth, number, units in outcome.units:
        q("INSERT INTO unit_usage (claim_id, line_number, authorization_number, units) VALUES (?, ?, ?, ?)",
          claim_id, number, auth, str(units))
    for day in outcome.drug_days:
        q("INSERT INTO claim_drug_days (claim_id, member_id, service_date) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
          claim_id, member, day.isoformat())
