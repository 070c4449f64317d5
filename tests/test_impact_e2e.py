"""Monitor Mode's impact live (issue 26): a worker with a candidate rulebook answers `GET
/v1/shadow/impact` with the tables `shadow --report` computes from the same claims, its
Prometheus series by rule say the same dollars, and a history run over its ledger gives
what a file run over the same claims gives."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest

from rules.rulebook import candidate_path, default_rulebooks, load_single
from contract import topics
from streams.kafka import client
from streams.pipeline.impact import LIVE_DIMENSIONS, Impact
from streams.pipeline.shadow import run_shadow
from streams.tools.synthetic import generate
from tests.harness import _key, batch_expectation, keyed
from tests.api_harness import TOKEN, ApiPipeline, call
from tests.test_impact import _reference, read_csv, untimed
from tests.test_shadow import cli, records

pytestmark = pytest.mark.broker

CANDIDATE = candidate_path("hit-jz-2027-01-01.toml")


def decided_claims_only(lines: list[bytes], reference: dict) -> list[bytes]:
    """The lines of the claims batch mode decides (no front-end rejection, no DLQ bytes):
    the lines a worker compares are its decided ones."""
    expected = batch_expectation(lines, reference)
    rejected = {r.get("claim_id") for r in expected if r["topic"] != topics.ADJUDICATED.name}
    decided = {r["claim_id"] for r in expected if r["topic"] == topics.ADJUDICATED.name} - rejected
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("claim_id") in decided:
            out.append(line)
    return out


def test_live_impact_equals_the_batch_report_and_the_history_run_equals_a_file_run(fresh_bootstrap, tmp_path):
    work = generate(300, members=40, seed=21)
    lines = decided_claims_only(work.lines, work.reference)
    impact = Impact()
    *diffs, last = run_shadow(lines, _reference(work.reference), default_rulebooks(), load_single(CANDIDATE), impact)
    summary = last["summary"]
    assert diffs and summary["changed"] < summary["lines"]

    pipe = ApiPipeline(fresh_bootstrap, tmp_path)
    pipe.env["CLAIMS_SHADOW_RULEBOOK"] = str(CANDIDATE)
    pipe.load_reference(work.reference)
    pipe.submit(lines)
    pipe.start()
    wanted = set(keyed(batch_expectation(lines, work.reference)))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        asyncio.run(client.collect(fresh_bootstrap, lambda rs: wanted <= {_key(r) for r in rs}, 120))
        deadline = time.monotonic() + 30  # the candidate decides after the live answers are out
        while True:
            status, _, answer = call(pipe.url, "GET", "/v1/shadow/impact?by=rule", headers=headers)
            assert status == 200, answer
            if answer["total"]["lines"] >= summary["lines"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        live = {by: call(pipe.url, "GET", f"/v1/shadow/impact?by={by}", headers=headers)[2] for by in LIVE_DIMENSIONS}
        refused = call(pipe.url, "GET", "/v1/shadow/impact?by=member_id", headers=headers)
        unauthorized = call(pipe.url, "GET", "/v1/shadow/impact")[0]
        samples = pipe.metrics("w1")
    finally:
        pipe.stop_all()
    for by in LIVE_DIMENSIONS:
        batch = impact.table(by)
        assert live[by]["rows"] == batch["rows"], by
        assert live[by]["total"] == {**batch["total"]}, by
        assert live[by]["candidate_versions"] == ["2027-01-01-jz"]
    total = live["rule"]["total"]
    assert (total["lines"], total["changed"]) == (summary["lines"], summary["changed"])
    assert (total["allowed_before"], total["allowed_after"]) == (summary["allowed_before"], summary["allowed_after"])
    print(f"\nlive impact by rule: {json.dumps(live['rule']['rows'])}")
    assert refused[0] == 400 and refused[2]["error"]["field"] == "by"
    assert unauthorized == 401

    # Prometheus, by rule only: the dollars of the changed lines, live and candidate
    dollars = {(labels["rule"], labels["policy"]): value for name, labels, value in samples
               if name == "claims_shadow_changed_allowed_dollars_total"}
    npis = {json.loads(x)["provider_npi"] for x in lines} | {json.loads(x)["member_id"] for x in lines}
    assert not {v for _, labels, _ in samples for v in labels.values()} & npis  # no NPI, no member: cardinality
    for row in live["rule"]["rows"]:
        if row["changed"]:
            got = dollars[(row["group"], "candidate")] - dollars[(row["group"], "live")]
            assert got == pytest.approx(float(Decimal(row["difference"])), abs=0.005), row["group"]

    # the history run over the worker's ledger: what a file run over the same claims gives
    common = ("shadow", "--reference", str(tmp_path / "reference"), "--candidate", str(CANDIDATE))
    (tmp_path / "reference").mkdir()
    for table, rows in work.reference.items():
        (tmp_path / "reference" / f"{table}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "claims.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    history = records(cli(*common, "--from-ledger", pipe.ledger_url, "--report", str(tmp_path / "history")))
    from_file = records(cli(*common, str(tmp_path / "claims.jsonl"), "--report", str(tmp_path / "file")))
    assert history[-1] == from_file[-1] == last
    key = lambda d: (d["claim_id"], d["line_number"])  # noqa: E731 - decided order, not file order, across members
    assert sorted(untimed(history[:-1]), key=key) == sorted(untimed(from_file[:-1]), key=key)
    for by in (*LIVE_DIMENSIONS, "service_month"):
        assert read_csv(tmp_path / "history" / f"impact-by-{by}.csv") == read_csv(tmp_path / "file" / f"impact-by-{by}.csv")
