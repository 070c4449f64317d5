"""The assembly timeout as the worker applies it (CLAIMS_ASSEMBLY_TIMEOUT_S = 6 in the harness):
a claim completed at half the timeout is decided, one left incomplete is rejected INCOMPLETE
after it; a claim whose other line waits in a partition nobody is reading is not expired
(the lagging-partition guard); and a worker that is not ready takes nothing in, so its
clock does not run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime

import orjson
import pytest

from contract import topics
from streams.kafka import client
from tests.harness import Pipeline, sample_reference
from tests.probes import http_get, ready, wait_for
from tests.test_metrics_e2e import parse

pytestmark = pytest.mark.broker

TIMEOUT_S = 6.0


def line(claim_id: str, number: int, count: int = 2, day: str = "2026-02-10") -> bytes:
    code = "B4189" if number == 1 else "99601"
    return orjson.dumps({"claim_id": claim_id, "line_number": number, "line_count": count, "form": "837P",
                         "member_id": "M1002", "provider_npi": "1987654328", "authorization_number": "PA26-1002",
                         "service_date": day, "procedure_code": code, "modifiers": [], "units": 1,
                         "charge_amount": "150.00", "diagnosis_codes": ["K91.2", "E43"], "drug": None})


def answers(bootstrap: str, claim_id: str, count: int, timeout: float = 60) -> list[dict]:
    """The records of a claim, once `count` of them arrived (with the time each was read)."""
    seen: list[dict] = []

    def mine(record: dict) -> None:
        if record.get("claim_id") == claim_id:
            seen.append({**record, "read_at": time.time()})

    asyncio.run(client.collect(bootstrap, lambda _: len(seen) >= count, timeout, on_record=mine))
    assert len(seen) >= count, f"{claim_id}: {len(seen)} of {count} records within {timeout}s"
    return seen


def produce(bootstrap: str, raw: bytes, partition: int | None = None) -> None:
    async def send() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topics.SUBMITTED.name, raw, key=b"M1002", partition=partition)
        finally:
            await producer.stop()

    asyncio.run(send())


def started(pipe: Pipeline, name: str) -> int:
    pipe.start(name)
    return pipe.web_port(name)


def test_completed_at_half_the_timeout_is_decided_left_incomplete_is_rejected(fresh_bootstrap, tmp_path):
    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(sample_reference())
    port = started(pipe, "w1")
    try:
        wait_for(lambda: ready(port), 60, "the worker to be ready")
        t0 = time.time()
        produce(fresh_bootstrap, line("T-HALF", 1))
        produce(fresh_bootstrap, line("T-LATE", 1))
        time.sleep(TIMEOUT_S / 2)  # the behaviour under test is a duration
        produce(fresh_bootstrap, line("T-HALF", 2))
        half = answers(fresh_bootstrap, "T-HALF", 2)
        assert {r["topic"] for r in half} == {topics.ADJUDICATED.name}
        late = answers(fresh_bootstrap, "T-LATE", 1)
        (rejection,) = late
        assert rejection["topic"] == topics.REJECTED.name and rejection["reasons"][0]["code"] == "INCOMPLETE"
        waited = datetime.fromisoformat(rejection["rejected_at"]).timestamp() - t0
        assert TIMEOUT_S <= waited <= 3 * TIMEOUT_S, f"rejected {waited:.1f}s after its first line"
        # its missing line, sent at one and a half times the timeout, is answered with the rejection
        produce(fresh_bootstrap, line("T-LATE", 2))
        again = answers(fresh_bootstrap, "T-LATE", 2)
        assert again[1]["topic"] == topics.REJECTED.name and again[1]["line_number"] == 2
    finally:
        pipe.stop_all()


@pytest.mark.both_brokers  # a stopped member's partition taken over after its session timeout: a rebalance
def test_a_claim_whose_line_waits_in_an_unread_partition_is_not_expired(fresh_bootstrap, tmp_path):
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=2)
    # w1 takes the stopped worker's partition a session timeout after it stopped: longer than the
    # assembly timeout, so the claim stays open past it (the harness's 6 s would tie them)
    pipe.env["CLAIMS_SESSION_TIMEOUT_S"] = str(3 * TIMEOUT_S)
    pipe.load_reference(sample_reference())
    p1 = started(pipe, "w1")
    wait_for(lambda: ready(p1), 60, "w1 ready")
    p2 = started(pipe, "w2")

    def owns_input(port: int) -> bool:
        try:
            samples = parse(http_get(f"http://127.0.0.1:{port}/metrics")[1])
        except OSError:
            return False
        return any(s.name == "claims_consumer_lag_messages" and s.labels.get("topic") == topics.SUBMITTED.name
                   for s in samples)

    w2 = pipe.workers["w2"]
    try:
        wait_for(lambda: ready(p2) and owns_input(p2), 90, "w2 to take an input partition")
        os.killpg(w2.pid, signal.SIGSTOP)  # w2's partition is now read by nobody
        t0 = time.time()
        produce(fresh_bootstrap, line("T-LAG", 1), partition=0)
        produce(fresh_bootstrap, line("T-LAG", 2), partition=1)
        records = answers(fresh_bootstrap, "T-LAG", 2, timeout=90)
        assert {r["topic"] for r in records} == {topics.ADJUDICATED.name}, records
        # the scenario happened: the claim stayed open past its timeout until w1 took over
        assert min(r["read_at"] for r in records) - t0 > TIMEOUT_S
    finally:
        os.killpg(w2.pid, signal.SIGKILL)
        pipe.workers.pop("w2").wait()
        pipe.stop_all()


def test_a_worker_without_reference_data_takes_nothing_in(fresh_bootstrap, tmp_path):
    pipe = Pipeline(fresh_bootstrap, tmp_path)
    port = started(pipe, "w1")
    try:
        wait_for(lambda: _up(port), 60, "the worker's web server")
        status, body = http_get(f"http://127.0.0.1:{port}/readyz", timeout=5)  # it answers: not ready, and why
        assert status == 503 and '"reference_loaded":false' in body.replace(" ", ""), (status, body)
        produce(fresh_bootstrap, line("T-GATE", 1))
        time.sleep(2 * TIMEOUT_S)  # twice the timeout with nothing read: no expiry
        early = asyncio.run(client.collect(fresh_bootstrap, lambda _: False, 2))
        assert [r for r in early if r.get("claim_id") == "T-GATE"] == []
        pipe.load_reference(sample_reference())
        wait_for(lambda: ready(port), 60, "readiness once the reference data is there")
        produce(fresh_bootstrap, line("T-GATE", 2))
        records = answers(fresh_bootstrap, "T-GATE", 2)
        assert {r["topic"] for r in records} == {topics.ADJUDICATED.name}
    finally:
        pipe.stop_all()


def _up(port: int) -> bool:
    try:
        http_get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        return True
    except OSError:
        return False
