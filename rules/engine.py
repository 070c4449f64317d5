"""The decision engine: POLICY.md sections 2-7 as pure functions over one claim.

The streaming stages and batch mode run the same four steps, so they agree line for line:

    start    the claim's lines, sorted by line number, under the policy version in effect
    enrich   eligibility, prior authorization, drug data        (sections 2, 3, 4)
    price    AWP or fee schedule under the provider's contract   (section 6)
    finalize claim-day edits, duplicates, authorized units      (sections 5, 7)
             against the member's history, producing decisions and the state to record;
             a line the rules would pay is pended when the rulebook's `[review]` says so
             (POLICY.md *Manual review*, rules/review.py)
             (for a replacement or void: first the check of the original and its
             reversals, rules/corrections.py)

Nothing here does I/O; `finalize` gets the cross-claim state as a `History` snapshot and
returns the changes for the ledger to commit in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import cache
from operator import attrgetter

from rules import corrections, review
from rules.corrections import OriginalClaim
from rules.ndc import normalize_ndc
from rules.reference import ReferenceData
from rules.rulebook import Rulebook, Rulebooks
from contract.models import (
    AdjudicatedLine,
    Authorization,
    ClaimLine,
    ClaimWork,
    Finding,
    LineWork,
    Pricing,
    RejectionReason,
    build,
    evolve,
)

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)
#: digits kept while pricing, so no intermediate result is rounded (the default context keeps 28)
PRICE_PRECISION = 200
#: the pricing context, made once (entering `localcontext` per line cost ~1 us)
_EXACT = Context(prec=PRICE_PRECISION)


@cache
def _denial(rule: str) -> Finding:
    """The finding of a rule without detail: one shared frozen instance per rule."""
    return build(Finding, rule=rule, detail="")


def _finding(rule: str, detail: str) -> Finding:
    """A finding with detail, built without validation (the engine wrote both strings)."""
    return build(Finding, rule=rule, detail=detail)


@dataclass(slots=True)
class History:
    """The member's cross-claim state as the ledger holds it when the claim is decided."""

    decided: dict[int, AdjudicatedLine] = field(default_factory=dict)  # this claim's decisions, by line
    reversed: dict[int, AdjudicatedLine] = field(default_factory=dict)  # their reversals, once it was corrected
    paid_fingerprints: set[str] = field(default_factory=set)
    drug_days: set[date] = field(default_factory=set)
    units_used: dict[str, Decimal] = field(default_factory=dict)  # by authorization number
    #: for a replacement or void: the claim it names (None: unknown). The state above then
    #: already leaves out what that claim established (the release), which matters only
    #: when the correction passes its check.
    original: OriginalClaim | None = None
    caused: list[AdjudicatedLine] = field(default_factory=list)  # reversals this claim made earlier


@dataclass(slots=True)
class Outcome:
    """The claim's decisions and what the ledger must record with them."""

    decisions: list[AdjudicatedLine]
    new_decisions: list[AdjudicatedLine] = field(default_factory=list)
    paid: list[tuple[str, int, str]] = field(default_factory=list)  # (fingerprint, line, member)
    units: list[tuple[str, int, Decimal]] = field(default_factory=list)  # (auth, line, units)
    drug_days: set[date] = field(default_factory=set)
    #: a replacement or void that fails its check: every line is rejected with this
    rejection: RejectionReason | None = None
    #: the REVERSED records of the original (new ones when `reverses` is set, else the
    #: stored ones again), published before the claim's own decisions
    reversals: list[AdjudicatedLine] = field(default_factory=list)
    reverses: str | None = None  # the claim this outcome reverses and releases

    @property
    def changes_state(self) -> bool:
        return bool(self.new_decisions) or self.rejection is not None


# --- start -------------------------------------------------------------------------------


def start(lines: Iterable[ClaimLine], books: Rulebooks, submitted_at: datetime) -> ClaimWork:
    """A claim ready for the stages, under the version in effect on its first date of service."""
    ordered = sorted(lines, key=attrgetter("line_number"))
    first = ordered[0]
    book = books.for_date(min([ln.service_date for ln in ordered]))
    return build(ClaimWork,
        claim_id=first.claim_id,
        member_id=first.member_id,
        policy_version=book.version,
        submitted_at=submitted_at,
        lines=tuple([build(LineWork, line=ln, ndc11=None, findings=(), pricing=None, priced_amount=None,
                           price_finding=None, approved_units=None, package_type=None) for ln in ordered]),
    )


# --- enrich: sections 2, 3, 4 -----------------------------------------------------------------


def enrich(work: ClaimWork, ref: ReferenceData, books: Rulebooks) -> ClaimWork:
    """Eligibility, prior authorization and drug data for every line."""
    book = books.get(work.policy_version)
    return evolve(work, lines=tuple([_enrich_line(lw, ref, book) for lw in work.lines]))


def _enrich_line(lw: LineWork, ref: ReferenceData, book: Rulebook) -> LineWork:
    line = lw.line
    auth = ref.authorizations.get(line.authorization_number) if line.authorization_number else None
    findings = [f for f in (_eligibility(line, ref, book), _authorization(line, auth)) if f]
    ndc11, drug_finding, package_type = _drug_data(line, ref, book)
    if drug_finding:
        findings.append(drug_finding)
    return evolve(lw, ndc11=ndc11, findings=tuple(findings),
                  approved_units=auth.approved_units if auth else None, package_type=package_type)


def _eligibility(line: ClaimLine, ref: ReferenceData, book: Rulebook) -> Finding | None:
    member = ref.members.get(line.member_id)
    if member is None:
        return _denial("ELIG-MEMBER-UNKNOWN")
    day = line.service_date
    if day < member.eligible_from or (member.eligible_to is not None and day > member.eligible_to):
        return _denial("ELIG-NOT-ELIGIBLE")
    if member.plan == book.restricted_plan and not (
        line.procedure_code in book.nutrition and book.has_mandated_condition(line.diagnosis_codes)
    ):
        return _denial("ELIG-MASSHEALTH-NOT-COVERED")
    return None


def _authorization(line: ClaimLine, auth: Authorization | None) -> Finding | None:
    """`auth`: the authorization the line names, looked up once by the caller."""
    if not line.authorization_number:
        return _denial("AUTH-MISSING")
    if auth is None:
        return _denial("AUTH-NOT-FOUND")
    if auth.status != "APPROVED":
        return _finding("AUTH-NOT-APPROVED", f"Status is {auth.status}.")
    if auth.member_id != line.member_id:
        return _denial("AUTH-OTHER-MEMBER")
    if line.procedure_code not in auth.procedure_codes:
        return _denial("AUTH-CODE-NOT-COVERED")
    if not auth.start_date <= line.service_date <= auth.end_date:
        return _denial("AUTH-DATE-OUTSIDE")
    return None


def _drug_data(line: ClaimLine, ref: ReferenceData, book: Rulebook) -> tuple[str | None, Finding | None, str | None]:
    """(ndc11, the first drug-data denial, the drug's package type)."""
    drug = line.drug
    ndc11 = normalize_ndc(drug.ndc) if drug else None
    if drug is None:
        if line.procedure_code in book.ndc_required:
            return None, _finding("DRUG-NDC-MISSING", "The line has no drug details."), None
        return None, None, None
    if not drug.ndc:
        return None, _denial("DRUG-NDC-MISSING"), None
    if ndc11 is None:
        return None, _denial("DRUG-NDC-MALFORMED"), None
    catalog = ref.drugs.get(ndc11)
    if catalog is None:
        return ndc11, _denial("DRUG-NDC-UNKNOWN"), None
    if not (drug.quantity and drug.unit and drug.dosage and drug.frequency):
        missing = [n for n in ("quantity", "unit", "dosage", "frequency") if not getattr(drug, n)]
        return ndc11, _finding("DRUG-DETAILS-INCOMPLETE", f"Missing: {', '.join(missing)}."), catalog.package_type
    if drug.unit != catalog.billing_unit:
        detail = f"Billed in {drug.unit}; the drug bills in {catalog.billing_unit}."
        return ndc11, _finding("DRUG-UNIT-MISMATCH", detail), catalog.package_type
    return ndc11, None, catalog.package_type


# --- price: section 6 ---------------------------------------------------------------------


def price(work: ClaimWork, ref: ReferenceData) -> ClaimWork:
    """Price the lines still payable; the rest are not priced (pricing is for payable lines)."""
    return evolve(work, lines=tuple([_price_line(lw, ref) if not lw.findings else lw for lw in work.lines]))


def _price_line(lw: LineWork, ref: ReferenceData) -> LineWork:
    line = lw.line
    contract = ref.contracts.get(line.provider_npi)
    if line.drug is not None:
        awp = ref.awp_on(lw.ndc11 or "", line.service_date)
        if awp is None:
            return evolve(lw, price_finding=_denial("PRICE-NO-AWP"))
        pct = HUNDRED - (contract.awp_discount_pct if contract else Decimal(0))
        pricing = build(Pricing, method="AWP", unit_price=awp.awp_per_unit, quantity=line.drug.quantity,
                          effective_from=awp.effective_from, contract_pct=pct)
    else:
        fee = ref.fee_on(line.procedure_code, line.service_date)
        if fee is None:
            return evolve(lw, price_finding=_denial("PRICE-NO-FEE"))
        pct = contract.fee_schedule_pct if contract else HUNDRED
        pricing = build(Pricing, method="FEE_SCHEDULE", unit_price=fee.rate, quantity=line.units,
                          effective_from=fee.effective_from, contract_pct=pct)
    # exact: the only rounding is half-up to cents, once
    amount = _EXACT.divide(_EXACT.multiply(_EXACT.multiply(pricing.unit_price, pricing.quantity), pricing.contract_pct), HUNDRED)
    return evolve(lw, pricing=pricing, priced_amount=amount)


# --- finalize: sections 5 and 7 -----------------------------------------------------------------


def finalize(work: ClaimWork, history: History, books: Rulebooks, now: datetime) -> Outcome:
    """Decide every line against the member's history. Lines already decided keep their
    stored decision (only `adjudicated_at` changes), followed by its reversal once the claim
    was replaced or voided, and change no state.

    A replacement or void first checks the claim it names (`history.original`): failing,
    the outcome is only the rejection; passing, it carries the original's reversals, and
    the lines are decided against `history`, which the ledger read without what the
    original established (the release). A void's lines are VOIDED and establish nothing."""
    book = books.get(work.policy_version)
    head = work.lines[0].line
    outcome = Outcome(decisions=[])
    if head.is_correction:
        if history.decided:  # decided before: the reversals it made, again
            outcome.reversals = [evolve(r, adjudicated_at=now) for r in history.caused]
        else:
            problem = corrections.check(head, history.original)
            if problem is not None:
                outcome.rejection = problem
                return outcome
            outcome.reverses = head.original_claim_id
            outcome.reversals = [corrections.reversal(d, head.claim_id, now) for d in history.original.decisions]
    void = corrections.is_void(head)
    day_findings = {} if void else claim_day_edits(work, history, book)
    paid = set(history.paid_fingerprints)
    used = dict(history.units_used)
    for lw in work.lines:
        line = lw.line
        stored = history.decided.get(line.line_number)
        if stored is not None:
            # the claim again (a crash before its records were published): its decision,
            # and its reversal if it was corrected since, so neither record is ever lost
            outcome.decisions += [evolve(r, adjudicated_at=now)
                                  for r in (stored, history.reversed.get(line.line_number)) if r is not None]
            continue
        if void:  # establishes nothing: no paid line, no units, no drug day
            decision = _record(lw, "VOIDED", ZERO, [], None, work.policy_version, now)  # the reversal is its effect
            outcome.decisions.append(decision)
            outcome.new_decisions.append(decision)
            continue
        denials = [*lw.findings, *day_findings.get(line.line_number, ())]
        fingerprint = line_fingerprint(lw)
        if fingerprint in paid:
            denials.append(_denial("EDIT-DUPLICATE"))
        if not denials and lw.price_finding:
            denials.append(lw.price_finding)
        auth = line.authorization_number or ""
        if not denials and lw.approved_units is not None and used.get(auth, ZERO) + line.units > lw.approved_units:
            left = lw.approved_units - used.get(auth, ZERO)
            denials.append(_finding("AUTH-UNITS-EXHAUSTED", f"{left} of {lw.approved_units} units left."))
        decision = _decision(lw, denials, book, work.policy_version, now)
        if decision.status == "PAID" and (reason := book.pend_reason(line.procedure_code, decision.allowed_amount)):
            decision = review.pended(decision, reason, book, now)
        if decision.status != "DENIED":  # PAID, or PENDED: in process, it holds what a paid line would
            paid.add(fingerprint)
            outcome.paid.append((fingerprint, line.line_number, line.member_id))
            if lw.approved_units is not None:
                used[auth] = used.get(auth, ZERO) + line.units
                outcome.units.append((auth, line.line_number, line.units))
        if is_drug_line(line, book) and book.mod.wastage not in line.modifiers:
            outcome.drug_days.add(line.service_date)
        outcome.decisions.append(decision)
        outcome.new_decisions.append(decision)
    return outcome


def _decision(lw: LineWork, denials: list[Finding], book: Rulebook, version: str, now: datetime) -> AdjudicatedLine:
    line = lw.line
    charge = line.charge_amount
    if denials:
        whole = charge.quantize(CENT, rounding=ROUND_HALF_UP)  # amounts travel with two places
        adjustments = [
            book.adjustment(f.rule, whole if i == 0 else ZERO, f.detail) for i, f in enumerate(denials)
        ]
        status, allowed, pricing = "DENIED", ZERO, None
    else:
        allowed = min(lw.priced_amount, charge).quantize(CENT, rounding=ROUND_HALF_UP)
        reduction = (charge - allowed).quantize(CENT, rounding=ROUND_HALF_UP)
        adjustments = [book.adjustment("PRICE-CONTRACT-REDUCTION", reduction)] if reduction > 0 else []
        status, pricing = "PAID", lw.pricing
    return _record(lw, status, allowed, adjustments, pricing, version, now)


def _record(lw: LineWork, status: str, allowed: Decimal, adjustments: list, pricing: Pricing | None,
            version: str, now: datetime) -> AdjudicatedLine:
    """A line's decision record: the line's own fields echoed, and the outcome."""
    line = lw.line
    return build(AdjudicatedLine,
        claim_id=line.claim_id,
        line_number=line.line_number,
        member_id=line.member_id,
        provider_npi=line.provider_npi,
        procedure_code=line.procedure_code,
        modifiers=line.modifiers,
        service_date=line.service_date,
        ndc11=lw.ndc11,
        status=status,
        allowed_amount=allowed,
        adjustments=adjustments,
        pricing=pricing,
        policy_version=version,
        adjudicated_at=now,
        reversed_by=None,
        pend=None,
        review=None,
        adjusts=None,
        proposal_id=None,
    )


def is_drug_line(line: ClaimLine, book: Rulebook) -> bool:
    return line.drug is not None or line.procedure_code in book.drug_codes


def line_fingerprint(lw: LineWork) -> str:
    """What makes two lines exact duplicates: member, provider, date, code, modifier set, NDC."""
    line = lw.line
    ndc = lw.ndc11 or (line.drug.ndc if line.drug and line.drug.ndc else "")
    mods = ",".join(sorted(set(line.modifiers)))
    day = line.service_date.isoformat()  # str(date) is the same text, through a slower format call
    return f"{line.member_id}|{line.provider_npi}|{day}|{line.procedure_code}|{mods}|{ndc}"


# --- section 5: edits over the lines of one date -------------------------------------------------


def claim_day_edits(work: ClaimWork, history: History, book: Rulebook) -> dict[int, list[Finding]]:
    """Per-line findings of the claim-day edits, keyed by line number."""
    found: dict[int, list[Finding]] = defaultdict(list)
    by_day: dict[date, list[LineWork]] = defaultdict(list)
    for lw in work.lines:
        by_day[lw.line.service_date].append(lw)
    form = work.lines[0].line.form
    for day, lines in by_day.items():
        _per_diem(day, lines, history, book, found)
        _nursing(lines, book, found)
        _concurrency(lines, book, found)
        if form in book.multi_ndc_forms:
            _multi_ndc(lines, book, found)
        _wastage(lines, book, found)
        if book.no_wastage_edit:
            _no_wastage(lines, book, found)
    return found


def _per_diem(day: date, lines: list[LineWork], history: History, book: Rulebook, found) -> None:
    per_diem = [lw.line for lw in lines if lw.line.procedure_code in book.per_diem]
    if not per_diem:  # most dates: no drug test needed
        return
    jw = book.mod.wastage
    has_drug = day in history.drug_days or any(
        is_drug_line(lw.line, book) and jw not in lw.line.modifiers for lw in lines
    )
    for line in per_diem:
        if not has_drug:
            found[line.line_number].append(_denial("EDIT-PER-DIEM-NO-DRUG"))
        if line.units != 1:
            found[line.line_number].append(_finding("EDIT-PER-DIEM-UNITS", f"Billed {line.units} units."))


def _nursing(lines: list[LineWork], book: Rulebook, found) -> None:
    additional = [lw.line for lw in lines if lw.line.procedure_code in book.nursing_additional]
    if not additional or any(lw.line.procedure_code in book.nursing_first for lw in lines):
        return
    for line in additional:
        found[line.line_number].append(_denial("EDIT-NURSING-ADDITIONAL-HOUR"))


def _concurrency(lines: list[LineWork], book: Rulebook, found) -> None:
    """SH/SJ over the therapy per diem lines of one date, in line-number order."""
    sh, sj = book.mod.concurrency_second, book.mod.concurrency_third_or_more
    therapy = [lw.line for lw in lines if lw.line.procedure_code in book.therapy_per_diem]
    if not therapy:
        return

    def wrong(line: ClaimLine, why: str) -> None:
        found[line.line_number].append(_finding("EDIT-CONCURRENCY-WRONG", why))

    if len(therapy) == 1:
        if sh in therapy[0].modifiers or sj in therapy[0].modifiers:
            wrong(therapy[0], "A single therapy per diem carries neither SH nor SJ.")
        return
    # The first line with neither modifier is the primary; every other line is judged on its
    # own modifiers. With no primary, the first line is wrong (it should have been billed
    # without SH/SJ) and any SH on it still makes it the first SH line, so a later SH is
    # "further" and an SJ is right. A line carrying both SH and SJ is wrong and does not
    # count as the SH line.
    primary = next((ln for ln in therapy if sh not in ln.modifiers and sj not in ln.modifiers), None)
    others = [ln for ln in therapy if ln is not primary]
    second = next((ln for ln in others if sh in ln.modifiers and sj not in ln.modifiers), None)
    for ln in others:
        has_sh, has_sj = sh in ln.modifiers, sj in ln.modifiers
        if primary is None and ln is therapy[0]:
            wrong(ln, "No concurrent therapy is billed as the primary (without SH/SJ).")
        elif not has_sh and not has_sj:
            found[ln.line_number].append(_denial("EDIT-CONCURRENCY-MISSING"))
        elif has_sh and has_sj:
            wrong(ln, "Carries both SH and SJ.")
        elif has_sh and ln is not second:
            wrong(ln, "Only one line is the second therapy (SH); bill further ones with SJ.")
        elif has_sj and second is None:
            wrong(ln, "SJ needs a second therapy billed with SH.")


def _multi_ndc(lines: list[LineWork], book: Rulebook, found) -> None:
    """KP on the first line of a multiple-NDC formulation, KQ on the others; nowhere else."""
    kp, kq, jw = book.mod.multi_ndc_first, book.mod.multi_ndc_subsequent, book.mod.wastage
    groups: dict[str, list[LineWork]] = defaultdict(list)
    for lw in lines:
        if is_drug_line(lw.line, book) and jw not in lw.line.modifiers:
            groups[lw.line.procedure_code].append(lw)
    in_formulation: set[int] = set()
    for members in groups.values():
        ndcs = {lw.ndc11 or (lw.line.drug.ndc if lw.line.drug else None) for lw in members} - {None}
        if len(ndcs) < 2:
            continue
        for i, lw in enumerate(members):
            in_formulation.add(lw.line.line_number)
            expected, other = (kp, kq) if i == 0 else (kq, kp)
            mods = lw.line.modifiers
            if other in mods:
                found[lw.line.line_number].append(_finding("EDIT-MULTI-NDC-WRONG", f"Expected {expected}, found {other}."))
            elif expected not in mods:
                found[lw.line.line_number].append(_finding("EDIT-MULTI-NDC-MISSING", f"Expected {expected}."))
    for lw in lines:
        if lw.line.line_number not in in_formulation and (kp in lw.line.modifiers or kq in lw.line.modifiers):
            found[lw.line.line_number].append(
                _finding("EDIT-MULTI-NDC-WRONG", "KP/KQ on a line outside a multiple-NDC formulation.")
            )


def _wastage(lines: list[LineWork], book: Rulebook, found) -> None:
    jw = book.mod.wastage
    wasted = [lw for lw in lines if jw in lw.line.modifiers]
    if not wasted:  # most dates: nothing to check
        return
    administered = {
        (lw.line.procedure_code, lw.ndc11)
        for lw in lines
        if jw not in lw.line.modifiers and lw.ndc11 and lw.line.drug and (lw.line.drug.quantity or 0) > 0
    }
    for lw in wasted:
        if (lw.line.procedure_code, lw.ndc11) not in administered or lw.ndc11 is None:
            found[lw.line.line_number].append(_denial("EDIT-WASTAGE-NO-ADMINISTERED"))
        if lw.package_type == "MULTI_USE":
            found[lw.line.line_number].append(_denial("EDIT-WASTAGE-MULTI-USE"))


def _no_wastage(lines: list[LineWork], book: Rulebook, found) -> None:
    """JZ (no drug wasted) on the administered lines of single-use drugs, where a version
    switches the edit on. Lines without a catalog drug are not checked: their NDC is already
    denied (or they bill no drug)."""
    jz, jw = book.mod.no_wastage, book.mod.wastage
    wasted = {lw.ndc11 for lw in lines if jw in lw.line.modifiers and lw.ndc11}
    for lw in lines:
        if lw.package_type is None:
            continue
        mods, number = lw.line.modifiers, lw.line.line_number
        if jw in mods or lw.package_type != "SINGLE_USE":
            if jz in mods:
                why = "JZ on a wastage (JW) line." if jw in mods else "JZ on a multi-use drug."
                found[number].append(_finding("EDIT-JZ-WRONG", why))
        elif lw.ndc11 in wasted:
            if jz in mods:
                found[number].append(_finding("EDIT-JZ-WRONG", "JZ while wastage (JW) is billed for this drug and date."))
        elif jz not in mods:
            found[number].append(_denial("EDIT-JZ-MISSING"))


# --- the whole engine, for batch mode and tests --------------------------------------------------


def decide(
    lines: Iterable[ClaimLine],
    ref: ReferenceData,
    history: History,
    books: Rulebooks,
    now: datetime,
    submitted_at: datetime | None = None,
) -> Outcome:
    """All four steps on one claim."""
    work = start(lines, books, submitted_at or now)
    return finalize(price(enrich(work, ref, books), ref), history, books, now)
