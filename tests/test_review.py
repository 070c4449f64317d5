"""Manual review in the engine and the ledger, on SQLite and PostgreSQL (POLICY.md and
CONTRACT.md *Pended lines and manual review*): what pends and why, what a pended line holds
(units, the duplicate fingerprint, per diem support), a reviewer's PAY and DENY, every
refusal (404, 403, 422, 409), idempotent repeats, re-delivery, and corrections of a claim
with pended lines."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from rules import engine, review
from rules.reference import ReferenceData
from rules.rulebook import default_rulebooks
from streams.ledger.store import Ledger
from contract.models import AdjudicatedLine, Authorization, ClaimLine
from streams.pipeline.batch import load_reference_dir
from streams.ledger.review import ReviewConflict, ReviewForbidden, ReviewNotFound
from tests.ledger_harness import SAMPLE, T0, accept, line

BOOKS = default_rulebooks()
MEMBER, AUTH, LIMITED, NPI = "M1003", "PA26-1003", "PA-REVIEW-LIMITED", "1245678903"
FACTOR = {"ndc": "68516-4601-02", "quantity": "9000", "unit": "F2", "dosage": "9000 IU", "frequency": "once"}


def reference() -> ReferenceData:
    """The sample reference data plus two authorizations of M1003 that cover the reviewed
    NOC codes: one without a unit limit, one with 10 units."""
    ref = load_reference_dir(SAMPLE / "reference")
    for number, units in ((AUTH + "-NOC", None), (LIMITED, Decimal("10"))):
        ref.apply("authorizations", number, Authorization(
            authorization_number=number, member_id=MEMBER, status="APPROVED",
            procedure_codes=["J7192", "J9999", "J3590", "J3490", "S9542", "S9345"],
            start_date="2026-01-01", end_date="2026-12-31", approved_units=units))
    return ref


REF = reference()


def factor(claim_id: str, number: int = 1, count: int = 1, charge: str = "12000.00", **kw: Any) -> dict[str, Any]:
    """Factor VIII, 9000 IU at AWP 1.635 less 15 %: 12,507.75 priced, allowed the 12,000.00 charged (HIGH_DOLLAR)."""
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": AUTH, "procedure_code": "J7192",
                                            "units": "9", "charge_amount": charge, "drug": FACTOR,
                                            "service_date": "2026-02-10", **kw})


def noc(claim_id: str, number: int = 1, count: int = 1, units: str = "4", **kw: Any) -> dict[str, Any]:
    """J9999 (not otherwise classified) priced by its NDC: 100 IU -> 138.98 (NOC_REVIEW)."""
    drug = {**FACTOR, "quantity": "100", "dosage": "100 IU"}
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": LIMITED, "procedure_code": "J9999",
                                            "units": units, "charge_amount": "500.00", "drug": drug,
                                            "service_date": "2026-02-10", **kw})


def decide_lines(ledger: Ledger, objs: list[dict[str, Any]], now=T0) -> list[AdjudicatedLine]:
    """Accept the lines; decide the claims they complete; every decision published, in order."""
    out: list[AdjudicatedLine] = []
    for i, obj in enumerate(objs):
        intake = accept(ledger, obj, float(i))
        out += intake.decisions
        if intake.assembled:
            work = engine.price(engine.enrich(engine.start(intake.assembled, BOOKS, now), REF, BOOKS), REF)
            decided = ledger.decide(work, lambda history: engine.finalize(work, history, BOOKS, now))
            out += decided.decisions if decided else []
    return out


def decide_review(ledger: Ledger, claim_id: str, number: int, body: dict[str, Any], reviewer: str = "pat",
                  queues: list[str] | None = None, seconds: int = 60) -> review_store_result:
    return ledger.review(claim_id, number, body, reviewer, queues, BOOKS, T0 + timedelta(seconds=seconds))


review_store_result = Any


def units_in_use(ledger: Ledger, auth: str = LIMITED) -> Decimal:
    return sum((u for _, _, u in ledger.units_used(auth)), Decimal(0))


# --- what pends ------------------------------------------------------------------------------


def test_a_high_dollar_line_is_pended_with_what_the_rules_would_allow(store):
    [d] = decide_lines(store.ledger, [factor("R-HD")])
    assert d.status == "PENDED" and d.allowed_amount == Decimal("0.00") and d.adjustments == []
    assert d.pricing is not None and d.pricing.method == "AWP" and d.review is None
    assert (d.pend.reason, d.pend.queue, d.pend.rule) == ("HIGH_DOLLAR", "PAYMENT_INTEGRITY", "REVIEW-HIGH-DOLLAR")
    assert d.pend.suggested_amount == Decimal("12000.00") and d.pend.pended_at == T0
    assert "[policy section Manual review]" in d.pend.message and d.policy_version == BOOKS.books[0].version


def test_the_threshold_is_inclusive_and_one_cent_below_pays():
    book = BOOKS.books[0]
    assert book.pend_reason("J7192", Decimal("10000.00")).reason == "HIGH_DOLLAR"
    assert book.pend_reason("J7192", Decimal("9999.99")) is None
    assert book.pend_reason("J3490", Decimal("50.00")) is None  # the plan prices J3490 by NDC, unreviewed
    assert book.pend_reason("J9999", Decimal("10000.00")).reason == "HIGH_DOLLAR"  # both apply: the table's first


def test_a_noc_line_is_pended_in_the_clinical_queue(store):
    [d] = decide_lines(store.ledger, [noc("R-NOC")])
    assert d.status == "PENDED" and (d.pend.reason, d.pend.queue, d.pend.rule) == ("NOC_REVIEW", "CLINICAL", "REVIEW-NOC")
    assert d.pend.suggested_amount == Decimal("138.98")


def test_a_denial_always_wins_over_a_pend(store):
    # no authorization: denied 197, never pended, even at 12,000.00
    [d] = decide_lines(store.ledger, [factor("R-DENY", authorization_number=None)])
    assert d.status == "DENIED" and d.pend is None and [a.carc for a in d.adjustments] == ["197"]
    assert store.ledger.open_pends() == []


# --- what a pended line holds ------------------------------------------------------------------


def test_a_pended_line_holds_its_units_and_a_denial_releases_them(store):
    ledger = store.ledger
    [first] = decide_lines(ledger, [noc("R-U1", units="8")])
    assert first.status == "PENDED" and units_in_use(ledger) == Decimal("8")
    [second] = decide_lines(ledger, [noc("R-U2", units="4", service_date="2026-02-11")])
    assert second.status == "DENIED" and [a.carc for a in second.adjustments] == ["198"]  # 8 held + 4 > 10
    decide_review(ledger, "R-U1", 1, {"action": "DENY", "carc": "50"}, queues=["CLINICAL"])
    assert units_in_use(ledger) == Decimal("0")
    [third] = decide_lines(ledger, [noc("R-U3", units="4", service_date="2026-02-12")])
    assert third.status == "PENDED" and units_in_use(ledger) == Decimal("4")


def test_a_paid_review_keeps_the_units(store):
    ledger = store.ledger
    decide_lines(ledger, [noc("R-K1", units="8")])
    reviewed = decide_review(ledger, "R-K1", 1, {"action": "PAY"})
    assert reviewed.record.status == "PAID" and units_in_use(ledger) == Decimal("8")
    [later] = decide_lines(ledger, [noc("R-K2", units="4", service_date="2026-02-11")])
    assert later.status == "DENIED" and [a.carc for a in later.adjustments] == ["198"]


def test_a_pended_line_counts_as_paid_for_duplicates_until_denied(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("R-D1")])
    [dup] = decide_lines(ledger, [factor("R-D2")])
    assert dup.status == "DENIED" and [a.carc for a in dup.adjustments] == ["18"]
    decide_review(ledger, "R-D1", 1, {"action": "DENY", "carc": "96", "rarc": ["N56"]})
    [again] = decide_lines(ledger, [factor("R-D3")])
    assert again.status == "PENDED"


def test_a_pended_drug_line_supports_per_diem(store):
    per_diem = line("R-PD", 2, 2, member_id=MEMBER, authorization_number=AUTH + "-NOC", procedure_code="S9345",
                    units="1", charge_amount="100.00", service_date="2026-02-10", drug=None)
    decided = decide_lines(store.ledger, [noc("R-PD", 1, 2, authorization_number=AUTH + "-NOC"), per_diem])
    assert [d.status for d in decided] == ["PENDED", "PAID"]


# --- a reviewer's decision ---------------------------------------------------------------------


def test_pay_at_the_suggested_amount_and_below_the_charge(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("R-P1", charge="15000.00")])  # allowed 12,507.75 of 15,000.00
    paid = decide_review(ledger, "R-P1", 1, {"action": "PAY", "note": "invoice checked"}).record
    assert paid.status == "PAID" and paid.allowed_amount == Decimal("12507.75") and paid.pend is None
    assert [(a.group, a.carc, a.rule, a.amount) for a in paid.adjustments] == [("CO", "45", "REVIEW-PRICED", Decimal("2492.25"))]
    assert (paid.review.action, paid.review.reviewer, paid.review.note) == ("PAY", "pat", "invoice checked")
    assert paid.review.decided_at == paid.adjudicated_at == T0 + timedelta(seconds=60)
    decide_lines(ledger, [factor("R-P2", service_date="2026-02-11")])
    priced = decide_review(ledger, "R-P2", 1, {"action": "PAY", "allowed_amount": "11000.5"}).record
    assert priced.allowed_amount == Decimal("11000.50")
    assert [(a.carc, a.amount) for a in priced.adjustments] == [("45", Decimal("999.50"))]


def test_pay_in_full_carries_no_adjustment(store):
    decide_lines(store.ledger, [factor("R-F1")])
    paid = decide_review(store.ledger, "R-F1", 1, {"action": "PAY", "allowed_amount": "12000.00"}).record
    assert paid.allowed_amount == Decimal("12000.00") and paid.adjustments == []


def test_deny_with_the_reviewers_carc_for_the_whole_charge(store):
    decide_lines(store.ledger, [factor("R-N1")])
    denied = decide_review(store.ledger, "R-N1", 1, {"action": "DENY", "carc": "50", "rarc": ["N115"]}).record
    assert denied.status == "DENIED" and denied.allowed_amount == Decimal("0.00") and denied.pricing is None
    assert [(a.group, a.carc, a.rarc, a.rule, a.amount) for a in denied.adjustments] == \
        [("CO", "50", ["N115"], "REVIEW-DENIED", Decimal("12000.00"))]


@pytest.mark.parametrize("body, field", [
    ({"action": "PAY", "allowed_amount": "12000.01"}, "allowed_amount"),
    ({"action": "PAY", "allowed_amount": "-1.00"}, "allowed_amount"),
    ({"action": "PAY", "allowed_amount": "10.001"}, "allowed_amount"),
    ({"action": "PAY", "allowed_amount": "ten"}, "allowed_amount"),
    ({"action": "DENY", "carc": "45"}, "carc"),
    ({"action": "DENY"}, "carc"),
    ({"action": "APPROVE"}, "action"),
    ({}, "action"),
    ({"action": "DENY", "carc": "50", "rarc": "N115"}, "rarc"),
])
def test_an_invalid_decision_names_the_field_and_stores_nothing(store, body, field):
    decide_lines(store.ledger, [factor("R-V")])
    with pytest.raises(review.InvalidDecision) as caught:
        decide_review(store.ledger, "R-V", 1, body)
    assert caught.value.field == field
    assert [p["claim_id"] for p in store.ledger.open_pends()] == ["R-V"]


def test_unknown_or_never_pended_lines_are_not_found(store):
    decide_lines(store.ledger, [line("R-NP", 1, 1)])  # a per diem line, decided by rules alone
    for claim_id, number in (("R-NP", 1), ("R-NP", 2), ("NO-SUCH", 1)):
        with pytest.raises(ReviewNotFound):
            decide_review(store.ledger, claim_id, number, {"action": "PAY"})


def test_a_reviewer_outside_the_queue_is_forbidden(store):
    decide_lines(store.ledger, [factor("R-Q")])
    with pytest.raises(ReviewForbidden):
        decide_review(store.ledger, "R-Q", 1, {"action": "PAY"}, queues=["CLINICAL"])
    assert decide_review(store.ledger, "R-Q", 1, {"action": "PAY"}, queues=["PAYMENT_INTEGRITY"]).record.status == "PAID"


def test_the_same_decision_again_is_idempotent_and_another_conflicts(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("R-I")])
    first = decide_review(ledger, "R-I", 1, {"action": "PAY"})
    again = decide_review(ledger, "R-I", 1, {"action": "PAY", "allowed_amount": "12000.00"}, seconds=120)
    assert first.stored_now and not again.stored_now and again.record == first.record
    with pytest.raises(ReviewConflict) as caught:
        decide_review(ledger, "R-I", 1, {"action": "DENY", "carc": "50"})
    assert caught.value.current == first.record
    with pytest.raises(ReviewConflict):
        decide_review(ledger, "R-I", 1, {"action": "PAY", "allowed_amount": "100.00"})
    assert [e["event"] for e in ledger.review_history("R-I", 1)] == ["PENDED", "DECIDED"]


def test_a_review_stores_the_final_record_history_and_outbox_together(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("R-O", 1, 2, authorization_number=AUTH + "-NOC"), noc("R-O", 2, 2, authorization_number=AUTH + "-NOC")])
    first = decide_review(ledger, "R-O", 1, {"action": "PAY"})
    assert first.claim_final is None  # line 2 still waits
    assert [r.line_number for r in ledger.decision_outbox()] == [1]
    second = decide_review(ledger, "R-O", 2, {"action": "DENY", "carc": "16", "note": "no invoice"})
    assert [d.status for d in second.claim_final] == ["PAID", "DENIED"]
    assert ledger.decision_outbox() == [first.record, second.record]
    ledger.decision_outbox_sent(ledger.decision_outbox())
    assert ledger.decision_outbox() == [] and ledger.open_pends() == []
    history = ledger.review_history("R-O", 2)
    assert [(e["event"], e["by"]) for e in history] == [("PENDED", "REVIEW-NOC"), ("DECIDED", "pat")]
    assert history[1]["note"] == "no invoice" and history[1]["carc"] == "16"


def test_redelivery_answers_the_latest_record(store):
    ledger = store.ledger
    [pended] = decide_lines(ledger, [factor("R-RD")])
    [again] = decide_lines(ledger, [factor("R-RD")])
    assert again.model_dump(exclude={"adjudicated_at"}) == pended.model_dump(exclude={"adjudicated_at"})
    final = decide_review(ledger, "R-RD", 1, {"action": "PAY"}).record
    [after] = decide_lines(ledger, [factor("R-RD")])
    assert after.model_dump(exclude={"adjudicated_at"}) == final.model_dump(exclude={"adjudicated_at"})
    assert store.reopen().decisions_for("R-RD") == [final]


def test_the_queue_lists_open_pends_oldest_first_with_filters(store):
    ledger = store.ledger
    decide_lines(ledger, [noc("R-L1")], now=T0)
    decide_lines(ledger, [factor("R-L2", 1, 2), line("R-L2", 2, 2, member_id=MEMBER, authorization_number=AUTH,
                                                       procedure_code="99601", units="1", charge_amount="100.00",
                                                       service_date="2026-02-10", drug=None)],
                 now=T0 - timedelta(hours=1))
    listed = ledger.open_pends()
    assert [(p["claim_id"], p["queue"]) for p in listed] == [("R-L2", "PAYMENT_INTEGRITY"), ("R-L1", "CLINICAL")]
    assert listed[0]["other_lines"] == [{"line_number": 2, "procedure_code": "99601", "status": "PAID", "allowed_amount": listed[0]["other_lines"][0]["allowed_amount"]}]
    assert listed[0]["charge_amount"] == "12000.00" and listed[0]["suggested_amount"] == "12000.00"
    assert [p["claim_id"] for p in ledger.open_pends(queue="CLINICAL")] == ["R-L1"]
    assert [p["claim_id"] for p in ledger.open_pends(reason="HIGH_DOLLAR")] == ["R-L2"]
    assert ledger.open_pends(queue="NONE") == [] and len(ledger.open_pends(limit=1)) == 1
    assert sorted(ledger.pend_stats()) == [("CLINICAL", "NOC_REVIEW", 1, T0.isoformat()),
                                           ("PAYMENT_INTEGRITY", "HIGH_DOLLAR", 1, (T0 - timedelta(hours=1)).isoformat())]


# --- corrections ------------------------------------------------------------------------------


def test_a_replacement_reverses_pended_lines_and_releases_their_holds(store):
    ledger = store.ledger
    decide_lines(ledger, [noc("R-C1", units="8")])
    assert units_in_use(ledger) == Decimal("8")
    replacement = noc("R-C1R", units="6", claim_frequency="7", original_claim_id="R-C1")
    reversal, decision = decide_lines(ledger, [replacement])
    assert (reversal.claim_id, reversal.status, reversal.allowed_amount, reversal.adjustments) == \
        ("R-C1", "REVERSED", Decimal("0.00"), [])
    assert reversal.pend is None and reversal.review is None and reversal.reversed_by == "R-C1R"
    assert decision.status == "PENDED" and units_in_use(ledger) == Decimal("6")
    assert [p["claim_id"] for p in ledger.open_pends()] == ["R-C1R"]
    with pytest.raises(ReviewConflict) as caught:
        decide_review(ledger, "R-C1", 1, {"action": "PAY"})
    assert caught.value.current.status == "REVERSED"
    assert [e["event"] for e in ledger.review_history("R-C1", 1)] == ["PENDED", "REVERSED"]


def test_a_void_of_a_reviewed_claim_reverses_the_reviewers_payment(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("R-V1")])
    paid = decide_review(ledger, "R-V1", 1, {"action": "PAY", "allowed_amount": "9000.00"}).record
    reversal, voided = decide_lines(ledger, [factor("R-V1V", claim_frequency="8", original_claim_id="R-V1")])
    assert reversal.status == "REVERSED" and reversal.allowed_amount == Decimal("-9000.00")
    assert [(a.carc, a.amount) for a in reversal.adjustments] == [(a.carc, -a.amount) for a in paid.adjustments]
    assert voided.status == "VOIDED"
    [fresh] = decide_lines(ledger, [factor("R-V2")])  # no longer a duplicate
    assert fresh.status == "PENDED"


# --- batch mode --------------------------------------------------------------------------------


def test_batch_mode_prints_pended_records(tmp_path):
    import orjson

    from streams.pipeline.batch import run_batch

    lines = [orjson.dumps(factor("B-1")), orjson.dumps(noc("B-2"))]
    records = list(run_batch(lines, REF, BOOKS))
    assert [(r["claim_id"], r["status"], r["allowed_amount"], r["pend"]["reason"], r["pend"]["suggested_amount"])
            for r in records] == [("B-1", "PENDED", "0.00", "HIGH_DOLLAR", "12000.00"),
                                  ("B-2", "PENDED", "0.00", "NOC_REVIEW", "138.98")]
    assert all(r["review"] is None and r["adjustments"] == [] for r in records)


def test_a_rulebook_without_a_review_section_pends_nothing(tmp_path):
    from rules.rulebook import default_rulebooks, load_single

    source = next(p for p in (SAMPLE.parents[1] / "rules" / "rulebook").glob("*.toml"))
    text = source.read_text()
    start = text.index("[review]")
    end = text.index("[rules.", start)
    (tmp_path / "plain.toml").write_text(text[:start] + text[end:])
    books = load_single(tmp_path / "plain.toml")
    work = engine.price(engine.enrich(engine.start([ClaimLine.model_validate(factor("P-1"))], books, T0), REF, books), REF)
    [d] = engine.finalize(work, engine.History(), books, T0).decisions
    assert d.status == "PAID" and d.allowed_amount == Decimal("12000.00")
    assert default_rulebooks().books[0].review.review_denial_carcs == ["16", "50", "96", "197", "252"]


def test_monitor_mode_names_the_pend_rule_that_made_a_difference():
    from rules.monitor import deciding_rules

    paid = {"status": "PAID", "allowed_amount": "12000.00", "adjustments": [], "pend": None}
    pended = {"status": "PENDED", "allowed_amount": "0.00", "adjustments": [],
              "pend": {"rule": "REVIEW-HIGH-DOLLAR", "suggested_amount": "12000.00"}}
    assert deciding_rules(paid, pended) == ["REVIEW-HIGH-DOLLAR"]
    assert deciding_rules(pended, paid) == ["REVIEW-HIGH-DOLLAR"]
