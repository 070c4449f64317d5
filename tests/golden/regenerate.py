"""Rewrites sample_decisions.jsonl from batch mode on the sample data, without the time
fields. Review the diff by hand against POLICY.md before keeping it; tests/test_golden_anchor.py
checks the result against the hand-written expectations in streams/sample_data/generate.py.

    .venv/bin/python tests/golden/regenerate.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from streams.demo import timeless  # noqa: E402
SAMPLE = ROOT / "streams" / "sample_data"
GOLDEN = Path(__file__).resolve().parent / "sample_decisions.jsonl"
CLI = Path(sys.executable).with_name("claims-pipeline")


def batch_records() -> list[dict]:
    """The records batch mode prints for the sample data, without the time fields (a pend's
    and a review's included: `streams.demo.timeless`)."""
    out = subprocess.run(
        [str(CLI), "adjudicate", "--reference", str(SAMPLE / "reference"), str(SAMPLE / "claims.jsonl")],
        check=True, capture_output=True, timeout=120,
    ).stdout
    return [timeless(json.loads(line)) for line in out.splitlines()]


def main() -> None:
    records = batch_records()
    GOLDEN.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"{GOLDEN}: {len(records)} records")


if __name__ == "__main__":
    main()
