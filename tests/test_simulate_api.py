"""POST /v1/claims/simulate end to end: a real worker (with a candidate rulebook), claims with
history behind them, and what-if answers equal to what batch mode gives the claim submitted
next, while the ledger and every topic stay exactly as they were."""

from __future__ import annotations


import orjson
import pytest

from rules.rulebook import candidate_path
from contract import topics
from streams.ledger.store import Ledger
from streams.ledger.schema import SCHEMA
from streams.tools.synthetic import generate
from tests.harness import batch_expectation, read_to_end
from tests.probes import wait_for
from tests.api_harness import AUTH, JSON, ApiPipeline, api_claims, call, timeless

pytestmark = pytest.mark.broker

#: every table but input_progress, the expiry timer's own clock, which the idle worker moves
TABLES = [t for stmt in SCHEMA.split(";") if "CREATE TABLE" in stmt
          for t in [stmt.split("(")[0].split()[-1]] if t != "input_progress"]


#: what a simulation does record: who asked (CONTRACT.md *API clients and the access log*)
ACCESS_LOG = ("access_log", "access_log_claims", "access_outbox")


def ledger_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of the ledger but the access log's."""
    ledger = Ledger(url)
    try:
        return {t: sorted(ledger.rows(t), key=repr) for t in TABLES if t not in ACCESS_LOG}
    finally:
        ledger.close()


def topic_contents(bootstrap: str) -> list[tuple]:
    """Every record of every pipeline topic, raw, read to the end."""
    return sorted(read_to_end(bootstrap, [t.name for t in topics.ALL if t is not topics.AUDIT_ACCESS]), key=lambda r: r[:3])


@pytest.fixture(scope="module")
def setup(module_bootstrap, tmp_path_factory):
    work = generate(240, members=12, seed=31)
    claims = api_claims(work.lines)
    history, later = claims[:-12], claims[-12:]
    pipe = ApiPipeline(module_bootstrap, tmp_path_factory.mktemp("simulate"))
    pipe.env["CLAIMS_SHADOW_RULEBOOK"] = str(candidate_path("hit-jz-2027-01-01.toml"))
    pipe.load_reference(work.reference)
    submitted = [raw for _, raws in history for raw in raws]
    pipe.submit(submitted)
    pipe.start()
    pipe.wait_for()
    expected = batch_expectation(submitted, work.reference)
    pipe.collect(expected)
    # the remittance stage takes a control number per 835: the snapshot waits for the last one
    remitted = {r["claim_id"] for r in expected if r["topic"] == topics.ADJUDICATED.name}
    wait_for(lambda: {k.decode() for *_, k, _ in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name])} >= remitted,
             120, "an 835 for every decided claim")
    # and for the reprocess timer to be done with the reference changes of the load
    wait_for(lambda: not any(row[-1] != "DONE" for row in ledger_rows(pipe.ledger_url)["reference_changes"]),
             120, "every reference change looked at")
    yield pipe, work, submitted, later
    pipe.stop_all()


def test_simulate_answers_what_batch_mode_gives_the_next_claim_and_changes_nothing(setup):
    pipe, work, submitted, later = setup
    ledger_before, topics_before = ledger_rows(pipe.ledger_url), topic_contents(pipe.bootstrap)
    for body, raws in later:
        expected = [r for r in batch_expectation(submitted + raws, work.reference) if r.get("claim_id") == body["claim_id"]]
        status, _, answer = call(pipe.url, "POST", "/v1/claims/simulate", orjson.dumps(body), {**AUTH, **JSON})
        assert status == 200, answer
        assert answer["simulated"] is True and answer["policy_versions"] == ["HIT-PP-2021-08-26.1"]
        assert timeless(answer["lines"]) == timeless(expected)
        assert answer["status"] in ("DECIDED", "REJECTED", "PARTIALLY_REJECTED")
        status, _, again = call(pipe.url, "POST", "/v1/claims/simulate", orjson.dumps(body), {**AUTH, **JSON})
        assert timeless(again["lines"]) == timeless(answer["lines"])  # no units consumed, nothing recorded
        status, _, cand = call(pipe.url, "POST", "/v1/claims/simulate?candidate=true", orjson.dumps(body), {**AUTH, **JSON})
        assert status == 200 and cand["policy_versions"] == ["2027-01-01-jz"]
        assert {r["policy_version"] for r in cand["lines"] if r["topic"] == topics.ADJUDICATED.name} <= {"2027-01-01-jz"}
    assert ledger_rows(pipe.ledger_url) == ledger_before
    assert topic_contents(pipe.bootstrap) == topics_before


def test_simulating_a_decided_claim_answers_its_stored_decisions(setup):
    pipe, work, submitted, later = setup
    claim_id = orjson.loads(submitted[-1])["claim_id"]
    raws = [raw for raw in submitted if orjson.loads(raw)["claim_id"] == claim_id]
    body = {**{f: orjson.loads(raws[0])[f] for f in ("claim_id", "form", "member_id", "provider_npi", "authorization_number",
                                                      "diagnosis_codes")},
            "lines": [{k: v for k, v in orjson.loads(r).items() if k not in ("claim_id", "form", "member_id", "provider_npi",
                                                                                 "authorization_number", "diagnosis_codes",
                                                                                 "line_count")} for r in raws]}
    status, _, answer = call(pipe.url, "POST", "/v1/claims/simulate", orjson.dumps(body), {**AUTH, **JSON})
    _, _, stored = call(pipe.url, "GET", f"/v1/claims/{claim_id}", None, AUTH)
    assert status == 200 and timeless(answer["lines"]) == timeless(stored["lines"])


@pytest.mark.parametrize(("path", "body", "headers", "code", "error"), [
    ("/v1/claims/simulate", b"{not json", {**AUTH, **JSON}, 400, "MALFORMED_JSON"),
    ("/v1/claims/simulate", b'{"claim_id": "X"}', {**AUTH, **JSON}, 422, "SCHEMA"),
    ("/v1/claims/simulate", b"{}", {**AUTH, "Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("/v1/claims/simulate", b"{}", JSON, 401, "UNAUTHORIZED"),
    ("/v1/claims/simulate?candidate=maybe", b"{}", {**AUTH, **JSON}, 400, "BAD_REQUEST"),
])
def test_bad_input_is_answered_like_post_claims(setup, path, body, headers, code, error):
    pipe = setup[0]
    status, _, answer = call(pipe.url, "POST", path, body, headers)
    assert (status, answer["error"]["code"]) == (code, error)
    if path == "/v1/claims/simulate":
        same = call(pipe.url, "POST", "/v1/claims", body, headers)
        assert (same[0], same[2]["error"]["code"]) == (code, error)


def test_a_claim_named_simulate_is_still_found_by_get(setup):
    status, _, answer = call(setup[0].url, "GET", "/v1/claims/simulate", None, AUTH)
    assert status == 404 and answer["error"]["code"] == "NOT_FOUND"
