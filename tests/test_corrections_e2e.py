"""Corrections and voids end to end on the real broker: a stream of originals,
replacements, voids and re-deliveries decided by two workers agrees with batch mode record
for record, and a worker killed with SIGKILL mid-stream loses nothing and reverses nothing
twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from streams.ledger.store import Ledger
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, keyed
from tests.probes import wait_for

pytestmark = pytest.mark.broker


def _reversals(ledger: Ledger) -> list[tuple]:
    return ledger.rows("reversals", "claim_id", "line_number", "reversed_by")


def _state(ledger: Ledger) -> dict[str, list[tuple]]:
    return {
        "units": ledger.rows("unit_usage", "claim_id", "line_number", "authorization_number", "units"),
        "paid": ledger.rows("paid_lines", "claim_id", "line_number", "fingerprint"),
        "corrections": ledger.rows("corrections", "original_claim_id", "claim_id"),
    }


# a group of two workers (a rebalance) on each broker; the ledger backend on one
@pytest.mark.parametrize("backend", [pytest.param("sqlite", marks=pytest.mark.both_brokers), "postgres"])
def test_two_workers_decide_corrections_like_batch_mode(backend, fresh_bootstrap, tmp_path, request):
    ledger_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    work = generate(1200, members=80, seed=21, corrections=0.2)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    kinds = Counter(r.get("status") or r["reasons"][0]["code"] for r in expected if r["topic"] != "claims.lines.dlq")
    assert kinds["REVERSED"] and kinds["VOIDED"] and kinds["ORIGINAL_ALREADY_REPLACED"] and kinds["ORIGINAL_NOT_FOUND"]
    pipe = Pipeline(fresh_bootstrap, tmp_path, ledger_url=ledger_url, partitions=4)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    pipe.start("w2")
    pipe.submit(work.lines)
    try:
        records = pipe.collect(expected, timeout=180)
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
    stream_ledger = Ledger(pipe.ledger_url)
    assert _state(stream_ledger) == _state(batch_ledger)
    assert _reversals(stream_ledger) == _reversals(batch_ledger)


@pytest.mark.both_brokers  # kill -9 and a rebalance
def test_kill9_mid_stream_reverses_nothing_twice(fresh_bootstrap, tmp_path):
    """Two workers; one is killed with SIGKILL while corrections are being decided (more to
    come), the other takes its partitions over, and it is started again."""
    work = generate(2400, members=100, seed=23, corrections=0.2)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=4)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    pipe.start("w2")
    stream_ledger = Ledger(pipe.ledger_url)
    try:
        wait_for(lambda: all(pipe.input_partitions(name) for name in ("w1", "w2")), 120,
                 "each worker to hold input partitions")
        pipe.submit(work.lines)
        deadline = time.monotonic() + 60
        while len(_reversals(stream_ledger)) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _reversals(stream_ledger), "the workers never got going"
        pipe.kill("w1")  # mid-stream, with corrections decided and more to come
        at_kill = len(_reversals(stream_ledger))
        assert at_kill < len(_reversals(batch_ledger)), "every reversal was made before the kill: it hit nothing in flight"
        pipe.start("w1-restarted")
        records = pipe.collect(expected, timeout=180)
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
    assert _state(stream_ledger) == _state(batch_ledger)
    assert _reversals(stream_ledger) == _reversals(batch_ledger)
