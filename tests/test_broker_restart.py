"""The embedded broker keeps nothing across a restart. The worker must notice, report not
ready, decide nothing against missing reference data, and carry on once the topics and
the reference data are back, with its ledger (and so every earlier decision) intact.

Tansu only: an Apache Kafka broker keeps its logs across a restart, so there is nothing
lost to notice (its restarts are tests/test_kafka_cluster.py's)."""

from __future__ import annotations

import time

import pytest

from streams.devbrokers.tansu import EmbeddedBroker
from streams.devbrokers.process import free_port
from streams.ledger.store import Ledger
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, claims_in, keyed
from tests.probes import readiness, ready, wait_for

pytestmark = pytest.mark.broker


def test_broker_restart_is_noticed_and_survived(tmp_path):
    if __import__("os").environ.get("CLAIMS_TEST_BROKER"):
        pytest.skip("restarts the embedded broker itself")
    work = generate(600, members=60, seed=21)
    half = len(work.lines) // 2
    first, second = work.lines[:half], work.lines[half:]
    # keep claims whole on each side
    while claims_in(first[-1:]) & claims_in(second[:1]):
        first, second = first + second[:1], second[1:]
    expected = batch_expectation(work.lines, work.reference)
    port = free_port()  # the broker's: the restarted broker must come back on the same one

    broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker1.log")
    broker.start()
    broker.wait_ready()
    pipe = Pipeline(broker.bootstrap, tmp_path)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    web = pipe.web_port("w1")
    try:
        pipe.submit(first)
        exp_first = [r for r in expected if r.get("claim_id") in claims_in(first)]
        got_first = pipe.collect(exp_first, timeout=90)
        assert ready(web)

        broker.stop()
        wait_for(lambda: readiness(web) == 503, 30, "the worker to report not ready without its broker")

        broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker2.log")
        broker.start()
        broker.wait_ready()
        pipe2 = Pipeline(broker.bootstrap, tmp_path)  # the operator recreates the topics
        pipe2.workers = pipe.workers
        pipe2.env = pipe.env
        pipe2.submit(second)
        # the worker restarts in place on the new broker (a new incarnation, told by its marker)
        # and rewinds its group first, which takes up to a session timeout: wait until it did,
        # and answers again
        def restarted() -> bool:
            log = pipe.log("w1").read_text(errors="replace")
            return "restarting the worker in place" in log and log.count("claims-pipeline worker: brokers") == 2

        wait_for(restarted, 60, "the worker to notice the new broker and start again in place")
        wait_for(lambda: readiness(web) is not None, 60, "the worker to answer again after the broker came back")
        time.sleep(4)  # time in which a wrong worker would decide the second half
        assert readiness(web) == 503, "no reference data yet: still not ready"
        ledger = Ledger(pipe.ledger_url)
        assert not (set(c for c in claims_in(second)) & _decided_claims(ledger)), \
            "nothing may be decided before the reference data is back"

        pipe2.load_reference(work.reference)
        exp_second = [r for r in expected if r.get("claim_id") in claims_in(second)]
        got_second = pipe2.collect(exp_second, timeout=120)
        wait_for(lambda: ready(web), 30, "the worker ready")
        assert pipe.workers["w1"].poll() is None, "the worker must survive the restart"
    finally:
        pipe.stop_all()
        broker.stop()
    both = keyed(got_first) | keyed(got_second)
    assert {k: v for k, v in both.items() if k[0] != "claims.lines.dlq"} == \
        {k: v for k, v in keyed(expected).items() if k[0] != "claims.lines.dlq"}


def _decided_claims(ledger: Ledger) -> set[str]:
    return {claim_id for (claim_id,) in ledger.rows("decisions", "claim_id")}
