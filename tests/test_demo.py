"""`claims-pipeline demo`: piped, its decision lines are whole and free of escape codes, and
its check of the stream against batch mode is exact (repeats included); the sample's pended
lines appear, and a reviewer pays one through the review API, its PAID record checked
against batch mode's PENDED record with the same review applied."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from rules.rulebook import default_rulebooks
from streams.tools.demo import REVIEW_DECISION, REVIEWER, SAMPLES, _reviewed, comparable, difference, timeless
from streams.pipeline.batch import load_reference_dir, run_batch

CLI = Path(sys.executable).with_name("claims-pipeline")
RECORD = re.compile(r"^\s*\d+\.\ds (PAID|DENIED|PENDED|REVERSED|VOIDED|REJECT|DLQ)\s")


def test_the_check_against_batch_mode_is_exact() -> None:
    a = {"topic": "claims.lines.adjudicated", "claim_id": "C1", "line_number": 1, "status": "PAID"}
    b = {**a, "line_number": 2}
    wanted = Counter(comparable(r) for r in [a, a, b])  # line 1 sent twice: answered twice
    assert difference([a, a, b], wanted) == (Counter(), Counter())
    missing, extra = difference([a, b], wanted)
    assert sum(missing.values()) == 1 and not extra  # a repeat left unanswered
    missing, extra = difference([a, a, b, b], wanted)
    assert not missing and sum(extra.values()) == 1  # a whole claim answered again


def test_times_inside_a_record_are_not_compared() -> None:
    a = {"topic": "claims.lines.adjudicated", "claim_id": "C1", "line_number": 1, "status": "PENDED",
         "adjudicated_at": "2026-12-07T12:00:00Z", "pend": {"reason": "HIGH_DOLLAR", "pended_at": "2026-12-07T12:00:00Z"},
         "review": None}
    b = {**a, "adjudicated_at": "2026-12-07T13:00:00Z", "pend": {**a["pend"], "pended_at": "2026-12-07T13:00:00Z"}}
    assert comparable(a) == comparable(b) and timeless(a)["pend"] == {"reason": "HIGH_DOLLAR"}
    assert comparable(a) != comparable({**b, "pend": {**b["pend"], "reason": "NOC_REVIEW"}})
    assert a["pend"]["pended_at"] == "2026-12-07T12:00:00Z"  # a copy: the record itself is untouched


def test_the_review_applied_to_batch_modes_pended_record() -> None:
    """The demo's second check: batch mode's PENDED record of C26-0111 line 1, with the
    demo's review applied, is a PAID record at the amount the rules computed."""
    lines = [ln for ln in (SAMPLES / "claims.jsonl").read_bytes().splitlines() if ln.strip()]
    before = list(run_batch(lines, load_reference_dir(SAMPLES / "reference"), default_rulebooks()))
    paid = _reviewed(before, lines, ("C26-0111", 1), "2026-12-07T12:00:00+00:00")
    assert paid["status"] == "PAID" and paid["allowed_amount"] == "12000.00" and paid["adjustments"] == []
    assert paid["pend"] is None and paid["review"]["reviewer"] == REVIEWER and paid["review"]["note"] == REVIEW_DECISION["note"]
    pended = next(r for r in before if r.get("claim_id") == "C26-0111" and r["line_number"] == 1)
    assert paid["pricing"] == pended["pricing"] and pended["status"] == "PENDED"


def test_demo_output_piped_is_plain_and_unwrapped() -> None:
    done = subprocess.run([str(CLI), "demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "\x1b" not in out  # no terminal escape codes when not a terminal
    lines = out.splitlines()
    records = [ln for ln in lines if RECORD.match(ln)]
    total = int(re.search(r"all (\d+) records arrived and match batch mode", out).group(1))
    assert len(records) == total + 1  # one line per record (and the reviewed line's): nothing wrapped
    assert any(len(ln) > 80 for ln in records)
    decided = [ln for ln in records if re.match(r"^\s*\d+\.\ds (PAID|DENIED) ", ln)]
    assert decided and all(" allowed " in ln for ln in decided)
    # manual review: the two sample lines pended, one paid through the API, its record arrived
    pended = [ln for ln in records if re.match(r"^\s*\d+\.\ds PENDED ", ln)]
    assert len(pended) == 2 and any("C26-0111/1" in ln and "HIGH_DOLLAR -> PAYMENT_INTEGRITY queue" in ln for ln in pended)
    assert any("C26-0110/1" in ln and "NOC_REVIEW -> CLINICAL queue" in ln for ln in pended)
    assert "manual review: 2 lines wait (GET /v1/reviews, oldest first)" in out
    assert re.search(r"POST /v1/reviews/C26-0111/1 .* -> 200 PAID 12000\.00", out)
    assert records[-1].split()[1:3] == ["PAID", "C26-0111/1"] and f"PAY by reviewer {REVIEWER}" in records[-1]
    assert "matches batch mode's PENDED record with the same review applied" in out
    assert "1 line still waits for a reviewer" in out
