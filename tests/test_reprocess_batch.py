"""Reprocessing in batch mode: reference records interleaved in the input apply from there
on and publish their proposals and automatic adjustments at that point; the offline
`claims-pipeline reprocess` prints the proposals new reference files would make, touching
nothing."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

from streams.ledger.store import Ledger
from streams.pipeline.batch import load_reference_dir, run_batch
from tests.ledger_harness import BOOKS, SAMPLE, line

AUTH = {"authorization_number": "PA26-1001", "member_id": "M1001", "status": "PENDING",
        "procedure_codes": ["S9500", "S9501", "J0696", "J2543", "J1100", "99601", "99602", "S5498"],
        "start_date": "2026-01-01", "end_date": "2026-06-30", "approved_units": None}


def jl(obj) -> bytes:
    return json.dumps(obj).encode()


def ref_record(topic: str, value, key: str | None = None) -> bytes:
    body = {"topic": topic, "value": value}
    if key:
        body["key"] = key
    return jl({"reference": body})


def test_interleaved_reference_records_adjust_mid_file() -> None:
    ref = load_reference_dir(SAMPLE / "reference")
    before = copy.deepcopy(ref.authorizations["PA26-1001"])
    lines = [ref_record("reference.authorizations", AUTH),
             jl(line("L1", 1, 2)), jl(line("L1", 2, 2)),
             ref_record("reference.authorizations", {**AUTH, "status": "APPROVED"}),
             jl(line("L2", 1, 1, service_date="2026-01-06"))]
    out = list(run_batch(lines, ref, BOOKS))
    assert ref.authorizations["PA26-1001"] == before  # the caller's reference data is not changed
    got = [(r["topic"], r.get("claim_id"), r.get("status"), r.get("adjusts")) for r in out]
    assert got[:2] == [("claims.lines.adjudicated", "L1", "DENIED", None)] * 2
    assert got[2:4] == [("claims.reprocess.proposals", "L1", "OPEN", None), ("claims.reprocess.proposals", "L1", "APPROVED", None)]
    assert got[4:8] == [("claims.lines.adjudicated", "L1", "REVERSED", None)] * 2 + [("claims.lines.adjudicated", "L1~A1", "PAID", "L1")] * 2
    assert got[8][1:3] == ("L2", "DENIED")  # a per diem alone on a date without a drug (107)
    assert out[3]["adjustment_claim_id"] == "L1~A1" and out[6]["proposal_id"] == out[3]["proposal_id"]


def test_a_malformed_reference_record_is_a_dead_letter() -> None:
    out = list(run_batch([jl({"reference": {"topic": "reference.nope", "value": {}}})], load_reference_dir(SAMPLE / "reference"), BOOKS))
    assert [r["topic"] for r in out] == ["claims.lines.dlq"]


def test_offline_reprocess_prints_proposals_and_touches_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    list(run_batch([jl(line("L1", 1, 2)), jl(line("L1", 2, 2)),
                    jl(line("L2", 1, 2, service_date="2026-02-10")), jl(line("L2", 2, 2, service_date="2026-02-10"))],
                   load_reference_dir(SAMPLE / "reference"), BOOKS, ledger))
    tables = {t: ledger.count(t) for t in ("decisions", "proposals", "reprocess_index", "reference_changes", "adjustments")}
    ledger.close()
    new = tmp_path / "reference"
    shutil.copytree(SAMPLE / "reference", new)
    with (new / "awp-prices.jsonl").open("a") as f:
        f.write(json.dumps({"ndc": "00143985810", "awp_per_unit": "10.00", "effective_from": "2026-02-01"}) + "\n")
    cmd = [sys.executable, "-m", "streams.cli.main", "reprocess", "--reference", str(new), "--from-ledger", url]
    run = subprocess.run([str(Path(sys.executable).parent / "claims-pipeline"), *cmd[3:]], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    proposals = [json.loads(x) for x in run.stdout.splitlines()]
    assert [(p["claim_id"], p["status"], p["trigger"]["topic"]) for p in proposals] == [("L2", "OPEN", "reference.awp-prices")]
    assert proposals[0]["lines"][0]["line_number"] == 2
    ledger = Ledger(url)
    assert {t: ledger.count(t) for t in tables} == tables
    ledger.close()
    # a window without L2's date of service: nothing
    run = subprocess.run([str(Path(sys.executable).parent / "claims-pipeline"), *cmd[3:], "--until", "2026-01-31"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "", run.stderr
    bad = subprocess.run([str(Path(sys.executable).parent / "claims-pipeline"), *cmd[3:], "--since", "2026-02-01", "--until", "2026-01-01"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is after" in bad.stderr
