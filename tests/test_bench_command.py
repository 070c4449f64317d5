"""`claims-pipeline bench` end to end, small: the command users run to measure the pipeline
prints its figures and writes them as JSON, every line answered; here with two workers on a
PostgreSQL ledger (`--ledger`), the shape SQLite's single writer limits (docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.ledger.store import Ledger
from contract.models import ClaimLine
from tests.ledger_harness import line

pytestmark = pytest.mark.broker


def test_bench_with_two_workers_on_postgresql_answers_every_line(postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "bench", "--lines", "400", "--workers", "2", "--no-baseline",
                          "--ledger", postgres_url, "--timeout", "120", "--idle-s", "2", "--wait-trips", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    figures = orjson.loads(out.read_bytes())
    assert figures["ledger"] == "postgresql" and figures["workers"] == 2
    assert figures["pipeline"]["unanswered"] == 0 and figures["pipeline"]["lines"] > 300
    assert figures["pipeline"]["lines_per_s"] > 0 and figures["pipeline"]["worker_cpu_ms_per_line"] > 0
    assert "postgresql" in run.stdout and "lines_per_s" in run.stdout
    assert figures["wait"]["round_trips"] == 2 and figures["wait_idle"]["round_trips"] == 1  # --wait-trips 2
    # idle CPU per process (both workers and the broker), before the load and after it
    assert {"worker 1", "worker 2", "broker"} <= figures["idle_before"].keys() == figures["idle_after"].keys()
    assert all(0 <= pct < 200 for pct in (*figures["idle_before"].values(), *figures["idle_after"].values()))


def test_bench_refuses_a_ledger_that_already_holds_claims(postgres_url: str, tmp_path: Path) -> None:
    Ledger(postgres_url).accept(ClaimLine.model_validate(line("B", 1, 2)), line("B", 1, 2), datetime.now(UTC))
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "bench", "--lines", "50", "--no-baseline", "--ledger", postgres_url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "already holds claims" in run.stderr, run.stderr


def test_bench_compares_the_ledgers_side_by_side(postgres_url: str, tmp_path: Path) -> None:
    """`--compare-ledgers`: the same workload on a fresh SQLite ledger, then on the PostgreSQL
    one, back to back in one command; both tables, then the two side by side (issue 25)."""
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "bench", "--lines", "300", "--no-baseline", "--idle-s", "0",
                          "--ledger", postgres_url, "--compare-ledgers", "--timeout", "120", "--wait-trips", "0", "--json", str(out)],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    sqlite, postgres = orjson.loads(out.read_bytes())
    assert (sqlite["ledger"], postgres["ledger"]) == ("sqlite", "postgresql")
    assert sqlite["pipeline"]["unanswered"] == postgres["pipeline"]["unanswered"] == 0
    assert sqlite["pipeline"]["lines"] == postgres["pipeline"]["lines"] > 200
    assert "wait" not in sqlite and "wait" not in postgres  # --wait-trips 0 skips the single claims
    assert "postgresql / sqlite" in run.stdout and "issue 25's targets" in run.stdout


def test_bench_compare_ledgers_needs_a_postgresql_ledger() -> None:
    run = subprocess.run([sys.executable, "-m", "streams.cli.main", "bench", "--compare-ledgers"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "--compare-ledgers needs --ledger" in run.stderr, run.stderr
