"""Corrections and voids (CONTRACT.md and POLICY.md *Corrections and voids*): pure
functions over the claim a replacement (claim frequency 7) or void (8) names.

`check` says whether the named original may be corrected, `reversal` turns one of the
original's decisions into its REVERSED record, and `voided` is a void line's record. The
ledger reads the original (`OriginalClaim`) and commits what the engine made of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from contract.models import (
    ORIGINAL_ALREADY_REPLACED,
    ORIGINAL_MISMATCH,
    ORIGINAL_NOT_FOUND,
    VOID,
    AdjudicatedLine,
    ClaimLine,
    RejectionReason,
    evolve,
)

ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class OriginalClaim:
    """The claim named in `original_claim_id`, as the ledger holds it when the correction
    is adjudicated."""

    claim_id: str
    status: str  # the ledger's claim status: OPEN, ASSEMBLED, DECIDED or REJECTED
    corrected_by: str | None  # the replacement or void that already reversed it
    decisions: tuple[AdjudicatedLine, ...]  # its own decisions, by line number


def check(head: ClaimLine, original: OriginalClaim | None) -> RejectionReason | None:
    """Why the correction whose first line is `head` cannot reverse `original` (None: it can).

    The checks run in the contract's order: not found, already replaced, mismatch."""
    if original is None or original.status != "DECIDED" or not original.decisions:
        return _reason(ORIGINAL_NOT_FOUND, f"no decided claim {original.claim_id if original else head.original_claim_id!r}"
                       " to correct (unknown, rejected at the front end, or not decided yet)")
    if original.corrected_by is not None:
        return _reason(ORIGINAL_ALREADY_REPLACED, f"claim {original.claim_id!r} was already replaced or voided by "
                       f"{original.corrected_by!r}; correct the latest version instead")
    if original.decisions[0].status == "VOIDED":
        return _reason(ORIGINAL_NOT_FOUND, f"claim {original.claim_id!r} is a void, which cannot be corrected; "
                       "submit a new original claim instead")
    first = original.decisions[0]
    if first.member_id != head.member_id or first.provider_npi != head.provider_npi:
        return _reason(ORIGINAL_MISMATCH, f"claim {original.claim_id!r} is of another member or billing provider")
    return None


def _reason(code: str, message: str) -> RejectionReason:
    return RejectionReason(code=code, field="original_claim_id", message=message)


def reversal(decision: AdjudicatedLine, by: str, now: datetime) -> AdjudicatedLine:
    """The REVERSED record of one of the original's decisions: every amount negated, so the
    line's records add up to what is owed now (nothing)."""
    return evolve(
        decision,
        status="REVERSED",
        allowed_amount=ZERO - decision.allowed_amount,  # never "-0.00"
        adjustments=[evolve(a, amount=ZERO - a.amount) for a in decision.adjustments],
        reversed_by=by,
        adjudicated_at=now,
        pend=None,  # a pended line's reversal owes nothing and waits for no one
        review=None,
    )


def is_void(head: ClaimLine) -> bool:
    return head.claim_frequency == VOID
