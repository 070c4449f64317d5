"""The API's failure answers, each brought about for real on one worker: a pipeline that is
not ready (202 PENDING when `?wait` runs out), a claim with a rejected line (PARTIALLY_REJECTED),
a parse queue that is full (503 BUSY with Retry-After), a ledger that
stops answering (503 LEDGER_UNAVAILABLE, through a TCP proxy in front of PostgreSQL), and a
broker that is gone (503 PUBLISH_FAILED). The tests run in file order on one worker; the
broker is stopped last."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from streams.devbrokers.tansu import EmbeddedBroker
from tests.fixtures.x12 import generate as gen
from tests.tcp_proxy import TcpProxy
from tests.api_harness import AUTH, JSON, ApiPipeline, call
from tests.harness import sample_reference
from tests.probes import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

X12 = {"Content-Type": "application/edi-x12"}


def body(claim_id: str, day: str = "2026-01-21", **line: object) -> dict:
    """One B4189 line of member M1002 (paid in the sample data)."""
    return {"claim_id": claim_id, "form": "837P", "member_id": "M1002", "provider_npi": "1987654328",
            "authorization_number": "PA26-1002", "diagnosis_codes": ["K91.2", "E43"],
            "lines": [{"procedure_code": "B4189", "units": "1", "charge_amount": "250.00", "service_date": day, **line}]}


class Setup:
    def __init__(self, broker: EmbeddedBroker, pipe: ApiPipeline, proxy: TcpProxy) -> None:
        self.broker, self.pipe, self.proxy = broker, pipe, proxy

    def post(self, path: str, value: object, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
        return call(self.pipe.url, "POST", path, orjson.dumps(value), headers or {**AUTH, **JSON})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("api-failures")
    url = request.getfixturevalue("postgres_url")
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname, parts.port).start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log")  # its own: the last test stops it
    broker.start()
    broker.wait_ready()
    pipe = ApiPipeline(broker.bootstrap, tmp, ledger_url=via_proxy)
    pipe.start()
    try:
        wait_for(lambda: _answers(pipe.url + "/healthz"), 60, "the worker's web server")
        yield Setup(broker, pipe, proxy)
    finally:
        # the last test stops the broker: a worker without its broker does not stop within
        # 20 s today (aiokafka's producer retries its last sends); not checked here
        pipe.stop_all(check=False)
        broker.stop()
        proxy.stop()


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A module-wide schema (the worker outlives one test)."""
    from tests.harness import drop_pg_schema, pg_schema_url

    yield pg_schema_url("t_api_failures")
    drop_pg_schema("t_api_failures")


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError):
        return False


def test_wait_that_runs_out_answers_202_pending(setup: Setup):
    # no reference data yet: the worker is not ready and takes nothing in
    status, _, answer = setup.post("/v1/claims?wait=1", body("F-PENDING"))
    assert status == 202, answer
    assert answer["status"] == "PENDING" and answer["lines"] == [] and answer["status_url"] == "/v1/claims/F-PENDING"
    assert "no reference data yet" in answer["reason"] and "reference load" in answer["reason"]
    setup.pipe.load_reference(sample_reference())
    setup.pipe.wait_for("/readyz", 60)
    wait_for(lambda: call(setup.pipe.url, "GET", "/v1/claims/F-PENDING", None, AUTH)[2].get("status") == "DECIDED",
             60, "the pending claim to be decided once the worker is ready")


def test_a_claim_with_a_rejected_line_is_partially_rejected(setup: Setup):
    status, _, answer = setup.post("/v1/claims?wait=20", body("F-PARTIAL"))
    assert status == 200 and answer["status"] == "DECIDED", answer
    # a line the claim never had, sent on the topic after the claim was decided: CLAIM_CLOSED
    late = {**body("F-PARTIAL")["lines"][0], "claim_id": "F-PARTIAL", "line_number": 2, "line_count": 2, "form": "837P",
            "member_id": "M1002", "provider_npi": "1987654328", "authorization_number": "PA26-1002",
            "diagnosis_codes": ["K91.2", "E43"]}
    setup.pipe.submit([orjson.dumps(late)])

    def partially_rejected() -> dict | None:
        state = call(setup.pipe.url, "GET", "/v1/claims/F-PARTIAL", None, AUTH)[2]
        return state if state.get("status") == "PARTIALLY_REJECTED" else None

    state = wait_for(partially_rejected, 30, "the late line's rejection")
    assert [(r["topic"], r["line_number"]) for r in state["lines"]] == [
        ("claims.lines.adjudicated", 1), ("claims.lines.rejected", 2)]
    assert state["lines"][1]["reasons"][0]["code"] == "CLAIM_CLOSED"


def _big_837(prefix: str, claims: int) -> bytes:
    """One interchange of `claims` copies of the first fixture's claim."""
    template = gen.FIXTURES[0]
    many = [gen.Claim(**{**vars(template.claims[0]), "claim_id": f"{prefix}{i:04d}"}) for i in range(claims)]
    return gen.render(gen.Fixture(name=prefix, purpose="load", claims=many, control=7)).encode()


def test_a_full_parse_queue_answers_503_busy_with_retry_after(setup: Setup):
    bodies = [_big_837(f"B{n}", 60) for n in range(8)]
    answers: list[tuple[int, dict]] = []

    def post(text: bytes) -> None:
        status, head, raw = _post_x12(setup.pipe.url, text)
        answers.append((status, head))

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    busy = [head for status, head in answers if status == 503]
    assert len(answers) == 8 and busy, [s for s, _ in answers]
    assert all(head.get("Retry-After") == "1" for head in busy)
    assert {s for s, _ in answers} <= {200, 503}


def _post_x12(url: str, text: bytes) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url + "/v1/x12/837", data=text, method="POST", headers={**AUTH, **X12})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_a_ledger_that_stops_answering_is_503_then_recovers(setup: Setup):
    setup.proxy.block(mode="blackhole")
    try:
        # an answer at all (not a hang: `call` gives up after its own timeout), and the right one
        status, _, answer = call(setup.pipe.url, "GET", "/v1/claims/F-PARTIAL", None, AUTH)
        assert status == 503 and answer["error"]["code"] == "LEDGER_UNAVAILABLE", answer
    finally:
        setup.proxy.unblock()
    wait_for(lambda: call(setup.pipe.url, "GET", "/v1/claims/F-PARTIAL", None, AUTH)[0] == 200, 60,
             "the API to answer again once the ledger is back")


def test_a_broker_that_is_gone_is_503_publish_failed(setup: Setup):
    setup.broker.stop()
    status, _, answer = setup.post("/v1/claims", body("F-NOBROKER"))
    assert status == 503, answer
    assert answer["error"]["code"] == "PUBLISH_FAILED" and "again is safe" in answer["error"]["message"]
