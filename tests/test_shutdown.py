"""How a worker ends, and what one bad internal message does.

* SIGTERM ends a worker cleanly: exit code 0 within the harness's 20 s (`Pipeline.stop_all`
  asserts it for every broker test; here the hard cases): with a `?wait` request still open,
  and while its ledger is unreachable (the fault tests' TCP proxy in front of PostgreSQL).
* Garbage bytes on an internal topic (`claims.internal.assembled`) go to the DLQ alone, with
  their source topic and stage; the worker goes on, and the next good claim is decided.
"""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from contract import topics
from streams.kafka import client
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, keyed, read_to_end
from tests.tcp_proxy import TcpProxy
from tests.api_harness import AUTH, JSON, ApiPipeline, call
from tests.probes import wait_for

pytestmark = pytest.mark.broker

#: how long a worker may take to stop on SIGTERM (the harness's `stop_worker` timeout)
STOP_S = 20


def _body(claim_id: str) -> dict:
    return {"claim_id": claim_id, "form": "837P", "member_id": "M1002", "provider_npi": "1987654328",
            "authorization_number": "PA26-1002", "diagnosis_codes": ["K91.2", "E43"],
            "lines": [{"procedure_code": "B4189", "units": "1", "charge_amount": "250.00", "service_date": "2026-01-21"}]}


def _answers(pipe: ApiPipeline, path: str = "/healthz") -> bool:
    try:
        call(pipe.url, "GET", path)
        return True
    except OSError:
        return False


def _stop_timed(pipe: Pipeline, name: str) -> tuple[int, float]:
    started = time.monotonic()
    code = pipe.stop(name, timeout=STOP_S)
    return code, time.monotonic() - started


def test_sigterm_with_an_open_wait_request_exits_0(fresh_bootstrap, tmp_path):
    pipe = ApiPipeline(fresh_bootstrap, tmp_path)  # no reference data: the claim waits, ?wait stays open
    pipe.start()
    answer: dict = {}

    def post() -> None:
        try:
            answer["got"] = call(pipe.url, "POST", "/v1/claims?wait=30", orjson.dumps(_body("S-WAIT")), {**AUTH, **JSON})
        except Exception as exc:  # noqa: BLE001 - a connection closed by the stopping worker is an answer too
            answer["got"] = exc

    try:
        wait_for(lambda: _answers(pipe), 60, "the worker's web server")
        request = threading.Thread(target=post, daemon=True)
        request.start()
        # the request is open once its line is on the input topic (published, now waiting)
        wait_for(lambda: any(v and b"S-WAIT" in v for *_, v in read_to_end(fresh_bootstrap, [topics.SUBMITTED.name])),
                 30, "the ?wait request's line on the input topic (the request failed at once?)")
        assert request.is_alive() and "got" not in answer, "the ?wait request was answered before the stop"
        code, took = _stop_timed(pipe, "w1")
        request.join(10)
    finally:
        pipe.stop_all(check=False)
    assert code == 0, f"exit code {code} on SIGTERM with a ?wait open (after {took:.1f}s; see {pipe.log('w1')})"
    assert not request.is_alive(), "the open ?wait request was left hanging by the stopped worker"


@pytest.mark.postgres
def test_sigterm_during_a_ledger_outage_exits_0(fresh_bootstrap, tmp_path, postgres_url):
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname, parts.port).start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    work = generate(300, members=30, seed=41)
    pipe = ApiPipeline(fresh_bootstrap, tmp_path, ledger_url=via_proxy)
    pipe.load_reference(work.reference)
    pipe.start()
    try:
        pipe.wait_for("/readyz", 90)
        proxy.block()  # the database is gone: connections reset, new ones refused
        pipe.submit(work.lines)  # work that now cannot be committed

        def ledger_unreachable() -> bool:
            status, _, body = call(pipe.url, "GET", "/readyz")
            return status == 503 and body["checks"]["ledger_reachable"] is False
        wait_for(ledger_unreachable, 30, "/readyz to report the ledger unreachable")
        code, took = _stop_timed(pipe, "w1")
    finally:
        pipe.stop_all(check=False)
        proxy.stop()
    assert proxy.refused > 0, "the worker never tried the database while it was blocked"
    assert code == 0, f"exit code {code} on SIGTERM during a ledger outage (after {took:.1f}s; see {pipe.log('w1')})"


def test_garbage_on_an_internal_topic_goes_to_the_dlq_alone(fresh_bootstrap, tmp_path):
    work = generate(40, members=8, seed=43)
    expected = batch_expectation(work.lines, work.reference)
    garbage = b"\x00\xffnot a claim batch{"
    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(work.reference)
    pipe.start()
    try:
        # first the garbage, on the partition the good claims' batches will share, then the claims
        asyncio.run(client.produce(fresh_bootstrap, [(topics.ASSEMBLED.name, b"garbage", garbage)]))
        pipe.submit(work.lines)
        pipe.collect(expected)
        records = asyncio.run(client.collect(fresh_bootstrap, lambda r: False, 3.0))  # and anything after them
        assert pipe.workers["w1"].poll() is None, "the worker died"
    finally:
        pipe.stop_all()
    internal = [r for r in records if r["topic"] == topics.DLQ.name
                and r["headers"].get("source-topic") == topics.ASSEMBLED.name]
    assert len(internal) == 1, internal
    assert internal[0]["key"] == b"garbage" and internal[0]["raw"] == garbage
    assert internal[0]["headers"]["stage"] == "enrich" and internal[0]["headers"]["error"]
    others = [r for r in records if r not in internal]
    assert keyed(others) == keyed(expected), "the good claims around the garbage were not decided as batch mode decides them"
