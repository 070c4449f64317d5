"""The ledger's side of corrections and voids (CONTRACT.md *Corrections and voids*): reading
the claim a replacement or void names, and recording its reversal and release.

Helpers over an open ledger transaction (`q(sql, *params)`); `Ledger.decide` calls them in
the transaction that decides the correction, so the reversal, the release and the new
claim's decisions commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from rules.corrections import OriginalClaim
from contract.models import CORRECTION_REJECTIONS, VOID, AdjudicatedLine, ClaimLine, RejectionReason


#: the reads of deciding a correction, sent ahead on PostgreSQL (`Ledger.decide`)
REVERSED_LINES = "SELECT line_number, body FROM reversals WHERE claim_id = ?"
CAUSED = "SELECT body FROM reversals WHERE reversed_by = ? ORDER BY claim_id, line_number"
_CORRECTED_BY = "SELECT claim_id FROM corrections WHERE original_claim_id = ?"
_ORIGINAL_DECISIONS = "SELECT body FROM decisions WHERE claim_id = ? ORDER BY line_number"


def reversed_lines(q, claim_id: str) -> dict[int, AdjudicatedLine]:
    """The REVERSED records of a claim's lines, by line number (none unless it was corrected)."""
    rows = q(REVERSED_LINES, claim_id).fetchall()
    return {n: AdjudicatedLine.model_validate_json(b) for n, b in rows}


def original(q, claim_id: str | None, lock: str) -> OriginalClaim | None:
    """The claim a correction names, its row held for the transaction (`lock` is
    " FOR UPDATE" on PostgreSQL; SQLite's write lock already serializes): two workers can
    never both see it uncorrected."""
    row = q(f"SELECT status FROM claims WHERE claim_id = ?{lock}", claim_id).fetchone()
    if row is None:
        return None
    by = q(_CORRECTED_BY, claim_id).fetchone()
    rows = q(_ORIGINAL_DECISIONS, claim_id).fetchall()
    return OriginalClaim(claim_id=claim_id, status=row[0], corrected_by=by[0] if by else None,
                         decisions=tuple(AdjudicatedLine.model_validate_json(r[0]) for r in rows))


def send_original(q, claim_id: str | None, lock: str) -> None:
    """Send `original`'s reads ahead (`q.send`, PostgreSQL's pipeline), in its order."""
    q.send(f"SELECT status FROM claims WHERE claim_id = ?{lock}", claim_id)
    q.send(_CORRECTED_BY, claim_id)
    q.send(_ORIGINAL_DECISIONS, claim_id)


def caused(q, claim_id: str) -> list[AdjudicatedLine]:
    """The reversals a replacement or void made, by the reversed claim's line number."""
    rows = q(CAUSED, claim_id).fetchall()
    return [AdjudicatedLine.model_validate_json(r[0]) for r in rows]


def reverse(q, original_claim_id: str, by: ClaimLine, reversals: Iterable[AdjudicatedLine]) -> None:
    """Record the reversal of `original_claim_id` by the claim of `by` (a line of the
    replacement or void) and release what it established. The corrections table's key makes
    a second reversal of one claim fail the transaction."""
    q("INSERT INTO corrections (original_claim_id, claim_id, claim_frequency) VALUES (?, ?, ?)",
      original_claim_id, by.claim_id, by.claim_frequency)
    for r in reversals:
        q("INSERT INTO reversals (claim_id, line_number, reversed_by, body) VALUES (?, ?, ?, ?)",
          r.claim_id, r.line_number, by.claim_id, r.model_dump_json())
    for table in ("paid_lines", "unit_usage", "claim_drug_days"):
        q(f"DELETE FROM {table} WHERE claim_id = ?", original_claim_id)


def rejected_when_adjudicated(reason: str | None) -> bool:
    """Whether a REJECTED claim's stored reason is a correction's failed check (made when
    it was adjudicated, not at the front end, whose rejections answered each line)."""
    return reason is not None and RejectionReason.model_validate_json(reason).code in CORRECTION_REJECTIONS


def state(q, claim_id: str) -> dict[str, Any]:
    """What corrections say about a claim, for the HTTP API: the replacement or void that
    reversed it (which of the two, and its lines' reversals), and the claim it reversed
    itself (and the reversals that made)."""
    by = q("SELECT claim_id, claim_frequency FROM corrections WHERE original_claim_id = ?", claim_id).fetchone()
    reverses = q("SELECT original_claim_id FROM corrections WHERE claim_id = ?", claim_id).fetchone()
    return {
        "reversed_by": by[0] if by else None,
        "voided": bool(by) and by[1] == VOID,
        "adjusted": bool(by) and by[1] == "A",  # reversed by a payer-initiated adjustment (streams/ledger/reprocess.py)
        "reversed": [orjson.loads(r[0]) for r in
                     q("SELECT body FROM reversals WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()],
        "reverses": reverses[0] if reverses else None,
        "reversals": [orjson.loads(r[0]) for r in
                      q("SELECT body FROM reversals WHERE reversed_by = ? ORDER BY claim_id, line_number", claim_id).fetchall()],
    }
