"""Remittance held until final (CONTRACT.md *Pended lines and manual review*), on the ledger
(SQLite and PostgreSQL), as the remittance agent, the HTTP 835 and the review API's hand-on
read it (`streams.ledger.remittance`): no 835 while a line of the claim is pended; once every line
is final the reviewer's amounts (CO/45 REVIEW-PRICED, the reviewer's CARC); a replacement whose
own lines pend carries its reversal first once final; a claim reversed while pended was never
remitted, so its reversal is in no 835 and what it reversed in turn is carried forward. The
FHIR ClaimResponse's `outcome` is `queued` while any line is pended.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edi import fhir, remit835
from edi.validate import validate
from contract.messages import DecidedClaim
from streams.ledger.remittance import build_835, claim_response_inputs, decided_claim, remittance_inputs_all, remittance_of
from tests.ledger_harness import line
from tests.test_review import AUTH, MEMBER, decide_lines, decide_review, factor, noc

NPI = "1245678903"


def nurse(claim_id: str, number: int = 1, count: int = 1, **kw: Any) -> dict[str, Any]:
    """A nursing visit (99601), 100.00: paid by rules alone."""
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": AUTH, "procedure_code": "99601",
                                            "units": "1", "charge_amount": "100.00", "service_date": "2026-02-10",
                                            "drug": None, **kw})


def as_claim(claim_id: str, decisions) -> DecidedClaim:
    return DecidedClaim(claim_id=claim_id, decisions=tuple(decisions))


def agent_view(ledger, claim: DecidedClaim) -> DecidedClaim | None:
    """What the remittance agent makes of a `claims.internal.decided` claim."""
    [(remit, _, _)] = remittance_inputs_all(ledger, [claim])
    return remit


def claims_of_835(remit: DecidedClaim, ledger) -> list[remit835.RemitClaim]:
    text = build_835(remit.decisions, ledger.remittance_facts([d.claim_id for d in remit.decisions]), 7)
    assert validate(text).ok, text
    claims = remit835.read(text)
    assert remit835.balance_errors(claims) == []
    return claims


def test_no_835_while_a_line_is_pended_then_the_reviewers_amounts(store):
    ledger = store.ledger
    decisions = decide_lines(ledger, [factor("H-1", 1, 2, charge="15000.00"), nurse("H-1", 2, 2)])
    assert [d.status for d in decisions] == ["PENDED", "PAID"]
    claim = as_claim("H-1", decisions)
    assert agent_view(ledger, claim) is None  # the agent's defensive check: the message has a PENDED line
    # ... and the ledger's: a message without the PENDED record still finds the open pend
    assert agent_view(ledger, as_claim("H-1", decisions[1:])) is None
    state, pended = remittance_of(ledger, "H-1", decisions)
    assert state == "PENDED" and [(p["line_number"], p["reason"], p["queue"]) for p in pended] == \
        [(1, "HIGH_DOLLAR", "PAYMENT_INTEGRITY")]
    assert decided_claim(ledger, "H-1") is None

    reviewed = decide_review(ledger, "H-1", 1, {"action": "PAY", "allowed_amount": "11000.00"})
    assert reviewed.claim_final is not None
    remit = decided_claim(ledger, "H-1")
    assert [d.status for d in remit.decisions] == ["PAID", "PAID"]
    assert agent_view(ledger, as_claim("H-1", reviewed.claim_final)) == remit
    assert remittance_of(ledger, "H-1", list(reviewed.claim_final)) == ("OK", remit)
    [paid] = claims_of_835(remit, ledger)
    assert (paid.claim_id, paid.status, paid.charge, paid.paid) == ("H-1", "1", Decimal("15100.00"), Decimal("11100.00"))
    first = paid.lines[0]
    assert (first.paid, first.cas) == (Decimal("11000.00"), (("CO", "45", Decimal("4000.00")),))


def test_a_reviewers_denial_is_remitted_with_the_reviewers_carc(store):
    ledger = store.ledger
    decide_lines(ledger, [noc("D-1")])
    assert decided_claim(ledger, "D-1") is None
    decide_review(ledger, "D-1", 1, {"action": "DENY", "carc": "50", "rarc": ["N115"]}, queues=["CLINICAL"])
    remit = decided_claim(ledger, "D-1")
    [denied] = claims_of_835(remit, ledger)
    assert (denied.status, denied.charge, denied.paid) == ("4", Decimal("500.00"), Decimal("0.00"))
    assert denied.lines[0].cas == (("CO", "50", Decimal("500.00")),) and denied.lines[0].rarcs == ("N115",)


def test_a_replacement_whose_own_lines_pend_waits_then_carries_its_reversal_first(store):
    ledger = store.ledger
    [original] = decide_lines(ledger, [nurse("RP-1")])
    assert agent_view(ledger, as_claim("RP-1", [original])) is not None  # remitted at once
    step = decide_lines(ledger, [factor("RP-2", 1, 2, claim_frequency="7", original_claim_id="RP-1"),
                                 nurse("RP-2", 2, 2, claim_frequency="7", original_claim_id="RP-1")])
    assert [(d.claim_id, d.status) for d in step] == [("RP-1", "REVERSED"), ("RP-2", "PENDED"), ("RP-2", "PAID")]
    assert agent_view(ledger, as_claim("RP-2", step)) is None
    assert remittance_of(ledger, "RP-2", step[1:])[0] == "PENDED"

    reviewed = decide_review(ledger, "RP-2", 1, {"action": "PAY"})
    # the review API hands on the claim's own decisions; its 835 still starts with the reversal
    for remit in (decided_claim(ledger, "RP-2"), agent_view(ledger, as_claim("RP-2", reviewed.claim_final))):
        assert [(d.claim_id, d.status) for d in remit.decisions] == [("RP-1", "REVERSED"), ("RP-2", "PAID"), ("RP-2", "PAID")]
        assert remit.decisions[0].allowed_amount == Decimal("-100.00")
        reversal, payment = claims_of_835(remit, ledger)
        assert (reversal.claim_id, reversal.status, reversal.paid) == ("RP-1", "22", Decimal("-100.00"))
        assert (payment.claim_id, payment.status, payment.paid) == ("RP-2", "1", Decimal("12100.00"))
    assert remittance_of(ledger, "RP-2", list(reviewed.claim_final)) == ("OK", decided_claim(ledger, "RP-2"))


def test_a_claim_reversed_while_pended_was_never_remitted(store):
    ledger = store.ledger
    held = decide_lines(ledger, [factor("NR-1", 1, 2), nurse("NR-1", 2, 2)])
    assert agent_view(ledger, as_claim("NR-1", held)) is None
    step = decide_lines(ledger, [nurse("NR-2", claim_frequency="7", original_claim_id="NR-1")])
    assert [(d.claim_id, d.status, d.allowed_amount) for d in step] == \
        [("NR-1", "REVERSED", Decimal("0.00")), ("NR-1", "REVERSED", Decimal("-100.00")), ("NR-2", "PAID", Decimal("100.00"))]
    # nothing of NR-1 went out, so nothing is taken back: NR-2's 835 is its own payment only
    remit = agent_view(ledger, as_claim("NR-2", step))
    assert [(d.claim_id, d.status) for d in remit.decisions] == [("NR-2", "PAID")]
    [payment] = claims_of_835(remit, ledger)
    assert (payment.claim_id, payment.status, payment.paid) == ("NR-2", "1", Decimal("100.00"))
    # NR-1 itself: no open pend any more, but never remitted (its re-delivery neither)
    assert remittance_of(ledger, "NR-1", held) == ("UNREMITTED", None)
    assert agent_view(ledger, as_claim("NR-1", held[1:])) is None
    assert claim_response_inputs(ledger, "NR-1")[1] is True


def test_a_void_of_a_claim_never_remitted_has_nothing_to_remit(store):
    ledger = store.ledger
    decide_lines(ledger, [noc("VN-1")])
    step = decide_lines(ledger, [noc("VN-2", claim_frequency="8", original_claim_id="VN-1")])
    assert [(d.claim_id, d.status) for d in step] == [("VN-1", "REVERSED"), ("VN-2", "VOIDED")]
    assert agent_view(ledger, as_claim("VN-2", step)) is None  # no 835 (and no DLQ record)
    assert remittance_of(ledger, "VN-2", step[1:]) == ("UNREMITTED", None)


def test_what_an_unremitted_replacement_reversed_is_carried_forward(store):
    ledger = store.ledger
    decide_lines(ledger, [nurse("CF-1")])  # remitted: 100.00 paid
    decide_lines(ledger, [factor("CF-2", claim_frequency="7", original_claim_id="CF-1")])  # pended, held
    step = decide_lines(ledger, [nurse("CF-3", claim_frequency="7", original_claim_id="CF-2")])
    assert [(d.claim_id, d.status) for d in step] == [("CF-2", "REVERSED"), ("CF-3", "PAID")]
    # CF-2 never went out, but the 100.00 paid for CF-1 did: CF-3's 835 takes it back first
    remit = agent_view(ledger, as_claim("CF-3", step))
    assert [(d.claim_id, d.status, d.reversed_by) for d in remit.decisions] == \
        [("CF-1", "REVERSED", "CF-3"), ("CF-3", "PAID", None)]
    reversal, payment = claims_of_835(remit, ledger)
    assert (reversal.claim_id, reversal.status, reversal.paid) == ("CF-1", "22", Decimal("-100.00"))
    assert (payment.claim_id, payment.paid) == ("CF-3", Decimal("100.00"))
    assert reversal.transaction == payment.transaction  # one transaction set: CF-3's
    # the ledger's records are unchanged: CF-1's reversal names CF-2, which made it
    assert [r.reversed_by for r in ledger.decisions_for("CF-1")] == [None]


def test_a_replacement_of_a_claim_final_after_review_takes_back_the_reviewers_payment(store):
    ledger = store.ledger
    decide_lines(ledger, [factor("FR-1")])
    decide_review(ledger, "FR-1", 1, {"action": "PAY", "allowed_amount": "9000.00"})
    assert decided_claim(ledger, "FR-1") is not None  # remitted once final
    step = decide_lines(ledger, [nurse("FR-2", claim_frequency="7", original_claim_id="FR-1")])
    remit = agent_view(ledger, as_claim("FR-2", step))
    assert [(d.claim_id, d.status, d.allowed_amount) for d in remit.decisions] == \
        [("FR-1", "REVERSED", Decimal("-9000.00")), ("FR-2", "PAID", Decimal("100.00"))]
    claims_of_835(remit, ledger)


def test_fhir_outcome_is_queued_while_a_line_is_pended(store):
    ledger = store.ledger
    decisions = decide_lines(ledger, [factor("F-1", 1, 2, charge="15000.00"), nurse("F-1", 2, 2)])
    replaces, unremitted, charges = claim_response_inputs(ledger, "F-1")
    assert (replaces, unremitted, charges) == (None, False, [{"claim_id": "F-1", "line_number": 1, "charge_amount": "15000.00"}])
    queued = fhir.claim_response(decisions, claim_lines=charges)
    assert queued["outcome"] == "queued" and "payment" not in queued
    assert queued["disposition"] == "1 line(s) paid, 0 denied, 1 pended for manual review"
    item = queued["item"][0]
    assert [(a["category"]["coding"][0]["code"], a["amount"]["value"]) for a in item["adjudication"]] == \
        [("submitted", 15000.0), ("eligible", 0.0), ("benefit", 0.0)]
    note = {n["number"]: n["text"] for n in queued["processNote"]}[item["noteNumber"][0]]
    assert "HIGH_DOLLAR" in note and "PAYMENT_INTEGRITY" in note
    total = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in queued["total"]}
    assert total == {"submitted": 15100.0, "eligible": 100.0, "benefit": 100.0}

    decide_review(ledger, "F-1", 1, {"action": "PAY", "allowed_amount": "11000.00"})
    final = fhir.claim_response(ledger.decisions_for("F-1"), claim_lines=claim_response_inputs(ledger, "F-1")[2])
    assert final["outcome"] == "complete" and final["payment"]["amount"]["value"] == 11100.0
    first = final["item"][0]["adjudication"]
    assert [a["amount"]["value"] for a in first[:3]] == [15000.0, 11000.0, 11000.0]
    assert (first[3]["reason"]["coding"][0]["code"], first[3]["amount"]["value"]) == ("45", 4000.0)


def test_fhir_needs_a_pended_lines_charge():
    import pytest

    from tests.test_review import REF  # noqa: F401 - the module's reference data is built once
    from contract.models import AdjudicatedLine

    pended = AdjudicatedLine.model_validate({
        "claim_id": "F-2", "line_number": 1, "member_id": MEMBER, "provider_npi": NPI, "procedure_code": "J9999",
        "modifiers": [], "service_date": "2026-02-10", "ndc11": None, "status": "PENDED", "allowed_amount": "0.00",
        "adjustments": [], "pricing": None, "policy_version": "hit-2021-08-26", "adjudicated_at": "2026-03-01T12:00:00Z",
        "pend": {"reason": "NOC_REVIEW", "queue": "CLINICAL", "rule": "REVIEW-NOC", "message": "m",
                 "suggested_amount": "10.00", "pended_at": "2026-03-01T12:00:00Z"}})
    with pytest.raises(ValueError, match="pended"):
        fhir.claim_response([pended])
    assert fhir.claim_response([pended], claim_lines=[{"claim_id": "F-2", "line_number": 1, "charge_amount": "20.00"}]
                               )["outcome"] == "queued"


def test_remittable_claims_is_what_the_review_api_should_remit(store):
    """`Reviewed.claim_final` carries every reversal a claim made; the 835 must not take back
    what a claim reversed while pended was never paid (`remittable_claims` leaves it out)."""
    from streams.ledger.remittance import remittable_claims

    ledger = store.ledger
    decide_lines(ledger, [factor("RC-1", 1, 2), nurse("RC-1", 2, 2)])  # held: never remitted
    decide_lines(ledger, [factor("RC-2", 1, 2, charge="15000.00", claim_frequency="7", original_claim_id="RC-1"),
                          nurse("RC-2", 2, 2, claim_frequency="7", original_claim_id="RC-1")])
    assert remittable_claims(ledger, ["RC-1", "RC-2"]) == {}
    reviewed = decide_review(ledger, "RC-2", 1, {"action": "PAY"})
    assert [d.claim_id for d in reviewed.claim_final] == ["RC-1", "RC-1", "RC-2", "RC-2"]  # the ledger's own view
    final = remittable_claims(ledger, ["RC-1", "RC-2"])
    assert list(final) == ["RC-2"] and [(d.claim_id, d.status) for d in final["RC-2"]] == [("RC-2", "PAID"), ("RC-2", "PAID")]
