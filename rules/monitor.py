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
from contract.models import AdjudicatedLine, ClaimWork, ShadowDifference, build

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


def _rule_amounts(decision: Record | AdjudicatedLine | None) -> dict[str, Decimal]:
    """The rules a decision names, with their amounts: its adjustments', and the rule that
    pended it (with the amount the rules would allow), so a pend is a rule that decided."""
    if decision is None:
        return {}
    if isinstance(decision, AdjudicatedLine):
        found = {a.rule: a.amount for a in decision.adjustments}
        if decision.pend is not None:
            found[decision.pend.rule] = decision.pend.suggested_amount
        return found
    out = {a["rule"]: Decimal(a["amount"]) for a in decision.get("adjustments", [])}
    if pend := decision.get("pend"):
        out[pend["rule"]] = Decimal(pend["suggested_amount"])
    return out


def deciding_rules(before: Record | AdjudicatedLine | None, after: Record | AdjudicatedLine | None) -> list[str]:
    """The rule ids found on one side only (the contract reduction only when nothing else
    differs); when both name the same rules (a price that moved), those whose amounts differ."""
    b, a = _rule_amounts(before), _rule_amounts(after)
    only = b.keys() ^ a.keys()
    return sorted(only - {REDUCTION} or only) or sorted(rule for rule in b if b[rule] != a.get(rule))


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


@dataclass(slots=True)
class ShadowResult:
    """One claim's comparison, for the topic, the metrics and the impact totals (`lines`:
    every line compared, live and candidate decision, and the deciding rules when they differ)."""

    compared: int = 0
    allowed_live: Decimal = ZERO
    allowed_candidate: Decimal = ZERO
    differences: list[ShadowDifference] = field(default_factory=list)
    lines: list[tuple[AdjudicatedLine, AdjudicatedLine, list[str] | None]] = field(default_factory=list)


def compare_claim(work: ClaimWork, history: engine.History, live: list[AdjudicatedLine], ref: ReferenceData,
                  candidate: Rulebooks) -> ShadowResult:
    """The claim's newly decided lines (`live`) against the candidate's decisions of them."""
    result = ShadowResult()
    if not live:
        return result  # a re-delivery: compared when it was first decided
    shadow = {d.line_number: d for d in shadow_decisions(work, ref, candidate, history, live[0].adjudicated_at)}
    for d in live:
        other = shadow.get(d.line_number)
        if other is None:
            continue
        result.compared += 1
        result.allowed_live += d.allowed_amount
        result.allowed_candidate += other.allowed_amount
        rules = None
        if decision_outcome(d) != decision_outcome(other):
            rules = deciding_rules(d, other)
            result.differences.append(build(
                ShadowDifference, claim_id=d.claim_id, line_number=d.line_number,
                candidate_version=other.policy_version, before=d, after=other, rules=rules))
        result.lines.append((d, other, rules))
    return result
