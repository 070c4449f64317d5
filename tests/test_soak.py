"""`claims-pipeline soak`, short, as CI runs it so that a regression shows (issue 24): one round
on Tansu, at_least_once, two workers, 1,500 lines at 300/s with one worker killed with kill -9
and started again; every line answered as batch mode answers it, units counted once, the table
printed, the figures written, exit 0. The long soaks and their table: docs/architecture.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.broker


def test_a_short_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "soak", "--seconds", "1", "--engine", "tansu",
                          "--lines", "1500", "--rate", "300", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (result,) = orjson.loads(out.read_bytes())
    assert result["fault"] == "kill -9" and result["lines"] > 1400
    assert result["lost"] == result["differ"] == 0 and result["units_ok"]
    # at least once: the killed worker's work since its last commit comes again, at most about
    # one commit interval of the offered lines (300) and a batch (200) per stage that answers
    assert result["repeated"] <= 2 * (300 + 200), result["repeated_keys"]
    assert "kill -9" in run.stdout and "units counted once" in run.stdout  # the table, at 200 columns when piped
    assert "soak: 1 round(s), 0 line(s) lost, 0 answer(s) differing from batch mode, units counted once in every round" in run.stdout


def test_exactly_once_on_tansu_is_refused_in_one_line() -> None:
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "soak", "--engine", "tansu", "--guarantee", "exactly_once"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "exactly_once needs Apache Kafka" in run.stderr, run.stderr
