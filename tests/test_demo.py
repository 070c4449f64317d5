"""`claims-pipeline demo`: piped, its decision lines are whole and free of escape codes, and
its check of the stream against batch mode is exact (repeats included)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from streams.demo import comparable, difference

CLI = Path(sys.executable).with_name("claims-pipeline")
RECORD = re.compile(r"^\s*\d+\.\ds (PAID|DENIED|REVERSED|VOIDED|REJECT|DLQ)\s")


def test_the_check_against_batch_mode_is_exact() -> None:
    a = {"topic": "claims.lines.adjudicated", "claim_id": "C1", "line_number": 1, "status": "PAID"}
    b = {**a, "line_number": 2}
    wanted = Counter(comparable(r) for r in [a, a, b])  # line 1 sent twice: answered twice
    assert difference([a, a, b], wanted) == (Counter(), Counter())
    missing, extra = difference([a, b], wanted)
    assert sum(missing.values()) == 1 and not extra  # a repeat left unanswered
    missing, extra = difference([a, a, b, b], wanted)
    assert not missing and sum(extra.values()) == 1  # a whole claim answered again


def test_demo_output_piped_is_plain_and_unwrapped() -> None:
    done = subprocess.run([str(CLI), "demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "\x1b" not in out  # no terminal escape codes when not a terminal
    lines = out.splitlines()
    records = [ln for ln in lines if RECORD.match(ln)]
    total = int(re.search(r"all (\d+) records arrived and match batch mode", out).group(1))
    assert len(records) == total  # one line per record: nothing wrapped onto a second line
    assert any(len(ln) > 80 for ln in records)
    decided = [ln for ln in records if re.match(r"^\s*\d+\.\ds (PAID|DENIED) ", ln)]
    assert decided and all(" allowed " in ln for ln in decided)
