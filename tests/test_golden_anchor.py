"""The golden file against expectations written by hand.

`tests/golden/sample_decisions.jsonl` is regenerated from batch mode's own output, and every
end-to-end test uses batch mode as its oracle: an engine bug would pass them all. So each
sample line carries a hand-written expectation next to its definition in
`streams/sample_data/generate.py` (status, allowed amount, CARCs; or the rejection code),
computed from POLICY.md and docs/rulebook.md, and the golden file must agree with it, record
for record: every message sent answered once, the reversals a correction causes, the dead
letters, nothing else.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "sample_decisions.jsonl"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("sample_data_generator", ROOT / "streams" / "sample_data" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GEN = _generator()
RECORDS = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.strip()]


def outcome(record: dict[str, Any]) -> str:
    """A record in the expectations' notation: 'PAID 115.00 45', 'DENIED 31 197',
    'REJECTED NPI', 'REVERSED -145.00', 'PENDED HIGH_DOLLAR 12000.00' (the pend's reason and
    suggested amount; nothing allowed, no adjustments)."""
    if record["topic"] == "claims.lines.rejected":
        return " ".join(["REJECTED", *sorted({r["code"] for r in record["reasons"]})])
    if record["status"] == "PENDED":
        assert record["allowed_amount"] == "0.00" and record["adjustments"] == [] and record["review"] is None, record
        return f"PENDED {record['pend']['reason']} {record['pend']['suggested_amount']}"
    assert record.get("pend") is None, record
    carcs = sorted((a["carc"] for a in record["adjustments"]), key=lambda c: (len(c), c))
    amount = [] if record["status"] == "DENIED" else [record["allowed_amount"]]
    if record["status"] == "DENIED":
        assert record["allowed_amount"] == "0.00", record
    return " ".join([record["status"], *amount, *carcs])


def _sent() -> Counter:
    """How many times each (claim, line number) was sent, and how many raw (DLQ) messages."""
    sent: Counter = Counter()
    for message in GEN.arrival():
        sent[(message["claim_id"], message["line_number"]) if isinstance(message, dict) else "raw"] += 1
    return sent


def expected_records() -> Counter:
    want: Counter = Counter()
    sent = _sent()
    for claim_id, outcomes in GEN.EXPECTED.items():
        for number, expected in enumerate(outcomes, 1):
            times = sent.pop((claim_id, number), 0)
            assert (expected is None) == (times == 0), f"{claim_id} line {number}: expected {expected}, sent {times} times"
            if expected is not None:
                want[(claim_id, number, expected)] += times
    for claim_id, reversed_lines in GEN.EXPECTED_REVERSALS.items():
        for number, expected in enumerate(reversed_lines, 1):
            want[(claim_id, number, expected)] += 1
    raw = sent.pop("raw", 0)
    assert not sent, f"lines sent without an expectation: {sorted(sent)}"
    want[("DLQ", None, None)] = raw
    return want


def test_every_claim_and_line_has_an_expectation():
    assert set(GEN.EXPECTED) == set(GEN.C)
    for claim_id, lines in GEN.C.items():
        assert len(GEN.EXPECTED[claim_id]) >= len(lines), claim_id


def test_golden_file_meets_the_hand_written_expectations():
    got: Counter = Counter()
    for record in RECORDS:
        if record["topic"] == "claims.lines.dlq":
            got[("DLQ", None, None)] += 1
        else:
            got[(record["claim_id"], record["line_number"], outcome(record))] += 1
    want = expected_records()
    missing = sorted((want - got).items())
    extra = sorted((got - want).items())
    assert not missing and not extra, f"golden file differs from the expectations:\n  expected, not there: {missing}\n  there, not expected: {extra}"


def test_expectations_cover_every_status_and_the_arithmetic():
    """The expectations are not a copy of one easy case: every status, denial CARCs of every
    rule the sample data is for, amounts with rounding (10.625 -> 10.63, 88.065 -> 88.07)."""
    written = [o for outcomes in GEN.EXPECTED.values() for o in outcomes if o] + \
        [o for recs in GEN.EXPECTED_REVERSALS.values() for o in recs]
    assert {o.split()[0] for o in written} == {"PAID", "DENIED", "VOIDED", "REJECTED", "REVERSED", "PENDED"}
    assert {o for o in written if o.startswith("PENDED")} == {"PENDED HIGH_DOLLAR 12000.00", "PENDED NOC_REVIEW 825.00"}
    carcs = {c for o in written if o.startswith("DENIED") for c in o.split()[1:]}
    assert carcs == {"4", "16", "18", "27", "31", "107", "197", "198", "204"}
    assert {"PAID 10.63 45", "PAID 88.07 45", "PAID 23.38 45", "PAID 121.50 45"} <= set(written)
