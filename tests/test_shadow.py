"""Monitor Mode over a file: `claims-pipeline shadow` and `adjudicate --rulebook`, run as
subprocesses on the sample data and checked against two independent `adjudicate` runs."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from rules.monitor import deciding_rules
from tests.test_batch import CLI, ROOT, SAMPLE

CANDIDATE = ROOT / "rules" / "rulebook" / "candidates" / "hit-jz-2027-01-01.toml"
REF = SAMPLE / "reference"
CLAIMS = SAMPLE / "claims.jsonl"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def records(run: subprocess.CompletedProcess[str]) -> list[dict]:
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    return {
        "live": records(cli("adjudicate", "--reference", str(REF), str(CLAIMS))),
        "candidate": records(cli("adjudicate", "--reference", str(REF), "--rulebook", str(CANDIDATE), str(CLAIMS))),
        "shadow": records(cli("shadow", "--reference", str(REF), "--candidate", str(CANDIDATE), str(CLAIMS))),
    }


def allowed_total(recs: list[dict]) -> Decimal:
    """What a consumer deduping by (claim_id, line_number, status) adds up."""
    seen = {(r["claim_id"], r["line_number"], r["status"]): Decimal(r["allowed_amount"])
            for r in recs if r["topic"] == "claims.lines.adjudicated"}
    return sum(seen.values(), Decimal("0.00"))


def outcomes(recs: list[dict]) -> dict[tuple, tuple]:
    return {(r["claim_id"], r["line_number"]): (r["status"], r["allowed_amount"], {a["carc"] for a in r["adjustments"]})
            for r in recs if r["topic"] == "claims.lines.adjudicated" and r["status"] != "REVERSED"}


def test_rulebook_option_applies_the_candidate_alone(runs) -> None:
    decided = [r for r in runs["candidate"] if r["topic"] == "claims.lines.adjudicated"]
    assert decided and {r["policy_version"] for r in decided} == {"2027-01-01-jz"}
    assert {r["policy_version"] for r in runs["live"] if r["topic"] == "claims.lines.adjudicated"} == {"HIT-PP-2021-08-26.1"}


def test_shadow_totals_equal_the_difference_of_two_adjudicate_runs(runs) -> None:
    *diffs, last = runs["shadow"]
    summary = last["summary"]
    assert Decimal(summary["allowed_before"]) == allowed_total(runs["live"])
    assert Decimal(summary["allowed_after"]) == allowed_total(runs["candidate"])
    assert Decimal(summary["allowed_after"]) < Decimal(summary["allowed_before"])  # JZ denies lines
    live, cand = outcomes(runs["live"]), outcomes(runs["candidate"])
    changed = {k for k in live if live[k] != cand.get(k)}
    assert changed and summary["changed"] == len(diffs) == len(changed)
    assert {(d["claim_id"], d["line_number"]) for d in diffs} == changed
    assert summary["lines"] >= len(live)


def test_each_difference_carries_both_records_and_the_rules_that_made_it(runs) -> None:
    *diffs, last = runs["shadow"]
    by_rule: dict[str, int] = {}
    for d in diffs:
        assert d["before"]["policy_version"] == "HIT-PP-2021-08-26.1" and d["after"]["policy_version"] == "2027-01-01-jz"
        assert d["rules"] == deciding_rules(d["before"], d["after"]) and d["rules"]
        assert "EDIT-JZ-MISSING" in d["rules"] or "EDIT-JZ-WRONG" in d["rules"] or "EDIT-DUPLICATE" in d["rules"]
        for rule in d["rules"]:
            by_rule[rule] = by_rule.get(rule, 0) + 1
    assert last["summary"]["changed_by_rule"] == dict(sorted(by_rule.items()))


def test_table_for_people_from_the_same_data(runs) -> None:
    run = cli("shadow", "--reference", str(REF), "--candidate", str(CANDIDATE), str(CLAIMS), "--table")
    assert run.returncode == 0, run.stderr
    summary = runs["shadow"][-1]["summary"]
    text = " ".join(run.stdout.split())
    assert f"{summary['changed']} of {summary['lines']} lines changed" in text
    assert f"allowed {summary['allowed_before']} -> {summary['allowed_after']}" in text


@pytest.mark.parametrize("command", ["shadow", "adjudicate"])
def test_a_broken_candidate_is_one_clear_line(tmp_path: Path, command: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(CANDIDATE.read_text().replace("[rules.EDIT-JZ-WRONG]", "[rules.EDIT-JZ-WRONGLY]"))
    option = "--candidate" if command == "shadow" else "--rulebook"
    run = cli(command, "--reference", str(REF), option, str(broken), str(CLAIMS))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == "claims-pipeline: error: broken.toml: rules missing: EDIT-JZ-WRONG"


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_worker_with_a_broken_candidate_stops_at_start_with_one_line(tmp_path: Path, how: str) -> None:
    """`worker --shadow FILE` (or CLAIMS_SHADOW_RULEBOOK) validates the candidate before it
    connects to anything: a broken one is one clear line and exit status 2, never a worker
    running half a policy (no broker is needed to see it)."""
    broken = tmp_path / "broken.toml"
    broken.write_text(CANDIDATE.read_text().replace("[rules.EDIT-JZ-WRONG]", "[rules.EDIT-JZ-WRONGLY]"))
    env = {"CLAIMS_SHADOW_RULEBOOK": str(broken)} if how == "environment" else {}
    args = ("worker", "--shadow", str(broken)) if how == "option" else ("worker",)
    run = cli(*args, env={**env, "CLAIMS_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == "claims-pipeline: error: shadow rulebook broken.toml: rules missing: EDIT-JZ-WRONG"


def test_deciding_rules_names_a_moved_price() -> None:
    before = {"adjustments": [{"rule": "PRICE-CONTRACT-REDUCTION", "amount": "5.00"}]}
    after = {"adjustments": [{"rule": "PRICE-CONTRACT-REDUCTION", "amount": "7.50"}]}
    assert deciding_rules(before, after) == ["PRICE-CONTRACT-REDUCTION"]
    assert deciding_rules(before, {"adjustments": [{"rule": "EDIT-JZ-MISSING", "amount": "9"}]}) == ["EDIT-JZ-MISSING"]
