"""Reprocessing after a retroactive reference change (CONTRACT.md and POLICY.md
*Reprocessing after a retroactive reference change*): pure functions, no I/O.

    lookups        which index entries a reference change looks at (trigger -> claims)
    index_entries  what a decided claim is found by (written when it is decided)
    dry_run        the claim decided again as a replacement would be, nothing stored
    propose        the proposal: the lines whose status, allowed amount or CARCs differ
    auto_approves  the rulebook's `[reprocess] auto_approve_increases`
    adjust         the adjustment: the current version's reversals and the minted
                   `<claim_id>~A<n>` claim's decisions (`adjusts`, `proposal_id`)

The ledger (streams/ledger/reprocess.py) finds the claims, gives the dry run the member's
state without what the claim itself established (the release), and commits what these
return; batch mode keeps the same state in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from rules import corrections, engine
from rules.engine import History, Outcome
from rules.ndc import normalize_ndc
from rules.reference import ReferenceData
from rules.rulebook import Rulebooks
from contract.models import (
    ORIGINAL,
    AdjudicatedLine,
    ClaimLine,
    ProposalLine,
    ProposalTrigger,
    ReprocessProposal,
    build,
    evolve,
)

ZERO = Decimal("0.00")
#: what separates a submitted claim id from an adjustment's number (never in a submitted id)
ADJUSTMENT_MARK = "~A"
#: the statuses of a claim whose lines are all final (a claim with any other is not looked at)
FINAL = frozenset({"PAID", "DENIED"})
#: the reviewer name of an automatic approval
AUTO = "auto"

#: index kinds: what a claim is found by
AUTHORIZATION, NDC, CODE, MEMBER = "authorization", "ndc", "code", "member"

#: reference topic -> index kind its key looks up (provider contracts are prospective: none)
_KIND_BY_TOPIC = {
    "reference.authorizations": AUTHORIZATION,
    "reference.awp-prices": NDC,
    "reference.fee-schedule": CODE,
    "reference.members": MEMBER,
    "reference.drugs": NDC,
}
#: the topics whose key carries an effective date (`<natural key>:<effective_from>`)
_DATED = frozenset({"reference.awp-prices", "reference.fee-schedule"})


@dataclass(frozen=True, slots=True)
class Lookup:
    """Claims with an index entry of `kind` and `value`, on or after `since` (None: any date)."""

    kind: str
    value: str
    since: date | None = None


def lookups(topic: str, key: str) -> list[Lookup]:
    """What a new or changed record (or tombstone) with `key` on `topic` looks at (the
    contract's table). A key that cannot be read (a dated key without a date) looks at nothing."""
    kind = _KIND_BY_TOPIC.get(topic)
    if kind is None or not key:
        return []
    if topic in _DATED:
        value, _, start = key.rpartition(":")
        try:
            since = date.fromisoformat(start)
        except ValueError:
            return []
        return [Lookup(kind, value, since)] if value else []
    return [Lookup(kind, key)]


IndexEntry = tuple[str, str, str]  # (kind, value, ISO service date; "" for claim-level kinds)


def index_entries(lines: Iterable[ClaimLine], decisions: Iterable[AdjudicatedLine] = ()) -> set[IndexEntry]:
    """What a decided claim is found by: its authorization number and member (claim-level),
    every line's procedure code and its NDC (11 digits, as decided, else normalized from
    the line) with the date of service."""
    ndc_by_line = {d.line_number: d.ndc11 for d in decisions if d.ndc11}
    out: set[IndexEntry] = set()
    for ln in lines:
        day = ln.service_date.isoformat()
        out.add((MEMBER, ln.member_id, ""))
        if ln.authorization_number:
            out.add((AUTHORIZATION, ln.authorization_number, ""))
        out.add((CODE, ln.procedure_code, day))
        ndc = ndc_by_line.get(ln.line_number) or (normalize_ndc(ln.drug.ndc) if ln.drug and ln.drug.ndc else None)
        if ndc:
            out.add((NDC, ndc, day))
    return out


def matches(lookup: Lookup, entries: Iterable[IndexEntry]) -> bool:
    """Whether a claim with these index entries is looked at by `lookup` (batch mode's scan;
    the ledger asks its index the same question)."""
    return any(kind == lookup.kind and value == lookup.value
               and (lookup.since is None or (day and date.fromisoformat(day) >= lookup.since))
               for kind, value, day in entries)


def looked_at(decisions: Sequence[AdjudicatedLine]) -> bool:
    """Whether a claim's latest version may be reprocessed: every line final (PAID or DENIED).
    Voids (VOIDED), reversed claims (REVERSED) and claims with a PENDED line are skipped."""
    return bool(decisions) and all(d.status in FINAL for d in decisions)


# --- adjustments' claim ids -------------------------------------------------------------------


def root_of(claim_id: str) -> str:
    """The submitted claim an adjusted claim descends from (itself for a submitted claim)."""
    return claim_id.split(ADJUSTMENT_MARK, 1)[0] if ADJUSTMENT_MARK in claim_id else claim_id


def mint(root: str, n: int) -> str:
    """The id of the `n`th adjustment of the submitted claim `root`: `<root>~A<n>`."""
    return f"{root}{ADJUSTMENT_MARK}{n}"


def proposal_id(change: str, claim_id: str) -> str:
    """A proposal's id, the same for the same reference change and claim however often the
    proposals are made again (a crash between the change and its proposals)."""
    return "RP-" + hashlib.sha256(f"{change}\x00{claim_id}".encode()).hexdigest()[:24]


# --- the dry run ---------------------------------------------------------------------------------


def as_new(lines: Iterable[ClaimLine], claim_id: str | None = None) -> list[ClaimLine]:
    """A claim's submitted lines decided afresh: an original claim (a replacement's check of
    its original was made when it was decided), under `claim_id` when given."""
    changes: dict = {"claim_frequency": ORIGINAL, "original_claim_id": None}
    if claim_id is not None:
        changes["claim_id"] = claim_id
    return [evolve(ln, **changes) for ln in lines]


def released(history: History) -> History:
    """Only the cross-claim state of `history` (what the other claims established): the
    caller read it without what the claim itself established (the release)."""
    return History(paid_fingerprints=set(history.paid_fingerprints), drug_days=set(history.drug_days),
                   units_used=dict(history.units_used))


def dry_run(lines: Iterable[ClaimLine], ref: ReferenceData, history: History, books: Rulebooks,
            now: datetime, current: Sequence[AdjudicatedLine] = ()) -> list[AdjudicatedLine]:
    """The claim's lines decided again as a replacement would be: `history` is the member's
    state without what the claim established (its paid lines, units and drug days released),
    against the current rules and reference data, a reviewer's decision among `current` kept
    (`keep_reviews`). Nothing is stored; the records keep the claim's own id."""
    return keep_reviews(current, decide(lines, ref, history, books, now).decisions)


def keep_reviews(current: Sequence[AdjudicatedLine], after: Sequence[AdjudicatedLine]) -> list[AdjudicatedLine]:
    """`after` with each line a reviewer decided (its record in `current` carries `review`)
    that the rules pend again replaced by the reviewer's record: the rules send the line to a
    person, and a person decided it, so a re-decision that merely pends it again changes
    nothing and undoes no review (it still differs when the rules pay or deny it)."""
    reviewed = {d.line_number: d for d in current if d.review is not None}
    return [reviewed.get(d.line_number, d) if d.status == "PENDED" else d for d in after]


def decide(lines: Iterable[ClaimLine], ref: ReferenceData, history: History, books: Rulebooks,
           now: datetime, claim_id: str | None = None) -> Outcome:
    return engine.decide(as_new(lines, claim_id), ref, released(history), books, now)


def comparable(d: AdjudicatedLine) -> tuple[str, Decimal, frozenset[str]]:
    """What decides whether a line changed: status, allowed amount, set of CARCs."""
    return (d.status, d.allowed_amount, frozenset(a.carc for a in d.adjustments))


def changed_lines(current: Sequence[AdjudicatedLine], after: Sequence[AdjudicatedLine]) -> list[ProposalLine]:
    """The lines whose dry-run decision differs from their current record."""
    now = {d.line_number: d for d in after}
    out = []
    for before in sorted(current, key=lambda d: d.line_number):
        new = now.get(before.line_number)
        if new is not None and comparable(new) != comparable(before):
            out.append(build(ProposalLine, line_number=before.line_number, before=before, after=new))
    return out


def propose(claim_id: str, current: Sequence[AdjudicatedLine], after: Sequence[AdjudicatedLine],
            trigger: ProposalTrigger, pid: str, now: datetime) -> ReprocessProposal | None:
    """The proposal for a claim whose dry run (`after`) differs from its current records,
    or None when nothing would change (an open proposal is then withdrawn)."""
    lines = changed_lines(current, after)
    if not lines:
        return None
    return build(ReprocessProposal, proposal_id=pid, claim_id=claim_id, status="OPEN", trigger=trigger,
                 created_at=now, lines=lines,
                 allowed_before=sum((d.allowed_amount for d in current), ZERO),
                 allowed_after=sum((d.allowed_amount for d in after), ZERO),
                 adjustment_claim_id=None, decided_by=None, decided_at=None, note=None)


def same_result(proposal: ReprocessProposal, current: Sequence[AdjudicatedLine],
                after: Sequence[AdjudicatedLine]) -> bool:
    """Whether deciding the claim now gives what the proposal showed (the state has not
    moved on): the same lines differ, each the same way."""
    lines = changed_lines(current, after)
    return ([(p.line_number, comparable(p.after)) for p in proposal.lines]
            == [(p.line_number, comparable(p.after)) for p in lines])


def only_raises(proposal: ReprocessProposal) -> bool:
    """No line's allowed amount falls and no PAID line becomes DENIED."""
    return all(p.after.allowed_amount >= p.before.allowed_amount
               and not (p.before.status == "PAID" and p.after.status == "DENIED") for p in proposal.lines)


def auto_approves(proposal: ReprocessProposal, books: Rulebooks) -> bool:
    """The rulebook's `[reprocess] auto_approve_increases` (of the version the claim's
    adjusted lines are decided under) for a proposal that only raises what is owed."""
    version = proposal.lines[0].after.policy_version
    return books.get(version).reprocess.auto_approve_increases and only_raises(proposal)


def decided(proposal: ReprocessProposal, status: str, by: str, at: datetime, note: str | None = None,
            adjustment_claim_id: str | None = None) -> ReprocessProposal:
    return evolve(proposal, status=status, decided_by=by, decided_at=at, note=note,
                  adjustment_claim_id=adjustment_claim_id)


# --- the adjustment ------------------------------------------------------------------------------


@dataclass(slots=True)
class Adjustment:
    """An approved proposal made real: the reversal of the claim's current version and the
    adjusted claim's decisions, with what the ledger records for them (`outcome`)."""

    claim_id: str  # the minted id
    adjusts: str  # the submitted claim it descends from
    reverses: str  # the version reversed (the claim the proposal is for)
    reversals: list[AdjudicatedLine]
    outcome: Outcome  # the adjusted claim's decisions and what they establish


def adjust(lines: Iterable[ClaimLine], current: Sequence[AdjudicatedLine], minted: str, pid: str,
           ref: ReferenceData, history: History, books: Rulebooks, now: datetime) -> Adjustment:
    """The adjustment of the claim whose current records are `current` into `minted`:
    every current line REVERSED (`reversed_by` = `minted`, amounts negated), and the
    claim's lines decided as `minted` against `history` (the release already made), each
    record carrying `adjusts` and `proposal_id`."""
    reverses = current[0].claim_id
    root = root_of(reverses)
    outcome = decide(lines, ref, history, books, now, claim_id=minted)
    _carry_reviews(outcome, current, minted, now)
    mark = {"adjusts": root, "proposal_id": pid}
    outcome.decisions = [evolve(d, **mark) for d in outcome.decisions]
    outcome.new_decisions = [evolve(d, **mark) for d in outcome.new_decisions]
    reversals = [corrections.reversal(d, minted, now) for d in sorted(current, key=lambda d: d.line_number)]
    outcome.reversals = reversals
    outcome.reverses = reverses
    return Adjustment(claim_id=minted, adjusts=root, reverses=reverses, reversals=reversals, outcome=outcome)


def _carry_reviews(outcome: Outcome, current: Sequence[AdjudicatedLine], minted: str, now: datetime) -> None:
    """The adjusted claim keeps a reviewer's decision the rules would pend again (`keep_reviews`,
    as the dry run did), under its own id; a denied line holds no units or duplicate
    fingerprint (as after the review), a paid one keeps what its pend held."""
    kept = {d.line_number: evolve(d, claim_id=minted, adjudicated_at=now)
            for d in keep_reviews(current, outcome.decisions) if d.review is not None}
    if not kept:
        return
    outcome.decisions = [kept.get(d.line_number, d) for d in outcome.decisions]
    outcome.new_decisions = [kept.get(d.line_number, d) for d in outcome.new_decisions]
    denied = {n for n, d in kept.items() if d.status == "DENIED"}
    outcome.paid = [p for p in outcome.paid if p[1] not in denied]
    outcome.units = [u for u in outcome.units if u[1] not in denied]
