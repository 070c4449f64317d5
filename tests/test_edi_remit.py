"""835 edge cases beyond the fixtures: patient responsibility, many adjustments, refusals."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from edi import fhir, remit835
from edi.validate import validate
from contract.models import AdjudicatedLine, Adjustment

NOW = datetime(2026, 3, 20, 10, 0, tzinfo=timezone.utc)


def line(number: int, charge: str, claim_id: str = "R-1") -> dict:
    return {"claim_id": claim_id, "line_number": number, "line_count": 2, "form": "837P", "member_id": "M1001",
            "provider_npi": "1245678903", "authorization_number": "PA26-1001", "service_date": "2026-01-12",
            "service_date_to": None, "procedure_code": "S9500", "modifiers": ["SH"], "units": "1",
            "charge_amount": charge, "diagnosis_codes": [], "drug": None}


def decision(number: int, status: str, allowed: str, adjustments: list[tuple[str, str, str, list[str]]],
             claim_id: str = "R-1") -> AdjudicatedLine:
    return AdjudicatedLine(
        claim_id=claim_id, line_number=number, member_id="M1001", provider_npi="1245678903",
        procedure_code="S9500", modifiers=["SH"], service_date=date(2026, 1, 12), ndc11=None, status=status,
        allowed_amount=Decimal(allowed),
        adjustments=[Adjustment(group=g, carc=c, rarc=r, amount=Decimal(a), rule="TEST", message="test")
                     for g, c, a, r in adjustments],
        pricing=None, policy_version="TEST", adjudicated_at=NOW)


def test_patient_responsibility_and_many_adjustments_balance() -> None:
    lines = [line(1, "200.00"), line(2, "100.00")]
    many = [("CO", str(c), "1.00", []) for c in (45, 59, 94, 97, 131, 132, 253)]  # 7 CO trios: two CAS segments
    decisions = [
        decision(1, "PAID", "143.00", [("PR", "1", "50.00", []), *many]),
        decision(2, "DENIED", "0.00", [("CO", "16", "100.00", ["M119", "N822"]), ("CO", "16", "0.00", ["M119"]),
                                        ("OA", "18", "0.00", [])]),
    ]
    text = remit835.build(lines, decisions, control_number=1, now=NOW)
    report = validate(text)
    assert report.ok, report.errors
    (claim,) = remit835.read(text)
    assert remit835.balance_errors([claim]) == []
    assert (claim.status, claim.charge, claim.paid, claim.patient_responsibility) == (
        "1", Decimal("300.00"), Decimal("143.00"), Decimal("50.00"))
    assert text.count("CAS*CO*") == 3  # 7 trios on line 1 (6 + 1), 1 merged CO-16 on line 2
    assert [c for _, c, _ in claim.lines[1].cas] == ["16", "18"]
    assert claim.lines[1].rarcs == ("M119", "N822")
    assert claim.lines[0].modifiers == ("SH",)


def test_all_lines_denied_is_claim_status_4_and_a_notification() -> None:
    text = remit835.build([line(1, "80.00")], [decision(1, "DENIED", "0.00", [("CO", "197", "80.00", [])])],
                          control_number=2, now=NOW)
    assert validate(text).ok
    assert "BPR*H*0.00*C*NON" in text and "CLP*R-1*4*80.00*0.00**12*R-1" in text


def test_refusals() -> None:
    paid = decision(1, "PAID", "80.00", [])
    with pytest.raises(remit835.RemittanceError, match="not decided"):
        remit835.build([line(1, "80.00"), line(2, "10.00")], [paid], control_number=1)
    with pytest.raises(remit835.RemittanceError, match="charge"):
        remit835.build([line(1, "90.00")], [paid], control_number=1)
    with pytest.raises(remit835.RemittanceError, match="no submitted lines"):
        remit835.build([], [paid], control_number=1)
    with pytest.raises(remit835.RemittanceError, match="38"):
        long_id = "C" * 39
        remit835.build([line(1, "80.00", long_id)], [decision(1, "PAID", "80.00", [], long_id)], control_number=1)
    with pytest.raises(remit835.RemittanceError):
        remit835.build([], [], control_number=1)


def test_a_repeated_decision_is_remitted_once() -> None:
    paid = decision(1, "PAID", "80.00", [])
    (claim,) = remit835.read(remit835.build([line(1, "80.00")], [paid, paid], control_number=3, now=NOW))
    assert len(claim.lines) == 1


def test_fhir_refuses_several_claims_and_keeps_rarcs() -> None:
    one = decision(1, "DENIED", "0.00", [("CO", "16", "80.00", ["M119"])])
    other = decision(1, "PAID", "80.00", [], claim_id="R-2")
    with pytest.raises(ValueError):
        fhir.claim_response([one, other])
    resource = fhir.claim_response([one])
    adjudication = resource["item"][0]["adjudication"][3]
    assert adjudication["reason"]["coding"][0] == {"system": fhir.CARC_SYSTEM, "code": "16"}
    assert adjudication["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "M119"
    assert resource["processNote"][0]["text"].startswith("M119")
    assert resource["item"][0]["adjudication"][0]["amount"]["value"] == 80.0  # submitted = allowed + adjustments


def test_without_submitted_lines_the_charge_comes_from_the_decision() -> None:
    decisions = [decision(1, "PAID", "115.00", [("CO", "45", "35.00", [])]),
                 decision(2, "DENIED", "0.00", [("CO", "107", "60.00", [])])]
    text = remit835.build(None, decisions, control_number=4, now=NOW)
    assert validate(text).ok
    (claim,) = remit835.read(text)
    assert (claim.charge, claim.paid) == (Decimal("210.00"), Decimal("115.00"))
    assert remit835.balance_errors([claim]) == []
    assert "SVC*HC:S9500:SH*150.00*115.00~" in text  # no SVC05 without the submitted units
