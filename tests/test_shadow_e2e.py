"""Live Monitor Mode end to end: a worker with a candidate rulebook publishes exactly the
lines the candidate decides differently on `claims.shadow.differences`, and its live
decisions are those batch mode (and so a worker without a shadow) gives."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest

from rules.monitor import ShadowResult, compare_claim
from rules.reference import TABLES, ReferenceData
from rules.rulebook import candidate_path, default_rulebooks, load_single
from contract import topics
from streams.kafka import client
from streams.pipeline import batch
from streams.tools.synthetic import generate
from tests.harness import Pipeline, _key, keyed

pytestmark = pytest.mark.broker

CANDIDATE = candidate_path("hit-jz-2027-01-01.toml")


def batch_with_shadow(lines: list[bytes], reference: dict[str, list[dict]]) -> tuple[list[dict], list[ShadowResult]]:
    """Batch mode with the live path's observer: the oracle for a worker with a shadow."""
    ref = ReferenceData()
    for table, rows in reference.items():
        ref.load(table, [TABLES[table][0].model_validate(r) for r in rows])
    books, candidate = default_rulebooks(), load_single(CANDIDATE)
    shadows: list[ShadowResult] = []

    def observer(work):  # noqa: ANN001, ANN202
        return lambda history, outcome: shadows.append(compare_claim(work, history, outcome.new_decisions, ref, candidate))

    records = list(batch.run_batch(lines, ref, books, observer=observer))
    return records, shadows


def outcome(d: dict) -> tuple:
    return d["status"], d["allowed_amount"], sorted({a["carc"] for a in d["adjustments"]})


def test_worker_with_shadow_publishes_exactly_the_differing_lines(fresh_bootstrap, tmp_path):
    work = generate(300, members=40, seed=21)
    expected, shadows = batch_with_shadow(work.lines, work.reference)
    wanted_diffs = {(d.claim_id, d.line_number): (outcome(d.before.model_dump(mode="json")), outcome(d.after.model_dump(mode="json")), d.rules)
                    for s in shadows for d in s.differences}
    assert wanted_diffs, "the workload must contain lines the candidate decides differently"
    assert sum(s.compared for s in shadows) > len(wanted_diffs)  # and lines it decides alike

    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.env["CLAIMS_SHADOW_RULEBOOK"] = str(CANDIDATE)
    pipe.load_reference(work.reference)
    pipe.submit(work.lines)
    pipe.start()
    wanted = set(keyed(expected))
    names = (*client.OUTPUT_TOPICS, topics.SHADOW_DIFFERENCES.name)

    def done(records: list[dict]) -> bool:
        assert pipe.workers["w1"].poll() is None, f"worker died: see {tmp_path / 'w1.log'}"
        diffs = {(r["claim_id"], r["line_number"]) for r in records if r["topic"] == topics.SHADOW_DIFFERENCES.name}
        return wanted <= {_key(r) for r in records} and diffs >= wanted_diffs.keys()

    try:
        records = asyncio.run(client.collect(fresh_bootstrap, done, 120, names=names))
        # everything published by now, read again: nothing beyond the differing lines
        published = asyncio.run(client.collect(fresh_bootstrap, lambda rs: False, 3, names=(topics.SHADOW_DIFFERENCES.name,)))
        samples = pipe.metrics("w1")
    finally:
        pipe.stop_all()
    live = [r for r in records if r["topic"] != topics.SHADOW_DIFFERENCES.name]
    assert keyed(live) == keyed(expected)
    got = {(r["claim_id"], r["line_number"]): (outcome(r["before"]), outcome(r["after"]), r["rules"]) for r in published}
    assert got == wanted_diffs
    for r in published:
        assert r["candidate_version"] == "2027-01-01-jz" and r["after"]["policy_version"] == "2027-01-01-jz"
        assert r["before"]["policy_version"] == "HIT-PP-2021-08-26.1"
        live_record = next(x for x in live if x["topic"] == topics.ADJUDICATED.name
                           and (x["claim_id"], x["line_number"]) == (r["claim_id"], r["line_number"]))
        assert {k: v for k, v in r["before"].items() if k != "adjudicated_at"} == \
               {k: v for k, v in live_record.items() if k not in ("adjudicated_at", "topic")}
    assert Decimal(sum(Decimal(r["before"]["allowed_amount"]) - Decimal(r["after"]["allowed_amount"]) for r in published)) == \
           sum((s.allowed_live - s.allowed_candidate for s in shadows), Decimal(0))
    # the metrics say the same: lines compared by outcome, changed lines by rule, dollars
    metric = {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}
    compared = sum(s.compared for s in shadows)
    assert metric[("claims_shadow_lines_compared_total", (("outcome", "changed"),))] == len(wanted_diffs)
    assert metric[("claims_shadow_lines_compared_total", (("outcome", "same"),))] == compared - len(wanted_diffs)
    by_rule = Counter(rule for _, _, rules in wanted_diffs.values() for rule in rules)
    assert {labels[0][1]: value for (name, labels), value in metric.items()
            if name == "claims_shadow_lines_changed_total" and value} == by_rule
    live_dollars = sum((max(s.allowed_live, 0) for s in shadows), Decimal(0))  # as the worker counts a claim
    candidate_dollars = sum((max(s.allowed_candidate, 0) for s in shadows), Decimal(0))
    assert metric[("claims_shadow_allowed_dollars_total", (("policy", "live"),))] == pytest.approx(float(live_dollars))
    assert metric[("claims_shadow_allowed_dollars_total", (("policy", "candidate"),))] == pytest.approx(float(candidate_dollars))
    assert metric[("claims_shadow_claims_failed_total", ())] == 0
