"""End to end on the real broker: claim lines in through `claims.lines.submitted`, every
line out on `claims.lines.adjudicated` or `claims.lines.rejected` (or the DLQ) with the
decision batch mode gives for the same input."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from contract import topics
from streams.ledger.store import Ledger
from contract.models import AdjudicatedLine, RejectedLine
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, keyed, kill9_in_flight, unit_usage, whole_claim_halves
from tests.probes import wait_for

pytestmark = pytest.mark.broker


def test_sample_claims_flow_like_batch_mode(fresh_bootstrap, tmp_path):
    work = generate(400, members=60, seed=11)
    lines = [*work.lines, b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe"]
    expected = batch_expectation(lines, work.reference)
    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(work.reference)
    pipe.submit(lines)
    pipe.start()
    try:
        records = pipe.collect(expected)
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
    dead = [r for r in records if r["topic"] == topics.DLQ.name]
    assert len(dead) == 4 and all(r["headers"]["source-topic"] == topics.SUBMITTED.name and r["headers"]["error"] for r in dead)


def test_confluent_kafka_reads_contract_records(fresh_bootstrap, tmp_path):
    work = generate(60, members=10, seed=3)
    expected = batch_expectation(work.lines, work.reference)
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=2)
    pipe.load_reference(work.reference)
    pipe.submit(work.lines)
    pipe.start()
    try:
        pipe.collect(expected)
    finally:
        pipe.stop_all()
    consumer = Consumer({"bootstrap.servers": fresh_bootstrap, "group.id": "contract-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topics.ADJUDICATED.name, p, 0) for p in range(2)]
                    + [TopicPartition(topics.REJECTED.name, p, 0) for p in range(2)])
    seen: dict[str, int] = {"adjudicated": 0, "rejected": 0}
    want = {"adjudicated": sum(1 for e in expected if e["topic"] == topics.ADJUDICATED.name),
            "rejected": sum(1 for e in expected if e["topic"] == topics.REJECTED.name)}
    quiet_until = time.monotonic() + 10  # read to the end: until nothing more comes for 3 s
    while time.monotonic() < quiet_until:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        quiet_until = time.monotonic() + 3
        if msg.topic() == topics.ADJUDICATED.name:
            decision = AdjudicatedLine.model_validate_json(msg.value())
            assert msg.key() == decision.claim_id.encode()
            assert decision.allowed_amount + sum(a.amount for a in decision.adjustments) == _charge(work, decision)
            seen["adjudicated"] += 1
        else:
            rejection = RejectedLine.model_validate_json(msg.value())
            assert rejection.reasons and rejection.original
            seen["rejected"] += 1
    consumer.close()
    assert want["adjudicated"] > 0, want
    assert seen == want, "every record batch mode gives, once, read by confluent-kafka"


def _charge(work, decision):
    import orjson
    from decimal import Decimal

    for raw in work.lines:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if obj["claim_id"] == decision.claim_id and obj["line_number"] == decision.line_number:
            return Decimal(obj["charge_amount"])
    raise AssertionError("decision for a line never submitted")


# a group of two workers (a rebalance) on each broker; the ledger backend on one
@pytest.mark.parametrize("backend", [pytest.param("sqlite", marks=pytest.mark.both_brokers), "postgres"])
def test_two_workers_decide_like_batch_mode(backend, fresh_bootstrap, tmp_path, request):
    ledger_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    work = generate(1500, members=150, seed=5)
    expected = batch_expectation(work.lines, work.reference)
    pipe = Pipeline(fresh_bootstrap, tmp_path, ledger_url=ledger_url, partitions=4)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    pipe.start("w2")
    try:
        # the lines go in once the group has settled with an input partition on each worker,
        # so that both take part (a worker that joins late may find the work already done)
        wait_for(lambda: all(pipe.input_partitions(name) for name in ("w1", "w2")), 120,
                 "each worker to hold input partitions")
        pipe.submit(work.lines)
        records = pipe.collect(expected, timeout=180)
        taken = {name: pipe.lines_taken(name) for name in ("w1", "w2")}
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
    # both took part: each read submitted lines from partitions of its own (else this is a
    # one-worker test), and together they read every line at least once
    assert all(n > 0 for n in taken.values()), f"a worker took no partition: lines read {taken}"
    assert sum(taken.values()) >= len(work.lines), taken


@pytest.mark.both_brokers  # kill -9 and a rebalance
def test_kill9_mid_stream_loses_nothing_and_counts_units_once(fresh_bootstrap, tmp_path):
    work = generate(3000, members=120, seed=9)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=4)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    first, second = whole_claim_halves(work.lines)
    pipe.submit(first)
    stream_ledger = Ledger(pipe.ledger_url)
    # mid-stream: the second half is sent right before the kill (a first half can be decided
    # in one batch on Kafka), so the kill surely meets work in flight
    kill9_in_flight(pipe, "w1", stream_ledger, first, work.reference, more=second)
    pipe.start("w1-restarted")
    try:
        records = pipe.collect(expected, timeout=180)
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
    assert unit_usage(stream_ledger) == unit_usage(batch_ledger)
