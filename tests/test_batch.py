"""Batch mode, `claims-pipeline adjudicate --reference DIR FILE`, run as a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from streams.tools.demo import timeless

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "streams" / "sample_data"
GOLDEN = ROOT / "tests" / "golden" / "sample_decisions.jsonl"
CLI = Path(sys.executable).with_name("claims-pipeline")
TOPICS = {"claims.lines.adjudicated", "claims.lines.rejected", "claims.lines.dlq"}


def adjudicate(reference: Path, claims: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "adjudicate", "--reference", str(reference), str(claims)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def sample_run() -> subprocess.CompletedProcess[str]:
    return adjudicate(SAMPLE / "reference", SAMPLE / "claims.jsonl")


def test_sample_data_gives_the_golden_decisions(sample_run: subprocess.CompletedProcess[str]) -> None:
    assert sample_run.returncode == 0, sample_run.stderr
    assert sample_run.stderr == ""
    records = [timeless(json.loads(line)) for line in sample_run.stdout.splitlines()]
    golden = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(golden)
    for got, want in zip(records, golden, strict=True):
        assert got == want


def test_output_records_are_as_published(sample_run: subprocess.CompletedProcess[str]) -> None:
    records = [json.loads(line) for line in sample_run.stdout.splitlines()]
    assert {r["topic"] for r in records} == TOPICS
    for r in records:
        if r["topic"] == "claims.lines.adjudicated":
            assert datetime.fromisoformat(r["adjudicated_at"]).tzinfo is not None
            assert r["allowed_amount"].count(".") == 1 and len(r["allowed_amount"].split(".")[1]) == 2
        elif r["topic"] == "claims.lines.rejected":
            assert datetime.fromisoformat(r["rejected_at"]).tzinfo is not None
            assert r["reasons"] and isinstance(r["original"], dict)
        else:
            assert set(r) == {"topic", "error", "raw"}


def test_golden_covers_the_rulebook_and_every_rejection_code() -> None:
    """The sample keeps its promise: every rule denies somewhere and every front-end code occurs."""
    from contract.codes import REJECTION_CODES
    from rules.rulebook import ENGINE_RULES

    records = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    denied = {a["rule"] for r in records if r.get("status") == "DENIED" for a in r["adjustments"]}
    paid_rules = {a["rule"] for r in records if r.get("status") == "PAID" for a in r["adjustments"]}
    assert denied | paid_rules == ENGINE_RULES
    assert paid_rules == {"PRICE-CONTRACT-REDUCTION"}
    codes = {reason["code"] for r in records if r["topic"] == "claims.lines.rejected" for reason in r["reasons"]}
    # CLAIM_ID (a submitted claim id with '~') came after the golden sample, which stays as
    # reviewed; tests/test_frontend.py covers it
    assert codes == set(REJECTION_CODES) - {"CLAIM_ID"}
    statuses = {r["status"] for r in records if r["topic"] == "claims.lines.adjudicated"}
    assert statuses == {"PAID", "DENIED", "REVERSED", "VOIDED", "PENDED"}
    assert sum(r["topic"] == "claims.lines.dlq" for r in records) == 3
    # a retry is answered with the same decision
    keys = [(r["claim_id"], r["line_number"], r["status"]) for r in records if r["topic"] == "claims.lines.adjudicated"]
    repeats = {k for k in keys if keys.count(k) > 1}
    assert repeats
    for key in repeats:
        same = [r for r in records if r["topic"] == "claims.lines.adjudicated"
                and (r["claim_id"], r["line_number"], r["status"]) == key]
        assert all(r == same[0] for r in same)


def test_sample_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    """The committed files are exactly the generator's (deterministic) output."""
    copy = tmp_path / "sample_data"
    shutil.copytree(SAMPLE, copy, ignore=shutil.ignore_patterns("*.jsonl", "__pycache__"))
    subprocess.run([sys.executable, str(copy / "generate.py")], check=True, capture_output=True, timeout=60)
    for path in [*SAMPLE.glob("*.jsonl"), *SAMPLE.glob("reference/*.jsonl")]:
        assert (copy / path.relative_to(SAMPLE)).read_bytes() == path.read_bytes(), path.name


def test_empty_claims_file_prints_nothing(tmp_path: Path) -> None:
    claims = tmp_path / "claims.jsonl"
    claims.write_text("\n\n")
    out = adjudicate(SAMPLE / "reference", claims)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_missing_reference_files_mean_no_records(tmp_path: Path) -> None:
    claims = tmp_path / "claims.jsonl"
    claims.write_text(SAMPLE.joinpath("claims.jsonl").read_text().splitlines()[0] + "\n")
    (tmp_path / "empty").mkdir()
    out = adjudicate(tmp_path / "empty", claims)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["topic"] == "claims.lines.rejected"  # one line of five: incomplete at the end
    assert record["reasons"][0]["code"] == "INCOMPLETE"


def _reference_copy(tmp_path: Path) -> Path:
    ref = tmp_path / "reference"
    shutil.copytree(SAMPLE / "reference", ref)
    return ref


def _one_clean_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("claims-pipeline: error: ")
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(("table", "text", "needles"), [
    ("members", "this is not json\n", ["members.jsonl:9"]),
    ("members", '[1, 2]\n', ["members.jsonl:9"]),
    ("drugs", '{"ndc": "0143985810", "billing_unit": "UN", "package_type": "SINGLE_USE"}\n', ["drugs.jsonl:10", "ndc"]),
    ("authorizations", '{"authorization_number": "PA-X", "member_id": "M1", "status": "MAYBE", "procedure_codes": [], '
                       '"start_date": "2026-01-01", "end_date": "2026-12-31"}\n', ["authorizations.jsonl:13", "status"]),
    ("awp-prices", '{"ndc": "00143985810", "awp_per_unit": "NaN", "effective_from": "2026-01-01"}\n', ["awp-prices.jsonl:11", "awp_per_unit"]),
    ("fee-schedule", '{"procedure_code": "S9500", "rate": "12.00", "effective_from": "01/01/2026"}\n', ["fee-schedule.jsonl:14", "effective_from"]),
    ("provider-contracts", '{"provider_npi": "1245678903", "awp_discount_pct": "150"}\n', ["provider-contracts.jsonl:3", "awp_discount_pct"]),
])
def test_bad_reference_record_is_one_line_on_stderr(tmp_path: Path, table: str, text: str, needles: list[str]) -> None:
    ref = _reference_copy(tmp_path)
    with (ref / f"{table}.jsonl").open("a") as f:
        f.write(text)
    _one_clean_error(adjudicate(ref, SAMPLE / "claims.jsonl"), *needles)


def test_bad_reference_file_is_one_line_on_stderr(tmp_path: Path) -> None:
    ref = _reference_copy(tmp_path)
    (ref / "fee-schedule.jsonl").write_bytes(b'\xff\xfe{"procedure_code": "S9500"}\n')
    _one_clean_error(adjudicate(ref, SAMPLE / "claims.jsonl"), "fee-schedule.jsonl", "UTF-8")
    (ref / "fee-schedule.jsonl").unlink()
    (ref / "fee-schedule.jsonl").mkdir()
    _one_clean_error(adjudicate(ref, SAMPLE / "claims.jsonl"), "fee-schedule.jsonl")


def test_missing_reference_directory_is_one_line_on_stderr(tmp_path: Path) -> None:
    _one_clean_error(adjudicate(tmp_path / "nowhere", SAMPLE / "claims.jsonl"), "nowhere")


def test_missing_claims_file_is_one_line_on_stderr(tmp_path: Path) -> None:
    _one_clean_error(adjudicate(SAMPLE / "reference", tmp_path / "missing.jsonl"), "missing.jsonl")
    _one_clean_error(adjudicate(SAMPLE / "reference", tmp_path), str(tmp_path))


def test_undecodable_claim_lines_go_to_the_dlq(tmp_path: Path) -> None:
    claims = tmp_path / "claims.jsonl"
    claims.write_bytes(b'\xff\xfe not utf-8\n[1]\n{"claim_id": "C1", "line_number": 1}\n')
    out = adjudicate(SAMPLE / "reference", claims)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["topic"] for r in records] == ["claims.lines.dlq", "claims.lines.dlq", "claims.lines.rejected"]
    assert records[2]["claim_id"] == "C1" and records[2]["reasons"][0]["code"] == "SCHEMA"
