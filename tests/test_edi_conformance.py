"""X12 conformance (issue 14): no exponent in any decimal, the provider's REF*6R and SV101-7
returned, ISA15, NM1*QC and CLP06 from the 837, and control numbers from the ledger's
sequence (unique per sender across processes, on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from edi import ack277ca, remit835
from edi.parse837 import parse
from edi.validate import validate
from edi.x12 import x12_decimal
from rules.rulebook import default_rulebooks
from streams.ledger.store import Ledger
from streams.pipeline.batch import load_reference_dir, run_batch
from streams.ledger.remittance import build_835, remittance_inputs

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"
NOW = datetime(2026, 3, 20, 10, 0, tzinfo=timezone.utc)
ADJUDICATED = "claims.lines.adjudicated"


def fixture(name: str) -> str:
    return (HERE / f"{name}.edi").read_text(encoding="utf-8")


def adjudicate(lines: list[dict]) -> list[dict]:
    return list(run_batch([orjson.dumps(x) for x in lines], load_reference_dir(HERE / "reference"), default_rulebooks()))


def decisions_of(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "topic"} for r in records if r["topic"] == ADJUDICATED]


def segments(text: str, tag: str) -> list[list[str]]:
    return [s.strip().split("*") for s in text.split("~") if s.strip().startswith(tag + "*")]


def test_x12_decimals_have_no_exponent() -> None:
    assert [x12_decimal(v) for v in ("1000", "1000.00", "30.0", "1E+3", "2.500", "0.0001", "-0")] == [
        "1000", "1000", "30", "1000", "2.5", "0.0001", "0"]


def test_svc05_of_units_with_trailing_zeros_is_plain() -> None:
    text = fixture("01_per_diem_with_drug_paid").replace("SV1*HC:J0696*60.00*UN*8***1~", "SV1*HC:J0696*60.00*UN*1000***1~")
    result = parse(text)
    lines = [{**x, "units": "1000.00"} if x["procedure_code"] == "J0696" else x for x in result.lines]
    lines = [{**x, "units": "30.0"} if x["procedure_code"] == "S9500" else x for x in lines]
    out = remit835.build(lines, decisions_of(adjudicate(lines)), control_number=7, now=NOW)
    assert "E+" not in out and "e+" not in out
    assert [s[5] for s in segments(out, "SVC")] == ["30", "1000"]
    assert validate(out).ok
    # the 277CA's rejected lines carry units too
    rejected = result.claims[0]
    status = ack277ca.ClaimStatus(rejected, accepted=False, reasons=(ack277ca.Reason("SCHEMA", "units"),),
                                  line_reasons={1: (ack277ca.Reason("SCHEMA", "units"),)})
    ca = ack277ca.build(status, control_number=8, now=NOW)
    assert "E+" not in ca and validate(ca).ok


def test_ref_6r_returns_the_line_item_control_number_the_provider_sent() -> None:
    text = fixture("01_per_diem_with_drug_paid").replace("REF*6R*X12-0101-001~", "REF*6R*LICN00017A~")
    result = parse(text)
    assert result.lines[0]["line_item_control_number"] == "LICN00017A"
    records = adjudicate(result.lines)
    out = remit835.build(result.lines, decisions_of(records), control_number=9, now=NOW)
    assert validate(out).ok
    assert [s[2] for s in segments(out, "REF") if s[1] == "6R"] == ["LICN00017A", "X12-0101-002"]
    # a claim sent as JSON (no REF*6R) gets <claim>-<nnn>
    plain = [{k: v for k, v in x.items() if k != "line_item_control_number"} for x in result.lines]
    out = remit835.build(plain, decisions_of(records), control_number=10, now=NOW)
    assert [s[2] for s in segments(out, "REF") if s[1] == "6R"] == ["X12-0101-001", "X12-0101-002"]


def test_svc01_returns_the_sv101_7_description() -> None:
    text = fixture("01_per_diem_with_drug_paid").replace("SV1*HC:J0696*", "SV1*HC:J0696:::::CEFTRIAXONE 250MG*")
    result = parse(text)
    assert result.lines[1]["procedure_description"] == "CEFTRIAXONE 250MG"
    assert result.lines[1]["modifiers"] == []
    out = remit835.build(result.lines, decisions_of(adjudicate(result.lines)), control_number=11, now=NOW)
    assert validate(out).ok
    # SVC01-7 is "not used" in the 835 (pyx12 rejects it): the description comes back in SVC06-7
    assert [s[1:2] + s[6:7] for s in segments(out, "SVC")] == [["HC:S9500"], ["HC:J0696", "HC:J0696:::::CEFTRIAXONE 250MG"]]
    assert remit835.read(out)[0].lines[1].procedure == "J0696"


def test_usage_patient_name_and_claim_filing_indicator_come_from_the_837() -> None:
    text = fixture("11_masshealth_aco").replace("******CI~", "******MC~")
    result = parse(text)
    assert result.usage == "T"
    records = adjudicate(result.lines)
    out = remit835.build(result.lines, decisions_of(records), control_number=12, now=NOW)
    assert validate(out).ok
    assert segments(out, "ISA")[0][15] == "T"
    claim = result.claims[0]
    assert segments(out, "NM1")[0][:5] == ["NM1", "QC", "1", claim.patient_name[0], claim.patient_name[1]]
    assert {s[6] for s in segments(out, "CLP")} == {"MC"}
    ca = ack277ca.build(ack277ca.ClaimStatus(claim, accepted=True), control_number=13, usage=result.usage, now=NOW)
    assert segments(ca, "ISA")[0][15] == "T" and validate(ca).ok
    # CI (commercial) has no 835 code: the payer's default; a claim sent as JSON: defaults, production
    commercial = parse(fixture("11_masshealth_aco"))
    assert {s[6] for s in segments(remit835.build(commercial.lines, decisions_of(records), control_number=14), "CLP")} == {"12"}
    json_lines = [{k: v for k, v in x.items() if k in remit835_contract_fields()} for x in result.lines]
    plain = remit835.build(json_lines, decisions_of(records), control_number=15, now=NOW)
    assert segments(plain, "ISA")[0][15] == "P" and {s[6] for s in segments(plain, "CLP")} == {"12"}


def remit835_contract_fields() -> set[str]:
    from contract.models import ClaimLine

    return set(ClaimLine.model_fields)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_control_numbers_are_a_ledger_sequence_per_sender(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if store == "sqlite" else request.getfixturevalue("postgres_url")
    ledgers = [Ledger(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: [ledgers[i % 4].next_control_number("SYNPLAN01") for _ in range(25)], range(4)))
        numbers = sorted(n for chunk in got for n in chunk)
        assert numbers == list(range(1, 101))  # atomic: no number twice, none skipped
        assert ledgers[0].next_control_number("OTHER") == 1  # one sequence per sender
        ledgers[0].close()
        assert Ledger(url).next_control_number("SYNPLAN01") == 101  # survives a restart
        with ledgers[1].transaction() as q:
            q("UPDATE control_numbers SET last_value = 999999999 WHERE sender = 'OTHER'")
        assert ledgers[1].next_control_number("OTHER") == 1  # ISA13 holds 9 digits: it wraps to 1
    finally:
        for ledger in ledgers:
            ledger.close()


def test_the_agent_and_api_835_take_a_new_control_number_and_what_the_837_said(tmp_path: Path) -> None:
    text = fixture("01_per_diem_with_drug_paid").replace("REF*6R*X12-0101-001~", "REF*6R*LICN00017A~")
    result = parse(text)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        records = list(run_batch([orjson.dumps(x) for x in result.lines], load_reference_dir(HERE / "reference"),
                                 default_rulebooks(), ledger=ledger))
        decided = decisions_of(records)
        first, second = (build_835(decided, *remittance_inputs(ledger, ["X12-0101"])) for _ in range(2))
    finally:
        ledger.close()
    assert segments(first, "ISA")[0][13] != segments(second, "ISA")[0][13]
    assert segments(first, "TRN")[0][2] != segments(second, "TRN")[0][2]
    assert [s[2] for s in segments(first, "REF") if s[1] == "6R"] == ["LICN00017A", "X12-0101-002"]
    assert segments(first, "ISA")[0][15] == "T" and segments(first, "NM1")[0][3] == "SUBSCRIBER"
    assert validate(first).ok


def test_six_parallel_835_commands_never_share_isa13(tmp_path: Path) -> None:
    name = "12_eligibility"
    result = parse(fixture(name))
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in adjudicate(result.lines)))
    url = f"sqlite:///{tmp_path / 'numbers.db'}"
    command = [sys.executable, "-m", "streams.cli.main", "x12", "835", "--decisions", str(decisions),
               "--claims", str(HERE / f"{name}.edi"), "--ledger", url]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e.decode() for _, e in outs]
    isa13 = [segments(o.decode(), "ISA")[0][13] for o, _ in outs]
    trn02 = [s[2] for o, _ in outs for s in segments(o.decode(), "TRN")]
    assert len(set(isa13)) == 6 and len(set(trn02)) == len(trn02)
    assert all(re.fullmatch(r"\d{9}", n) for n in isa13)


def test_835_command_remits_the_claims_of_one_837_from_a_batch_of_several(tmp_path: Path) -> None:
    lines = [x for name in ("11_masshealth_aco", "12_eligibility") for x in parse(fixture(name)).lines]
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in adjudicate(lines)))
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "x12", "835", "--decisions", str(decisions),
                           "--claims", str(HERE / "12_eligibility.edi"), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert [c.claim_id for c in remit835.read(done.stdout.decode())] == ["X12-1201", "X12-1202"]
    assert validate(done.stdout.decode()).ok


def test_every_fixture_835_is_valid_plain_and_numbered_once(tmp_path: Path) -> None:
    """The 835s the agent and the API write for the claims of every X12 fixture (one ledger):
    pyx12-valid, no exponent, no control number twice, REF*6R as the 837 sent it."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    sent: dict[tuple[str, int], str] = {}
    texts = []
    try:
        for path in sorted(HERE.glob("*.edi")):
            result = parse(path.read_text(encoding="utf-8"))
            sent.update({(x["claim_id"], x["line_number"]): x["line_item_control_number"] for x in result.lines})
            records = list(run_batch([orjson.dumps(x) for x in result.lines], load_reference_dir(HERE / "reference"),
                                     default_rulebooks(), ledger=ledger))
            for claim in result.claims:
                mine = [d for d in decisions_of(records) if claim.claim_id in (d["claim_id"], d.get("reversed_by"))]
                if mine:
                    texts.append(build_835(mine, *remittance_inputs(ledger, {d["claim_id"] for d in mine})))
    finally:
        ledger.close()
    assert len(texts) >= 20
    isa13 = [segments(t, "ISA")[0][13] for t in texts]
    trn02 = [s[2] for t in texts for s in segments(t, "TRN")]
    assert len(set(isa13)) == len(isa13) and len(set(trn02)) == len(trn02)
    for text in texts:
        assert "E+" not in text
        report = validate(text)
        assert report.ok, report.errors
        for claim in remit835.read(text):
            for svc in claim.lines:
                assert svc.control_number in {v for (c, _), v in sent.items() if c == claim.claim_id}
