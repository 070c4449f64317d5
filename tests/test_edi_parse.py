"""837P parsing edge cases: envelopes, versions, delimiters, library failures, the 999."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from edi import ack999, parse837
from edi import validate as gate
from edi.parse837 import parse
from edi.x12 import tokenize

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"
NOW = datetime(2026, 3, 20, 10, 0, tzinfo=timezone.utc)
GOOD = (HERE / "01_per_diem_with_drug_paid.edi").read_text(encoding="utf-8")
FIVE_LINES = (HERE / "05_jw_wastage.edi").read_text(encoding="utf-8")


def ack_segments(result: parse837.Interchange837, segment_id: str) -> list[list[str]]:
    text = ack999.build(result, control_number=9, now=NOW)
    report = gate.validate(text)
    assert report.ok, report.errors
    _, segs, _ = tokenize(text)
    return [s.elements for s in segs if s.id == segment_id]


def test_a_clean_interchange_is_accepted() -> None:
    result = parse(GOOD)
    assert result.status == "A"
    assert (result.sender.id, result.receiver.id, result.control_number) == ("SYNHIT01", "SYNPLAN01", "000000101")
    assert [(g.control_number, g.version) for g in result.groups] == [("101", "005010X222A1")]
    assert [t.control_number for t in result.transactions] == ["0101"]
    assert ack_segments(result, "AK9") == [["AK9", "A", "1", "1", "1"]]


def test_bytes_are_accepted_and_non_text_is_an_error_object() -> None:
    assert parse(GOOD.encode()).status == "A"
    result = parse(None)  # type: ignore[arg-type]
    assert result.error is not None and result.error.code == "NOT_X12" and result.claims == []


@pytest.mark.parametrize("text", ["", "hello", "ISA*00", "\x00" * 200, "GS*HC*A*B~ST*837*1~"])
def test_garbage_is_rejected_with_a_999(text: str) -> None:
    result = parse(text)
    assert result.error is not None and result.error.code == "NOT_X12"
    assert ack_segments(result, "AK9")[0][1] == "R"


def test_truncated_interchange_is_rejected_whole() -> None:
    cut = GOOD[: GOOD.index("LX*2")]
    result = parse(cut)
    assert result.error is not None and result.error.code == "MALFORMED_ENVELOPE"
    assert result.claims == []
    assert ack_segments(result, "TA1")[0][4:] == ["R", "023"]


def test_missing_iea_only() -> None:
    result = parse(GOOD.replace("IEA*1*000000101~\n", ""))
    assert result.claims == [] and result.error.ta1_code == "023"


def test_iea_control_number_mismatch() -> None:
    result = parse(GOOD.replace("IEA*1*000000101", "IEA*1*000000999"))
    assert result.claims == [] and result.error.ta1_code == "001"


def test_data_after_iea_is_rejected() -> None:
    result = parse(GOOD + "GS*HC*X~")
    assert result.claims == [] and result.error is not None


def test_se_count_wrong_rejects_the_transaction_set() -> None:
    result = parse(GOOD.replace("SE*32*0101", "SE*31*0101"))
    assert result.error is None and result.claims == []
    ik5 = ack_segments(result, "IK5")
    assert ik5[0][1] == "R" and "4" in ik5[0][2:]


def test_ge_count_wrong_rejects_the_group() -> None:
    result = parse(GOOD.replace("GE*1*101", "GE*2*101"))
    assert result.claims == []
    ak9 = ack_segments(result, "AK9")[0]
    assert ak9[1] == "R" and "5" in ak9[5:]


def test_claim_total_not_the_sum_of_its_lines_is_pinned_to_clm02() -> None:
    result = parse(GOOD.replace("CLM*X12-0101*210.00", "CLM*X12-0101*211.00"))
    assert result.claims == []
    assert ["IK3", "CLM", "18", "2300", "8"] in ack_segments(result, "IK3")
    assert ["IK4", "2", "782", "I12", "211.00"] in ack_segments(result, "IK4")


def test_lx_numbering_gap_is_rejected() -> None:
    result = parse(GOOD.replace("LX*2~", "LX*3~"))
    assert result.claims == []
    assert any(s[1] == "LX" for s in ack_segments(result, "IK3"))


def test_one_bad_transaction_set_does_not_take_the_good_one_down() -> None:
    lines = GOOD.splitlines()
    st = next(i for i, ln in enumerate(lines) if ln.startswith("ST*"))
    se = next(i for i, ln in enumerate(lines) if ln.startswith("SE*"))
    bad = [ln.replace("0101", "0102").replace("X12-0102", "X12-9999") for ln in lines[st:se + 1]]
    bad = [ln.replace("*UN*8***1", "*XX*8***1") for ln in bad]  # SV103 unit basis code invalid
    text = "\n".join(lines[:se + 1] + bad + lines[se + 1:]).replace("GE*1*101", "GE*2*101") + "\n"
    result = parse(text)
    assert [t.status for t in result.transactions] == ["A", "R"]
    assert [c.claim_id for c in result.claims] == ["X12-0101"]
    assert ack_segments(result, "AK9") == [["AK9", "P", "2", "2", "1"]]


def test_other_delimiters() -> None:
    isa_end = GOOD.index("~")
    isa = GOOD[:isa_end].replace("*", "|")
    isa = isa[:-1] + ">"  # ISA16 component separator
    body = GOOD[isa_end:].replace("*", "|").replace(":", ">")
    result = parse(isa + body)
    assert result.status == "A", result.summary()
    assert result.lines == parse(GOOD).lines
    assert result.claims[0].frequency_code == "1"


def test_the_a2_errata_label_is_accepted() -> None:
    result = parse(GOOD.replace("005010X222A1", "005010X222A2"))
    assert result.status == "A" and len(result.lines) == 2
    assert ack_segments(result, "AK1") == [["AK1", "HC", "101", "005010X222A2"]]


@pytest.mark.parametrize("version", ["004010X098A1", "005010X223A2", "005010X222"])
def test_other_versions_are_rejected(version: str) -> None:
    result = parse(GOOD.replace("005010X222A1", version))
    assert result.error is not None and result.error.code == "UNSUPPORTED_VERSION" and result.claims == []
    ak9 = ack_segments(result, "AK9")[0]
    assert ak9[1] == "R" and "2" in ak9[5:]


def test_a_failure_inside_the_parser_becomes_an_error_object(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(parse837, "_scan_envelope", boom)
    result = parse(GOOD)
    assert result.error is not None and result.error.code == "PARSER_ERROR" and result.claims == []
    assert ack_segments(result, "AK9")[0][1] == "R"


def test_a_pyx12_failure_rejects_rather_than_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(text: str, **kwargs: object) -> None:
        raise gate.ValidatorFailed("pyx12 failed: EngineError: test")

    monkeypatch.setattr(parse837.pyx12_gate, "validate", fail)
    result = parse(GOOD)
    assert result.claims == [] and result.transactions[0].status == "R"


def test_an_x12sdk_failure_rejects_the_claim_at_its_clm(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise TypeError("argument of type 'NoneType' is not iterable")

    monkeypatch.setattr(parse837, "_map_claim", fail)
    result = parse(GOOD)
    assert result.claims == []
    assert ["IK3", "CLM", "18", "2300", "8"] in ack_segments(result, "IK3")


def test_line_level_authorization_and_claim_frequency() -> None:
    text = FIVE_LINES.replace("REF*6R*X12-0501-003~", "REF*G1*PA26-7777~\nREF*6R*X12-0501-003~")
    text = text.replace("SE*53*0105", "SE*54*0105")
    result = parse(text)
    assert result.status == "A", result.summary()
    assert [x["authorization_number"] for x in result.lines] == ["PA26-1001"] * 2 + ["PA26-7777"] + ["PA26-1001"] * 2
    assert result.claims[0].frequency_code == "1"


def test_pyx12_maps_are_cached_without_changing_the_verdict() -> None:
    text = (HERE / "12_eligibility.edi").read_text(encoding="utf-8").replace("*UN*1***1", "*XX*1***1")
    first = gate.validate(text)
    second = gate.validate(text)
    assert first.tree == second.tree and not first.ok
    assert gate._maps  # the map is kept


def test_summary_is_json_ready() -> None:
    import json

    summary = parse(GOOD.replace("SE*32*0101", "SE*31*0101")).summary()
    assert json.loads(json.dumps(summary))["status"] == "R"


def test_a_group_of_another_version_is_rejected_alone() -> None:
    lines = GOOD.rstrip("\n").split("\n")
    gs = next(i for i, ln in enumerate(lines) if ln.startswith("GS*"))
    ge = next(i for i, ln in enumerate(lines) if ln.startswith("GE*"))
    other = [ln.replace("005010X222A1", "005010X223A2").replace("*101*", "*102*").replace("GE*1*101", "GE*1*102")
             for ln in lines[gs:ge + 1]]
    text = "\n".join(lines[:ge + 1] + other + lines[ge + 1:]).replace("IEA*1*", "IEA*2*") + "\n"
    result = parse(text)
    assert result.error is None and result.status == "P"
    assert [g.status for g in result.groups] == ["A", "R"]
    assert [c.claim_id for c in result.claims] == ["X12-0101"]
    ak9 = ack_segments(result, "AK9")
    assert ak9[0] == ["AK9", "A", "1", "1", "1"] and ak9[1][:5] == ["AK9", "R", "1", "1", "0"] and "2" in ak9[1][5:]
