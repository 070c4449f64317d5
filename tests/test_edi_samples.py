"""The public X12 samples in shared/x12-samples behave as its SOURCES.md says.

The samples are not part of the repository: they are read from the shared folder beside the
checkout (CI has it at ../shared), else /work/shared; the tests skip when it is absent,
and fail in CI (`CI` set), whose checkout has it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from edi import ack999, remit835
from edi.parse837 import parse
from edi.validate import validate
from edi.x12 import tokenize
from rules import frontend
from rules.rulebook import default_rulebooks
from streams.pipeline.batch import load_reference_dir, run_batch
from tests.harness import required_missing


def _samples_dir() -> Path:
    beside = Path(__file__).resolve().parents[2] / "shared" / "x12-samples"
    return beside if beside.is_dir() else Path("/work/shared/x12-samples")


SAMPLES = _samples_dir()
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "x12" / "reference"
NOW = datetime(2026, 3, 20, 10, 0, tzinfo=timezone.utc)



@pytest.fixture(autouse=True)
def _samples_present() -> None:
    if not SAMPLES.is_dir():
        required_missing(f"public X12 samples not found at {SAMPLES}")


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def segments_of(x12: str, segment_id: str) -> list[list[str]]:
    _, segs, _ = tokenize(x12)
    return [s.elements for s in segs if s.id == segment_id]


ACCEPTED = [
    "837p_X222A2_drug_office_J1550_ndc_ML.edi",
    "837p_X222A2_drug_office_J1550_ndc_ML_uppercase.edi",
    "837p_X222A2_home_infusion_S9500_S5001_S5000_ndc.edi",
    "837p_X222A2_home_infusion_J0696_J7051_J3490_ndc.edi",
    "837p_X222A2_commercial_patient_is_dependent.edi",
    "837p_X222A1_behavioral_multi_ST_single_line.edi",
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_the_837p_samples_parse_and_are_acknowledged(name: str) -> None:
    result = parse(sample(name))
    assert result.error is None
    assert result.status in ("A", "E")
    assert result.claims and all(c.lines for c in result.claims)
    ack = ack999.build(result, control_number=1, now=NOW)
    report = validate(ack)
    assert report.ok, report.errors
    assert segments_of(ack, "AK9")[0][1] in ("A", "E")
    for line in result.lines:  # every line has the contract's shape
        assert line["form"] == "837P"
        assert line["line_count"] == len([x for x in result.lines if x["claim_id"] == line["claim_id"]])


def test_drug_in_office_maps_the_ndc_quantity_and_unit() -> None:
    for name in ACCEPTED[:2]:
        result = parse(sample(name))
        (claim,) = result.claims
        assert claim.claim_id == "CLMNO12345" and claim.member_id == "MBRID12345"
        assert claim.provider_npi == "1234567893"
        first, drug = claim.lines
        assert first["procedure_code"] == "90782" and first["drug"] is None
        assert drug["procedure_code"] == "J1550"
        assert drug["drug"] == {"ndc": "00026063512", "quantity": "10.00", "unit": "ML", "dosage": None,
                                "frequency": None, "duration_minutes": None}
        assert drug["service_date"] == "2004-07-11" and drug["service_date_to"] is None
        assert drug["authorization_number"] is None
        assert drug["diagnosis_codes"] == ["035.91"]


@pytest.mark.parametrize("name", ACCEPTED[2:4])
def test_home_infusion_ranges_become_multi_date_lines_rejected_line_by_line(name: str) -> None:
    result = parse(sample(name))
    (claim,) = result.claims
    assert len(claim.lines) == 6
    for line in claim.lines:
        assert (line["service_date"], line["service_date_to"]) == ("2004-02-01", "2004-02-07")
        reasons = frontend.validate(line)
        assert isinstance(reasons, list) and [r.code for r in reasons] == ["MULTI_DATE"]
    records = list(run_batch([orjson.dumps(x) for x in claim.lines], load_reference_dir(REFERENCE),
                             default_rulebooks()))
    assert [(r["topic"], r["line_number"], [x["code"] for x in r["reasons"]]) for r in records] == [
        ("claims.lines.rejected", n, ["MULTI_DATE"]) for n in range(1, 7)]


def test_j_codes_keep_hcpcs_units_and_ndc_quantity_apart() -> None:
    claim = parse(sample("837p_X222A2_home_infusion_J0696_J7051_J3490_ndc.edi")).claims[0]
    j0696 = claim.lines[1]
    assert (j0696["procedure_code"], j0696["units"], j0696["drug"]["quantity"], j0696["drug"]["unit"]) == (
        "J0696", "56.00", "7.00", "UN")
    noc = claim.lines[3]  # SV101-7 is a description, not a modifier
    assert noc["procedure_code"] == "J3490" and noc["modifiers"] == []
    assert [x["drug"]["ndc"] for x in claim.lines[1:]] == [
        "00004196501", "63323024910", "00338004938", "08290033010", "08290038005"]


def test_patient_is_dependent_without_nm109_uses_the_subscriber_id() -> None:
    (claim,) = parse(sample("837p_X222A2_commercial_patient_is_dependent.edi")).claims
    assert claim.member_id == "JS00111223333"  # 2010CA has no NM109 in a TR3-conformant file
    assert claim.patient_name == ("SMITH", "TED")
    assert [x["line_number"] for x in claim.lines] == [1, 2, 3, 4]
    assert {x["line_count"] for x in claim.lines} == {4}
    assert claim.lines[0]["diagnosis_codes"] == ["034.0", "V73.89"]


def test_multi_st_batch_lenient_accepts_with_errors_noted_strict_rejects() -> None:
    text = sample("837p_X222A1_behavioral_multi_ST_single_line.edi")
    lenient = parse(text)
    assert [t.status for t in lenient.transactions] == ["A", "E", "E", "E", "E"]
    assert len(lenient.claims) == 5
    assert lenient.claims[1].lines[0]["modifiers"] == ["HF"]
    noted = lenient.transactions[1].errors
    assert {(e.segment_id, e.fatal) for e in noted} == {("HL", False)}

    strict = parse(text, strict=True)
    assert [t.status for t in strict.transactions] == ["A", "R", "R", "R", "R"]
    assert [c.claim_id for c in strict.claims] == ["1805080AV3648339"]
    ack = ack999.build(strict, control_number=2, now=NOW)
    assert validate(ack).ok
    assert segments_of(ack, "AK9") == [["AK9", "P", "5", "5", "1"]]
    assert [s[1:3] for s in segments_of(ack, "IK5")] == [["A"]] + [["R", "5"]] * 4


def test_malformed_hi_hl_se_count_is_rejected_with_segment_and_element_at_fault() -> None:
    result = parse(sample("NEG_837p_X222A1_malformed_HI_HL_SEcount.edi"))
    assert result.claims == [] and result.status == "R"
    ack = ack999.build(result, control_number=3, now=NOW)
    report = validate(ack)
    assert report.ok, report.errors
    ik3 = segments_of(ack, "IK3")
    assert ["IK3", "HI", "21", "2300", "8"] in ik3 and ["IK3", "HI", "30", "2300", "8"] in ik3
    assert any(s[1] == "HL" for s in ik3)
    ik4 = segments_of(ack, "IK4")
    assert ["IK4", "2:1", "1270", "5", "8901"] in ik4  # HI02-1 too long, bad value echoed
    ik5 = segments_of(ack, "IK5")
    assert ik5[0][1] == "R" and "4" in ik5[0][2:]  # SE01 count wrong
    assert segments_of(ack, "AK9")[0][1] == "R"


def test_4010_is_rejected_as_an_unsupported_version() -> None:
    result = parse(sample("NEG_837p_4010_X098A1_wrong_version.edi"))
    assert result.error is not None and result.error.code == "UNSUPPORTED_VERSION"
    assert result.claims == []
    ack = ack999.build(result, control_number=4, now=NOW)
    assert validate(ack).ok
    assert segments_of(ack, "TA1") == [["TA1", "000001168", "041105", "1526", "R", "003"]]
    assert segments_of(ack, "AK1") == [["AK1", "HC", "1167", "004010X098A1"]]
    ak9 = segments_of(ack, "AK9")[0]
    assert ak9[1] == "R" and ak9[4] == "0" and "2" in ak9[5:]


@pytest.mark.parametrize("name", ["REF_277CA_X214_accepted.edi", "REF_835_X221A1_managed_care.edi"])
def test_other_transactions_are_not_837p_claims(name: str) -> None:
    result = parse(sample(name))
    assert result.claims == [] and result.status == "R"
    assert validate(ack999.build(result, control_number=5, now=NOW)).ok


def test_the_reference_835_balances_by_our_reader() -> None:
    claims = remit835.read(sample("REF_835_X221A1_managed_care.edi"))
    assert [c.claim_id for c in claims] == ["5554555444", "8765432112"]
    assert remit835.balance_errors(claims) == []
