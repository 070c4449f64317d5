"""The worker's Prometheus metrics, end to end: the embedded broker, one worker, the sample
reference data and claims, then `/metrics` scraped over HTTP and parsed with
prometheus_client's own parser. Every counter and histogram must have moved by exactly what
the output topics show.

One pipeline run per module (the metrics are process-wide counters of that one worker), read
by many small tests, so one wrong metric does not hide the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract import topics
from streams.kafka import client
from streams.tools.demo import comparable
from tests.harness import Pipeline, batch_expectation, sample_lines, sample_reference
from tests.probes import http_get, wait_for

pytestmark = pytest.mark.broker

SAMPLES = Path(__file__).resolve().parents[1] / "streams" / "sample_data"
STAGES_WITH_WORK = ("intake", "enrich", "adjudicate")


# --- helpers shared with tests/test_prometheus_scrape.py ----------------------------------


@dataclass(frozen=True)
class Sample:
    """One parsed sample (a `_bucket`, `_count`, `_total`, ... line of the exposition)."""

    name: str
    labels: dict[str, str]
    value: float


class Scrape(list):
    """The samples of one /metrics response (a short repr keeps assertion messages legible)."""

    def __repr__(self) -> str:
        return f"<scrape: {len(self)} samples>"


def parse(text: str) -> Scrape:
    return Scrape(Sample(s.name, dict(s.labels), s.value)
                  for family in text_string_to_metric_families(text) for s in family.samples)


def scrape(port: int) -> Scrape:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text[:500]
    return parse(text)


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def by(samples: list[Sample], name: str, *keys: str) -> Counter:
    """{label values: value} of one metric, zero-valued series left out."""
    out: Counter = Counter()
    for s in samples:
        if s.name == name and s.value:
            out[tuple(s.labels[k] for k in keys) if len(keys) > 1 else s.labels[keys[0]]] += s.value
    return out


def output_key(record: dict[str, Any]) -> tuple:
    """(topic, claim, line), or a DLQ record's bytes: what every output is counted by."""
    if record["topic"] == topics.DLQ.name:
        return comparable(record)
    return (record["topic"], record.get("claim_id"), record.get("line_number"))


def collect_outputs(pipe: Pipeline, expected: list[dict], timeout: float = 60) -> list[dict[str, Any]]:
    """Read the output topics until an output arrived for every output batch mode gives,
    repeats included. Matched by (topic, claim, line) only: `Pipeline.collect` cannot be used
    (its `keyed` rejects the sample data's two different DUPLICATE_LINE_NUMBER rejections of
    one line number), and the contents are test_pipeline_e2e's business, not this file's."""
    wanted = Counter(output_key(r) for r in expected)

    def done(records: list[dict]) -> bool:
        for name, proc in pipe.workers.items():
            assert proc.poll() is None, f"worker {name} died: see {pipe.workdir / (name + '.log')}"
        return not wanted - Counter(output_key(r) for r in records)

    records = asyncio.run(client.collect(pipe.bootstrap, done, timeout))
    missing = wanted - Counter(output_key(r) for r in records)
    assert not missing, f"no output in {timeout:.0f}s for {sorted(missing)[:5]}"
    return records


def read_all_outputs(bootstrap: str, quiet_for: float = 1.5, timeout: float = 20) -> list[dict[str, Any]]:
    """Every record on the output topics: read from the beginning until nothing new came
    for `quiet_for` seconds."""
    state = {"n": -1, "since": time.monotonic()}

    def done(records: list[dict]) -> bool:
        if len(records) != state["n"]:
            state["n"], state["since"] = len(records), time.monotonic()
        return bool(records) and time.monotonic() - state["since"] >= quiet_for

    return asyncio.run(client.collect(bootstrap, done, timeout))


def output_count(samples: list[Sample]) -> float:
    return sum(total(samples, "claims_stage_lines_out_total", outcome=o) for o in ("adjudicated", "rejected", "dlq"))


def settled(port: int, submitted: int, quiet_for: float = 2.0, timeout: float = 30) -> list[Sample]:
    """Scrape until intake consumed every submitted message and the output counters stopped
    moving for `quiet_for` seconds; the last scrape."""
    last: dict[str, Any] = {"n": None, "since": time.monotonic(), "samples": []}

    def check() -> bool:
        samples = scrape(port)
        n = (total(samples, "claims_stage_lines_in_total", stage="intake"), output_count(samples))
        if n != last["n"]:
            last.update(n=n, since=time.monotonic())
        last["samples"] = samples
        return n[0] >= submitted and time.monotonic() - last["since"] >= quiet_for

    wait_for(check, timeout, "the worker's counters to settle")
    return last["samples"]


# --- the run ----------------------------------------------------------------------------


@dataclass
class Run:
    port: int
    lines: list[bytes] = field(repr=False)
    reference: dict[str, list[dict]] = field(repr=False)
    first: list[Sample] = field(repr=False)  # the last settling scrape, before anyone asked /readyz
    records: list[dict[str, Any]] = field(repr=False)
    final: list[Sample] = field(repr=False)  # scraped after the records were read
    started: float = 0.0
    by_topic: dict[str, list[dict]] = field(default_factory=dict, repr=False)


@pytest.fixture(scope="module")
def run(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One run on a broker of the module's own (the exact counts need a broker holding no
    other test's messages; $CLAIMS_TEST_BROKER shares topics, so they cannot hold there)."""
    if os.environ.get("CLAIMS_TEST_BROKER"):
        pytest.skip("exact metric counts need a broker of their own; $CLAIMS_TEST_BROKER shares topics")
    tmp = tmp_path_factory.mktemp("metrics-e2e")
    lines, reference = sample_lines(), sample_reference()
    expected = batch_expectation(lines, reference)
    pipe = Pipeline(module_bootstrap, tmp)
    started = time.time()
    pipe.load_reference(reference)
    pipe.submit(lines)
    pipe.start()
    try:
        port = pipe.web_port()
        collect_outputs(pipe, expected)
        first = settled(port, len(lines))
        records = read_all_outputs(module_bootstrap)
        final = scrape(port)
        result = Run(port, lines, reference, first, records, final, started)
        for r in records:
            result.by_topic.setdefault(r["topic"], []).append(r)
        yield result
    finally:
        pipe.stop_all()


# --- counters -----------------------------------------------------------------------------


def test_outputs_were_read_after_the_counters_settled(run):
    """Guards the comparisons below: what was read is what the worker counted as sent."""
    assert len(run.records) == output_count(run.final) == output_count(run.first)


def test_intake_lines_in_equals_submitted_messages(run):
    assert total(run.final, "claims_stage_lines_in_total", stage="intake") == len(run.lines) == 151


def test_decisions_by_status_and_carc_match_the_published_decisions(run):
    decisions = run.by_topic[topics.ADJUDICATED.name]
    expected = Counter((d["status"], d["adjustments"][0]["carc"] if d["adjustments"] else "none") for d in decisions)
    assert {k for k, _ in expected} == {"PAID", "DENIED", "REVERSED", "VOIDED", "PENDED"}
    assert by(run.final, "claims_decisions_total", "status", "carc") == expected


def test_rejections_by_reason_match_the_published_rejections(run):
    rejections = run.by_topic[topics.REJECTED.name]
    expected = Counter(reason["code"] for r in rejections for reason in r["reasons"])
    assert "INCOMPLETE" in expected  # the expiry stage's rejections are counted too
    assert by(run.final, "claims_rejections_total", "reason") == expected


def test_reversals_and_rejected_corrections_are_counted(run):
    """The sample's replacement and void reverse their originals; three corrections fail the
    check of the claim they name."""
    decisions = run.by_topic[topics.ADJUDICATED.name]
    reversed_lines = sum(d["status"] == "REVERSED" for d in decisions)
    assert reversed_lines and total(run.final, "claims_reversals_total") == reversed_lines
    assert set(by(run.final, "claims_reversals_total", "kind")) == {"replacement", "void"}
    rejected = Counter(reason["code"] for r in run.by_topic[topics.REJECTED.name] for reason in r["reasons"]
                       if reason["code"].startswith("ORIGINAL_") and reason["code"] != "ORIGINAL_CLAIM_ID")
    assert len(rejected) == 3
    assert by(run.final, "claims_corrections_rejected_total", "reason") == rejected


def test_dlq_messages_match_the_dlq_records(run):
    dead = run.by_topic[topics.DLQ.name]
    assert len(dead) == 3
    assert total(run.final, "claims_dlq_messages_total") == len(dead)
    assert by(run.final, "claims_dlq_messages_total", "source_topic") == Counter(r["headers"]["source-topic"] for r in dead)
    assert total(run.final, "claims_stage_lines_out_total", outcome="dlq") == len(dead)


def test_lines_out_by_outcome_match_the_output_topics(run):
    assert total(run.final, "claims_stage_lines_out_total", outcome="adjudicated") == len(run.by_topic[topics.ADJUDICATED.name])
    assert total(run.final, "claims_stage_lines_out_total", outcome="rejected") == len(run.by_topic[topics.REJECTED.name])
    # internal hand-offs: every line intake forwards is forwarded by enrich (and price) too
    # (nothing in the sample data makes that stage dead-letter a claim)
    forwarded = [total(run.final, "claims_stage_lines_out_total", stage=s, outcome="forwarded") for s in ("intake", "enrich")]
    assert forwarded[0] > 0 and len(set(forwarded)) == 1, forwarded
    # decisions come from adjudicate, plus the stored decisions intake replays for resubmitted
    # lines; a claim assembled again (a retry of a line arrived before its claim was decided)
    # is published again by adjudicate with its stored decisions, so repeats come from both
    decisions = run.by_topic[topics.ADJUDICATED.name]
    from_adjudicate = total(run.final, "claims_stage_lines_out_total", stage="adjudicate", outcome="adjudicated")
    from_intake = total(run.final, "claims_stage_lines_out_total", stage="intake", outcome="adjudicated")
    assert from_adjudicate + from_intake == len(decisions)
    assert from_adjudicate >= len({(d["claim_id"], d["line_number"]) for d in decisions})


def test_internal_stages_count_the_lines_they_receive(run):
    for stage, previous in (("enrich", "intake"), ("adjudicate", "enrich")):
        assert total(run.final, "claims_stage_lines_in_total", stage=stage) == \
            total(run.final, "claims_stage_lines_out_total", stage=previous, outcome="forwarded"), stage


def test_stage_labels_are_the_declared_stages(run):
    from streams.worker import metrics

    stages = {s.labels["stage"] for s in run.final if "stage" in s.labels}
    assert stages - {"all"} <= set(metrics.STAGES)


def test_offset_commits_are_counted(run):
    assert wait_for(lambda: total(scrape(run.port), "claims_offset_commits_total", stage="all") > 0,
                    15, "an offset commit")


# --- histograms ----------------------------------------------------------------------------


def test_end_to_end_latency_observed_once_per_decision_of_the_adjudicate_stage(run):
    decisions = run.by_topic[topics.ADJUDICATED.name]
    count = total(run.final, "claims_end_to_end_latency_seconds_count")
    assert count == total(run.final, "claims_stage_lines_out_total", stage="adjudicate", outcome="adjudicated")
    # every decided line observed at least once; only intake's replays are not observed
    assert len({(d["claim_id"], d["line_number"]) for d in decisions}) <= count <= len(decisions)
    # every line was submitted after `started` and decided before the scrape
    elapsed = time.time() - run.started
    assert 0 < total(run.final, "claims_end_to_end_latency_seconds_sum") <= count * elapsed
    assert total(run.final, "claims_end_to_end_latency_seconds_bucket", le="+Inf") == count


def test_histogram_buckets_are_cumulative_and_end_at_count(run):
    for name in ("claims_end_to_end_latency_seconds", "claims_stage_processing_seconds", "claims_ledger_transaction_seconds"):
        series: dict[tuple, list[tuple[float, float]]] = {}
        for s in run.final:
            if s.name == f"{name}_bucket":
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                series.setdefault(key, []).append((float(s.labels["le"]), s.value))
        assert series, name
        for key, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            assert values == sorted(values), (name, key)
            assert values[-1] == total(run.final, f"{name}_count", **dict(key)), (name, key)


@pytest.mark.parametrize("stage", STAGES_WITH_WORK)
def test_stage_processing_time_observed(run, stage):
    count = total(run.final, "claims_stage_processing_seconds_count", stage=stage)
    assert count > 0
    # one observation per batch taken, each batch at least one message
    assert count <= total(run.final, "claims_stage_lines_in_total", stage=stage)
    assert total(run.final, "claims_stage_processing_seconds_sum", stage=stage) > 0


def test_ledger_transactions_timed(run):
    assert total(run.final, "claims_ledger_transaction_seconds_count") > 0
    operations = set(by(run.final, "claims_ledger_transaction_seconds_count", "operation"))
    assert operations, "no operation label"


# --- gauges -------------------------------------------------------------------------------


def test_reference_records_equal_the_sample_files(run):
    assert by(run.final, "claims_reference_records", "table") == {t: len(rows) for t, rows in run.reference.items()}
    assert len(run.reference) == 6


def test_reference_update_time_is_set_for_every_table(run):
    stamps = by(run.final, "claims_reference_last_update_timestamp_seconds", "table")
    assert set(stamps) == set(run.reference)
    assert all(run.started - 5 <= t <= time.time() for t in stamps.values()), stamps


def test_consumer_lag_of_the_submitted_topic_drops_to_zero(run):
    def lag() -> dict | None:
        series = {s.labels["partition"]: s.value for s in scrape(run.port)
                  if s.name == "claims_consumer_lag_messages" and s.labels["topic"] == topics.SUBMITTED.name}
        return series if series and not any(series.values()) else None

    series = wait_for(lag, 20, "claims_consumer_lag_messages{topic=claims.lines.submitted} to be 0")
    assert set(series) == {"0", "1", "2", "3"}  # Pipeline's 4 partitions, all owned by the one worker


def test_no_claim_waits_for_assembly_at_the_end(run):
    assert wait_for(lambda: [s for s in scrape(run.port) if s.name == "claims_assembly_pending_claims" and s.value == 0],
                    15, "claims_assembly_pending_claims == 0")


def test_worker_ready_gauge_is_1_without_anyone_asking_readyz(run):
    assert total(run.first, "claims_worker_ready") == 1


def test_readyz_200_and_then_worker_ready_1(run):
    status, body = http_get(f"http://127.0.0.1:{run.port}/readyz")
    assert status == 200, body
    assert json.loads(body)["ready"] is True
    assert total(scrape(run.port), "claims_worker_ready") == 1
    assert http_get(f"http://127.0.0.1:{run.port}/healthz")[0] == 200


def test_worker_info(run):
    info = [s for s in run.final if s.name == "claims_worker_info"]
    assert len(info) == 1 and info[0].value == 1 and info[0].labels.get("policy_versions"), info


# --- bounded labels -------------------------------------------------------------------------


def _identifiers(value: Any, key: str = "") -> Iterator[str]:
    """Every claim id, member id, NPI and NDC in the sample data (NDCs also without hyphens)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _identifiers(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _identifiers(v, key)
    elif isinstance(value, str) and value and (key in ("claim_id", "member_id") or "npi" in key or "ndc" in key):
        yield value
        yield value.replace("-", "")


def test_no_label_value_is_a_claim_member_npi_or_ndc(run):
    ids: set[str] = set()
    for line in run.lines:
        with contextlib.suppress(ValueError):
            ids |= set(_identifiers(json.loads(line)))
    for rows in run.reference.values():
        ids |= set(_identifiers(rows))
    ids |= set(_identifiers(run.records))  # normalized forms too (ndc11)
    assert {"C26-0001", "M1001", "1245678903"} <= ids and any(len(i) == 11 and i.isdigit() for i in ids)
    leaked = {(s.name, k, v) for s in run.final for k, v in s.labels.items() if v in ids}
    assert not leaked
    # and the label sets stay small
    for name in ("claims_decisions_total", "claims_rejections_total", "claims_dlq_messages_total"):
        assert len([s for s in run.final if s.name == name]) <= 40, name
    assert not any(math.isnan(s.value) for s in run.final if s.name.startswith("claims_"))
