"""A restarted embedded broker reloaded with identical data before the worker noticed
(issue 14). Tansu keeps nothing across a restart; when the topics are created again and the
same reference data and lines are loaded within a second, every partition ends where it
ended before, so nothing looks truncated, yet every consumer position and offset the worker
holds belongs to the old broker (the worker is paused meanwhile, so it cannot notice). The marker record written when the topics are created
tells the incarnations apart: the worker restarts in place and answers what the new broker
holds. Tansu only (an Apache Kafka broker keeps its logs across a restart)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from streams.devbrokers.tansu import EmbeddedBroker
from streams.devbrokers.process import free_port
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, claims_in, keyed
from tests.probes import ready, wait_for

pytestmark = pytest.mark.broker


def test_a_broker_restarted_and_reloaded_with_the_same_data_is_a_new_incarnation(tmp_path):
    if os.environ.get("CLAIMS_TEST_BROKER"):
        pytest.skip("restarts the embedded broker itself")
    work = generate(600, members=60, seed=53)
    first, second = work.lines[:300], work.lines[300:]
    while claims_in(first[-1:]) & claims_in(second[:1]):
        first, second = first + second[:1], second[1:]
    expected = [r for r in batch_expectation(work.lines, work.reference) if r["topic"] != "claims.lines.dlq"]
    port = free_port()  # the broker's: the restarted broker comes back on the same one
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker1.log")
    broker.start()
    broker.wait_ready()
    pipe = Pipeline(broker.bootstrap, tmp_path)
    pipe.load_reference(work.reference)
    worker = pipe.start("w1")
    web = pipe.web_port("w1")  # kept when the worker restarts in place
    try:
        pipe.submit(first)
        pipe.collect([r for r in expected if r.get("claim_id") in claims_in(first)], timeout=90)
        wait_for(lambda: ready(web), 30, "the worker ready")

        # a new broker on the same port, its topics created again (a new marker) and the same
        # data loaded while the worker is paused, so it cannot notice the broker go: each
        # partition ends where it ended before
        os.kill(worker.pid, signal.SIGSTOP)
        broker.stop()
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker2.log")
        broker.start()
        broker.wait_ready()
        again = Pipeline(broker.bootstrap, tmp_path)
        again.workers, again.env = pipe.workers, pipe.env
        again.load_reference(work.reference)
        again.submit(first)  # at the offsets they had: a stale position would skip them
        os.kill(worker.pid, signal.SIGCONT)
        restarted_at = time.monotonic()
        again.submit(second)
        # everything on the new broker is answered: the first half again (their stored
        # decisions and rejections), the second half decided
        got = again.collect(expected, timeout=120)
        assert worker.poll() is None, "the worker restarts in place (same process), it does not die"
    finally:
        pipe.stop_all()
        broker.stop()
    assert keyed([r for r in got if r["topic"] != "claims.lines.dlq"]) == keyed(expected)
    log = (tmp_path / "w1.log").read_text(errors="replace")
    assert "new incarnation" in log, "the new broker was not told apart by its marker"
    print(f"incarnation: {len(first)} + {len(second)} lines answered on the new broker "
          f"{time.monotonic() - restarted_at:.1f}s after the reload")
