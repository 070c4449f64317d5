"""Round trip for the synthetic 837P fixtures (one per POLICY.md rule): 837P -> parse ->
front end -> batch pipeline -> 835 (pyx12-valid, CAS codes = the decisions, balanced to the
cent at line and claim level), plus the 999, the 277CA and the FHIR ClaimResponse."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from edi import ack277ca, ack999, fhir, remit835
from edi.parse837 import Interchange837, parse
from edi.validate import validate
from edi.x12 import tokenize
from rules import frontend
from rules.rulebook import default_rulebooks
from contract.models import CORRECTION_REJECTIONS, AdjudicatedLine, ClaimLine
from streams.pipeline.batch import load_reference_dir, run_batch

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"
EXPECTED: dict[str, Any] = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 3, 20, 10, 0, tzinfo=timezone.utc)
ADJUDICATED = "claims.lines.adjudicated"
REJECTED = "claims.lines.rejected"
#: The fixtures with a claim that reaches adjudication (the others are front-end rejections,
#: with no 835 to build): chosen from the reviewed expectations, not from what the run gives.
REMITTED = sorted(name for name, fx in EXPECTED.items()
                  if any(line["outcome"] != "REJECTED" for claim in fx["claims"].values() for line in claim["lines"]))


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("x12_fixture_generator", HERE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(name: str) -> tuple[Interchange837, list[dict[str, Any]]]:
    """Parse the fixture and adjudicate its lines in batch mode (a fresh ledger each time)."""
    result = parse((HERE / f"{name}.edi").read_text(encoding="utf-8"))
    records = list(run_batch([orjson.dumps(line) for line in result.lines], load_reference_dir(HERE / "reference"),
                             default_rulebooks()))
    return result, records


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[Interchange837, list[dict[str, Any]]]]:
    return {name: run(name) for name in EXPECTED}


def test_fixtures_are_what_the_generator_writes() -> None:
    files = _generator().files()
    assert sorted(files) == sorted(p.name for p in HERE.iterdir() if p.suffix in (".edi", ".json"))
    for name, text in files.items():
        assert (HERE / name).read_text(encoding="utf-8") == text, f"{name}: rerun tests/fixtures/x12/generate.py"


def test_every_policy_rule_has_a_fixture() -> None:
    carcs = {c for fx in EXPECTED.values() for claim in fx["claims"].values() for line in claim["lines"]
             for c in line.get("carcs", [])}
    assert carcs >= {"4", "16", "18", "27", "31", "107", "197", "198", "204"}
    outcomes = {line["outcome"] for fx in EXPECTED.values() for claim in fx["claims"].values() for line in claim["lines"]}
    assert outcomes == {"PAID", "DENIED", "REJECTED", "VOIDED"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_whole_claims_and_passes_the_front_end(name: str, runs: dict) -> None:
    result, _ = runs[name]
    assert result.error is None and result.status in ("A", "E")
    want = EXPECTED[name]["claims"]
    assert [c.claim_id for c in result.claims] == list(want)
    for claim in result.claims:
        assert claim.member_id == want[claim.claim_id]["member_id"]
        assert [x["line_number"] for x in claim.lines] == list(range(1, len(want[claim.claim_id]["lines"]) + 1))
        for line, expected in zip(claim.lines, want[claim.claim_id]["lines"], strict=True):
            checked = frontend.validate(line)
            if expected["outcome"] == "REJECTED" and expected.get("code") == "MULTI_DATE":
                assert isinstance(checked, list) and [r.code for r in checked] == ["MULTI_DATE"]
            else:
                assert isinstance(checked, ClaimLine), checked
    ack = ack999.build(result, control_number=11, now=NOW)
    report = validate(ack)
    assert report.ok, report.errors
    _, segs, _ = tokenize(ack)
    assert [s.elements[1] for s in segs if s.id == "IK5"] == [t.status for t in result.transactions]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_decisions_are_as_reviewed(name: str, runs: dict) -> None:
    _, records = runs[name]
    got: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in records:
        assert rec["topic"] in (ADJUDICATED, REJECTED), rec
        if rec.get("status") != "REVERSED":  # a line's own decision (its reversal: below)
            got[(rec["claim_id"], rec["line_number"])] = rec
    for claim_id, claim in EXPECTED[name]["claims"].items():
        for line in claim["lines"]:
            rec = got[(claim_id, line["line_number"])]
            if line["outcome"] == "REJECTED":
                assert rec["topic"] == REJECTED
                if line.get("code"):
                    assert line["code"] in [r["code"] for r in rec["reasons"]]
                continue
            assert rec["topic"] == ADJUDICATED and rec["status"] == line["outcome"], rec
            denial_carcs = sorted({a["carc"] for a in rec["adjustments"]} - {"45"})
            assert denial_carcs == sorted(line.get("carcs", [])), rec["adjustments"]


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - set(REMITTED)))
def test_fixture_rejected_by_the_front_end_has_no_decision_to_remit(name: str, runs: dict) -> None:
    _, records = runs[name]
    assert records and all(r["topic"] == REJECTED for r in records), records


@pytest.mark.parametrize("name", REMITTED)
def test_round_trip_835_matches_the_decisions_and_balances(name: str, runs: dict) -> None:
    result, records = runs[name]
    decisions = [AdjudicatedLine.model_validate({k: v for k, v in r.items() if k != "topic"})
                 for r in records if r["topic"] == ADJUDICATED]
    assert decisions, "the reviewed expectations say a claim of this fixture is decided"
    text = remit835.build(result.lines, decisions, control_number=21, now=NOW)
    report = validate(text)
    assert report.ok, report.errors
    assert "E+" not in text  # X12 decimals never use exponents
    remits = remit835.read(text)
    assert remit835.balance_errors(remits) == []
    by_claim = {(c.claim_id, c.status == "22"): c for c in remits}
    submitted = {(x["claim_id"], x["line_number"]): x for x in result.lines}
    remitted = [d for d in decisions if d.status != "VOIDED"]  # a void's effect is its reversal
    assert len(remits) == len({(d.claim_id, d.status == "REVERSED") for d in remitted})
    for claim_id, reversal in dict.fromkeys((d.claim_id, d.status == "REVERSED") for d in remitted):
        remit = by_claim[(claim_id, reversal)]
        mine = sorted((d for d in remitted if d.claim_id == claim_id and (d.status == "REVERSED") == reversal),
                      key=lambda d: d.line_number)
        assert remit.status == ("22" if reversal else "4" if all(d.status == "DENIED" for d in mine) else "1")
        charges = [Decimal(submitted[(claim_id, d.line_number)]["charge_amount"]) for d in mine]
        assert remit.charge == (-sum(charges) if reversal else sum(charges))
        assert remit.paid == sum(d.allowed_amount for d in mine)
        assert len(remit.lines) == len(mine)
        for svc, dec in zip(remit.lines, mine, strict=True):
            assert svc.procedure == dec.procedure_code and list(svc.modifiers) == dec.modifiers
            assert svc.paid == dec.allowed_amount
            sent = submitted.get((claim_id, dec.line_number), {}).get("line_item_control_number")
            assert svc.control_number == (sent or f"{claim_id}-{dec.line_number:03d}")  # REF*6R as the 837 sent it
            assert svc.service_date == dec.service_date.strftime("%Y%m%d")
            assert {(g, c) for g, c, _ in svc.cas} == {(a.group, a.carc) for a in dec.adjustments}
            for group, carc, amount in svc.cas:
                assert amount == sum(a.amount for a in dec.adjustments if (a.group, a.carc) == (group, carc))
            assert set(svc.rarcs) == {r for a in dec.adjustments for r in a.rarc}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_277ca_per_claim(name: str, runs: dict) -> None:
    result, records = runs[name]
    for claim in result.claims:
        status = ack277ca.status_from_records(claim, records)
        assert status is not None
        expected = EXPECTED[name]["claims"][claim.claim_id]["lines"]
        # a replacement or void is accepted like any claim, whatever the check of its original says later
        assert status.accepted == all(x["outcome"] != "REJECTED" or x["code"] in CORRECTION_REJECTIONS for x in expected)
        text = ack277ca.build(status, control_number=31, now=NOW)
        report = validate(text)
        assert report.ok, report.errors
        _, segs, _ = tokenize(text)
        stc = [s.elements for s in segs if s.id == "STC"]
        trn = [s.elements for s in segs if s.id == "TRN"]
        assert ["TRN", "2", claim.claim_id] in trn
        claim_stc = stc[2]  # after the receiver's and the provider's
        if status.accepted:
            assert claim_stc[1] == "A2:20"
            assert ["REF", "1K", claim.claim_id] in [s.elements for s in segs if s.id == "REF"]
        else:
            assert claim_stc[1].startswith("A3:") and claim_stc[3] == "U"


def test_277ca_names_the_multi_date_line_and_a_bad_npi(runs: dict) -> None:
    result, records = runs["10_date_range_rejected"]
    status = ack277ca.status_from_records(result.claims[0], records)
    text = ack277ca.build(status, control_number=32, now=NOW)
    assert "STC*A3:187*" in text and "SVC*HC:S9500*450.00" in text and "DTP*472*RD8*20260202-20260204" in text

    claim = result.claims[0]
    bad = ack277ca.ClaimStatus(claim, accepted=False, reasons=(ack277ca.Reason("NPI", "provider_npi", "bad"),))
    text = ack277ca.build(bad, control_number=33, now=NOW)
    assert validate(text).ok and "STC*A3:562:85*" in text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fhir_claim_response(name: str, runs: dict) -> None:
    result, records = runs[name]
    decided = [r for r in records if r["topic"] == ADJUDICATED]
    for claim_id in dict.fromkeys(r["claim_id"] for r in decided if r["status"] in ("PAID", "DENIED")):
        mine = [r for r in decided if r["claim_id"] == claim_id and r["status"] != "REVERSED"]
        original = next((x.get("original_claim_id") for x in result.lines if x["claim_id"] == claim_id), None)
        resource = fhir.claim_response(mine, claim_lines=result.lines, replaces=original)
        replaces = [e for e in resource["extension"] if e["url"] == fhir.REPLACES_EXTENSION]
        assert replaces == ([{"url": fhir.REPLACES_EXTENSION, "valueIdentifier": {"system": fhir.CLAIM_ID_SYSTEM, "value": original}}]
                            if original else [])
        assert resource["resourceType"] == "ClaimResponse" and resource["outcome"] == "complete"
        for item, rec in zip(resource["item"], sorted(mine, key=lambda r: r["line_number"]), strict=True):
            assert item["itemSequence"] == rec["line_number"]
            categories = [a["category"]["coding"][0]["code"] for a in item["adjudication"]]
            assert categories[:3] == ["submitted", "eligible", "benefit"]
            carcs = [a["reason"]["coding"][0] for a in item["adjudication"] if "reason" in a]
            assert [(c["system"], c["code"]) for c in carcs] == [(fhir.CARC_SYSTEM, a["carc"]) for a in rec["adjustments"]]
            benefit = Decimal(str(item["adjudication"][2]["amount"]["value"]))
            assert benefit == Decimal(rec["allowed_amount"])


def test_dependent_patient_member_comes_from_2010ca(runs: dict) -> None:
    result, records = runs["17_dependent_patient"]
    assert result.claims[0].member_id == "M1002"  # not the subscriber's S7001002
    assert result.transactions[0].status == "E"  # NM108/NM109 are 'not used' in the TR3: noted
    assert parse((HERE / "17_dependent_patient.edi").read_text(encoding="utf-8"), strict=True).claims == []


def test_line_level_ref_g1_overrides_the_claims(runs: dict) -> None:
    result, records = runs["18_line_level_authorization"]
    assert [x["authorization_number"] for x in result.lines] == ["PA26-1001", "PA26-5001"]
    assert {c for r in records for c in (x["code"] for x in r.get("reasons", []))} == {"HEADER_MISMATCH"}


def test_drug_note_and_ndc_are_mapped(runs: dict) -> None:
    result, _ = runs["01_per_diem_with_drug_paid"]
    per_diem, drug = result.lines
    assert per_diem == {
        "claim_id": "X12-0101", "line_number": 1, "line_count": 2, "form": "837P", "member_id": "M1001",
        "provider_npi": "1245678903", "authorization_number": "PA26-1001", "service_date": "2026-01-12",
        "service_date_to": None, "procedure_code": "S9500", "modifiers": [], "units": "1", "charge_amount": "150.00",
        "diagnosis_codes": ["M86.171"], "drug": None, "claim_frequency": "1",
        # beyond the contract (ignored by it), what the 835 and 277CA answer with
        "line_item_control_number": "X12-0101-001", "claim_filing_indicator": "CI", "interchange_usage": "T",
        "patient_last_name": "SUBSCRIBER", "patient_first_name": "PAT",
    }
    assert drug["drug"] == {"ndc": "00143985810", "quantity": "2", "unit": "UN", "dosage": "2 g",
                            "frequency": "q24h", "duration_minutes": 30}
    jw = runs["05_jw_wastage"][0].lines[2]
    assert (jw["procedure_code"], jw["modifiers"]) == ("J0696", ["JW"])


def test_replacement_and_void_remit_reversals_first(runs: dict) -> None:
    """An 837P replacement (CLM05-3 = 7, REF*F8) reverses its original: in the 835 the
    reversal is a claim payment with CLP02 22 and negated amounts, followed by the
    replacement's own, in one transaction set; a void's 835 has only the reversal, the
    amount owed back forwarded in PLB*FB so BPR02 is not negative."""
    result, records = runs["19_replacement"]
    assert [(c.claim_id, c.frequency_code) for c in result.claims] == [("X12-1901", "1"), ("X12-1902", "7")]
    assert {(x["claim_id"], x["claim_frequency"], x.get("original_claim_id")) for x in result.lines} == \
        {("X12-1901", "1", None), ("X12-1902", "7", "X12-1901")}
    statuses = [(r["claim_id"], r["line_number"], r["status"]) for r in records]
    assert statuses == [("X12-1901", 1, "PAID"), ("X12-1901", 2, "PAID"), ("X12-1901", 1, "REVERSED"),
                        ("X12-1901", 2, "REVERSED"), ("X12-1902", 1, "PAID"), ("X12-1902", 2, "PAID")]
    replacement = [AdjudicatedLine.model_validate({k: v for k, v in r.items() if k != "topic"})
                   for r in records if r["claim_id"] == "X12-1902" or r["status"] == "REVERSED"]
    text = remit835.build(None, replacement, control_number=41, now=NOW)
    assert validate(text).ok, validate(text).errors
    remits = remit835.read(text)
    assert remit835.balance_errors(remits) == []
    assert [(c.claim_id, c.status, c.transaction) for c in remits] == [("X12-1901", "22", 0), ("X12-1902", "1", 0)]
    assert remits[0].charge == Decimal("-210.00") and remits[0].paid == Decimal("-138.38")
    assert remits[1].paid == Decimal("123.38")  # S9500 allowed at its lower charge, 100.00
    assert remits[0].payment == 0 and "PLB*1245678903*20261231*FB:X12-1902*-15.00" in text

    result, records = runs["20_void"]
    void = [AdjudicatedLine.model_validate({k: v for k, v in r.items() if k != "topic"})
            for r in records if r.get("reversed_by") == "X12-2002" or r["claim_id"] == "X12-2002"]
    assert [d.status for d in void] == ["REVERSED", "REVERSED", "VOIDED"]
    text = remit835.build(None, void, control_number=42, now=NOW)
    assert validate(text).ok, validate(text).errors
    remits = remit835.read(text)
    assert remit835.balance_errors(remits) == []
    assert [(c.claim_id, c.status) for c in remits] == [("X12-2001", "22")]
    assert remits[0].payment == 0 and "BPR*H*0.00*C*NON" in text and "PLB*1245678903*20261231*FB:X12-2002*-138.38" in text
