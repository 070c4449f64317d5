"""Monitor Mode: where a candidate policy decides a line differently from the live one.

Pure comparison of two decisions of one line, used by the `shadow` command (two batch
runs) and by a worker with a shadow rulebook (both decisions made in the same ledger
transaction, from the same history). A line *changed* when its status, allowed amount or
set of CARCs differs (CONTRACT.md, `shadow`); the report names the rules that made the
difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from rules import engine
from rules.reference import ReferenceData
from rules.rulebook import Rulebooks
from streams.models import AdjudicatedLine, ClaimWork

Record = dict[str, Any]
ZERO = Decimal("0.00")


def record_outcome(record: Record | None) -> tuple[str, Decimal, frozenset[str]]:
    """(status, allowed, CARCs) of a published record; a rejection counts as REJECTED."""
    if record is None:
        return ("ABSENT", ZERO, frozenset())
    if "status" not in record:
        return ("REJECTED", ZERO, frozenset())
    return (record["status"], Decimal(record["allowed_amount"]), frozenset(a["carc"] for a in record["adjustments"]))


def decision_outcome(d: AdjudicatedLine) -> tuple[str, Decimal, frozenset[str]]:
    return (d.status, d.allowed_amount, frozenset(a.carc for a in d.adjustments))


#: the contract reduction of a paid line: it comes and goes with the payment, it decides nothing
REDUCTION = "PRICE-CONTRACT-REDUCTION"


def deciding_rules(before: Record | None, after: Record | None) -> list[str]:
    """The rule ids found on one side only (the contract reduction only when nothing else
    differs); when both name the same rules (a price that moved), those whose amounts differ."""
    def adjustments(r: Record | None) -> dict[str, Decimal]:
        return {a["rule"]: Decimal(a["amount"]) for a in (r or {}).get("adjustments", [])}

    b, a = adjustments(before), adjustments(after)
    only = b.keys() ^ a.keys()
    return sorted(only - {REDUCTION} or only) or sorted(rule for rule in b if b[rule] != a[rule])


def difference(before: Record | None, after: Record | None) -> Record:
    """The shadow report's object for one changed line."""
    either = before or after or {}
    return {"claim_id": either.get("claim_id"), "line_number": either.get("line_number"),
            "before": before, "after": after, "rules": deciding_rules(before, after)}


@dataclass(slots=True)
class Summary:
    """Totals over the lines compared; allowed amounts are what a consumer deduping by
    (claim_id, line_number, status) would add up, reversals included."""

    lines: int = 0
    changed: int = 0
    allowed_before: Decimal = ZERO
    allowed_after: Decimal = ZERO
    changed_by_rule: dict[str, int] = field(default_factory=dict)

    def count(self, diff: Record) -> None:
        self.changed += 1
        for rule in diff["rules"]:
            self.changed_by_rule[rule] = self.changed_by_rule.get(rule, 0) + 1

    def as_json(self) -> Record:
        return {"summary": {"lines": self.lines, "changed": self.changed,
                            "allowed_before": str(self.allowed_before), "allowed_after": str(self.allowed_after),
                            "changed_by_rule": dict(sorted(self.changed_by_rule.items()))}}


def shadow_decisions(work: ClaimWork, ref: ReferenceData, candidate: Rulebooks,
                     history: engine.History, now: datetime) -> list[AdjudicatedLine]:
    """The claim decided again from its submitted lines under the candidate, against the
    same history as the live decision; nothing is recorded."""
    lines = [lw.line for lw in work.lines]
    again = engine.price(engine.enrich(engine.start(lines, candidate, work.submitted_at), ref, candidate), ref)
    return engine.finalize(again, history, candidate, now).new_decisions


def compare_claim(live: list[AdjudicatedLine], shadow: list[AdjudicatedLine], as_record) -> list[Record]:
    """The differences between a claim's live and candidate decisions, line by line;
    `as_record` turns a decision into its published JSON form (only for changed lines)."""
    by_line = {d.line_number: d for d in shadow}
    out = []
    for d in live:
        other = by_line.get(d.line_number)
        if other is not None and decision_outcome(d) != decision_outcome(other):
            out.append(difference(as_record(d), as_record(other)))
    return out
