"""Manual review (POLICY.md *Manual review*, CONTRACT.md *Pended lines and manual review*):
pure functions over a pended line.

`pended` turns a decision the rules would pay into its PENDED record, `check` validates a
reviewer's decision against the rulebook and the line (422 material, naming the field),
`final` makes the PAID or DENIED record the decision stands for, and `same` tells an
idempotent repeat from a different decision. The ledger stores what these return; nothing
here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from rules.rulebook import PendReason, Rulebook
from contract.models import REVIEW_ACTIONS, AdjudicatedLine, Pend, Review, build, evolve

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
#: rule ids a pend and a reviewer's adjustments carry
PENDED_RULES = ("REVIEW-HIGH-DOLLAR", "REVIEW-NOC")


class InvalidDecision(ValueError):
    """A reviewer's decision that cannot be applied: the message, and the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Decision:
    """A reviewer's decision, validated: PAY at `allowed` (None: what the rules computed), or
    DENY with `carc` and `rarc`."""

    action: str
    allowed: Decimal | None = None
    carc: str | None = None
    rarc: tuple[str, ...] = ()
    note: str | None = None


def pended(decision: AdjudicatedLine, reason: PendReason, book: Rulebook, now: datetime) -> AdjudicatedLine:
    """The PENDED record of a line the rules would pay: nothing owed yet (`0.00`, no
    adjustments), its pricing as computed, and why it waits with what the rules would allow."""
    pend = build(Pend, reason=reason.reason, queue=reason.queue, rule=reason.rule,
                 message=f"{reason.message} [policy section {book.review.section}]",
                 suggested_amount=decision.allowed_amount, pended_at=now)
    return evolve(decision, status="PENDED", allowed_amount=ZERO, adjustments=[], pend=pend)


def check(body: Any, charge: Decimal, book: Rulebook) -> Decision:
    """A reviewer's request body as a `Decision`, or `InvalidDecision` naming the field:
    an unknown action; an allowed amount above the charge, negative, or with more than two
    decimal places; a CARC the rulebook's `review_denial_carcs` does not list."""
    if not isinstance(body, dict):
        raise InvalidDecision("body", "the body must be a JSON object with an action (PAY or DENY)")
    action = body.get("action")
    if action not in REVIEW_ACTIONS:
        raise InvalidDecision("action", f"action must be one of {', '.join(REVIEW_ACTIONS)}, not {action!r}")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise InvalidDecision("note", "note must be text of at most 2000 characters")
    if action == "PAY":
        for field in ("carc", "rarc"):
            if body.get(field) not in (None, []):
                raise InvalidDecision(field, f"{field} is given with a denial (DENY), not a payment")
        raw = body.get("allowed_amount")
        return Decision("PAY", None if raw is None else _amount(raw, charge), note=note)
    if body.get("allowed_amount") is not None:
        raise InvalidDecision("allowed_amount", "a denial (DENY) allows nothing; give allowed_amount only with PAY")
    carc = body.get("carc")
    allowed = book.review.review_denial_carcs
    if not isinstance(carc, str) or carc not in allowed:
        raise InvalidDecision("carc", f"carc must be one of {', '.join(allowed)} (the rulebook's review_denial_carcs), not {carc!r}")
    rarc = body.get("rarc") or []
    if not isinstance(rarc, list) or not all(isinstance(r, str) and r.isalnum() and 1 <= len(r) <= 8 for r in rarc) or len(rarc) > 5:
        raise InvalidDecision("rarc", "rarc must be a list of at most 5 remark codes (letters and digits)")
    return Decision("DENY", carc=carc, rarc=tuple(rarc), note=note)


def _amount(raw: Any, charge: Decimal) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise InvalidDecision("allowed_amount", "allowed_amount must be a decimal string such as \"1250.00\"")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidDecision("allowed_amount", f"allowed_amount {raw!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise InvalidDecision("allowed_amount", "allowed_amount must not be negative")
    if value.as_tuple().exponent < -2:
        raise InvalidDecision("allowed_amount", "allowed_amount has more than two decimal places")
    if value > charge:
        raise InvalidDecision("allowed_amount", f"allowed_amount {value} is above the line's charge {charge}")
    return value.quantize(CENT)


def final(pended_line: AdjudicatedLine, charge: Decimal, decision: Decision, reviewer: str, book: Rulebook,
          now: datetime) -> AdjudicatedLine:
    """The PAID or DENIED record a reviewer's decision makes of a PENDED line. A payment is at
    the reviewer's amount (by default the amount the rules computed) and carries CO/45
    `REVIEW-PRICED` for what it leaves of the charge; a denial carries the reviewer's CARC
    (group CO, `REVIEW-DENIED`) for the whole charge and, like every DENIED record, no pricing."""
    charge = charge.quantize(CENT)
    review = build(Review, action=decision.action, reviewer=reviewer, decided_at=now, note=decision.note)
    if decision.action == "PAY":
        allowed = decision.allowed if decision.allowed is not None else pended_line.pend.suggested_amount
        rest = charge - allowed
        adjustments = [book.review_adjustment("PAY", rest)] if rest > 0 else []
        status = "PAID"
        pricing = pended_line.pricing
    else:
        allowed = ZERO
        adjustments = [book.review_adjustment("DENY", charge, decision.carc or "", list(decision.rarc))]
        status, pricing = "DENIED", None  # as every DENIED record: pricing is how a payment was computed
    return evolve(pended_line, status=status, allowed_amount=allowed, adjustments=adjustments, pricing=pricing,
                  pend=None, review=review, adjudicated_at=now)


def same(stored: AdjudicatedLine, decision: Decision, suggested: Decimal) -> bool:
    """Whether `decision` is the one `stored` (a final record after a review) already holds:
    the same action, and the same amount (a PAY without one means `suggested`, the amount
    the rules computed) or the same CARC and RARCs."""
    if stored.review is None or stored.review.action != decision.action:
        return False
    if decision.action == "PAY":
        return stored.allowed_amount == (suggested if decision.allowed is None else decision.allowed)
    return bool(stored.adjustments) and stored.adjustments[0].carc == decision.carc and \
        tuple(stored.adjustments[0].rarc) == decision.rarc
