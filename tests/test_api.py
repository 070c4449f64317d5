"""The /v1 HTTP API end to end: a real worker subprocess on the embedded broker, claims in
over HTTP, decisions back from `?wait` identical to batch mode's, JSON errors for every
refusal, and a bounded load test (200 concurrent submissions on loopback).

The first test runs on `fresh_bootstrap` (its own broker, worker and ledger). The error
and load tests share one worker on a broker of this module (`api`), so the file starts
few workers and stays well under two minutes."""

from __future__ import annotations

import asyncio
import http.client
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from contract import topics
from streams.tools.synthetic import generate
from tests.api_harness import AUTH, JSON, SAMPLES, TOKEN, ApiPipeline, api_claims, call, timeless
from tests.harness import batch_expectation, read_to_end, sample_reference

pytestmark = pytest.mark.broker

# --- real-time adjudication == batch mode -------------------------------------------------------


def test_http_claims_get_the_decisions_batch_mode_gives(fresh_bootstrap, tmp_path):
    """The sample claims (every rule), up to 4 per member: one member's claims one after the
    other (cross-claim state: duplicates, authorized units, drug days), members at once."""
    reference = sample_reference()
    chains: dict[str, list[tuple[dict, list[bytes]]]] = {}
    for body, raws in api_claims((SAMPLES / "claims.jsonl").read_bytes().splitlines()):
        if "original_claim_id" in body:  # corrections over HTTP: test_replacement_and_void_...
            continue
        if len(chains.setdefault(body["member_id"], [])) < 4:
            chains[body["member_id"]].append((body, raws))
    claims = [c for chain in chains.values() for c in chain]
    assert len(claims) >= 20 and len(chains) >= 8
    expected = batch_expectation([raw for chain in chains.values() for _, raws in chain for raw in raws], reference)
    by_claim: dict[str, list[dict]] = {}
    for record in expected:
        by_claim.setdefault(record["claim_id"], []).append(record)
    assert {r["status"] for r in expected if "status" in r} == {"PAID", "DENIED", "PENDED"}  # C26-0110, C26-0111

    pipe = ApiPipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(reference)
    with pipe.running():
        answers = asyncio.run(_submit_chains(pipe.url, list(chains.values())))
        status, _, again = call(pipe.url, "GET", f"/v1/claims/{claims[0][0]['claim_id']}", headers=AUTH)
    for (body, _), (code, answer) in zip(claims, answers):
        claim_id = body["claim_id"]
        assert code == 200, (claim_id, answer)
        assert answer["claim_id"] == claim_id and answer["status_url"] == f"/v1/claims/{claim_id}"
        assert answer["status"] == ("IN_REVIEW" if any(r.get("status") == "PENDED" for r in by_claim[claim_id]) else "DECIDED")
        assert timeless(answer["lines"]) == timeless(by_claim[claim_id]), claim_id
    assert status == 200 and timeless(again["lines"]) == timeless(by_claim[claims[0][0]["claim_id"]])


async def _submit_chains(url: str, chains: list[list[tuple[dict, list[bytes]]]]) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession(headers={**AUTH, **JSON}) as session:
        async def chain(items):
            out = []
            for body, _ in items:
                async with session.post(f"{url}/v1/claims?wait=10", data=orjson.dumps(body)) as resp:
                    out.append((resp.status, await resp.json()))
            return out

        results = await asyncio.gather(*(chain(c) for c in chains))
    return [answer for chain_answers in results for answer in chain_answers]


# --- one worker for the error and load tests ---------------------------------------------------------


LOAD = generate(900, members=400, seed=31)


@pytest.fixture(scope="module")
def api(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    pipe = ApiPipeline(module_bootstrap, tmp_path_factory.mktemp("api-worker"))
    pipe.load_reference(LOAD.reference)
    with pipe.running():
        yield pipe


def _claim(claim_id: str | None = None, **line_changes: Any) -> dict[str, Any]:
    body, _ = api_claims(LOAD.lines)[0]
    body = orjson.loads(orjson.dumps(body))
    body["claim_id"] = claim_id or f"T-{uuid.uuid4().hex[:12]}"
    body["lines"] = [body["lines"][0], {**body["lines"][0], "line_number": 2, **line_changes}]
    return body


def test_submit_without_wait_answers_202_with_a_status_url(api):
    body = _claim()
    status, _, answer = call(api.url, "POST", "/v1/claims", orjson.dumps(body), {**AUTH, **JSON})
    assert status == 202 and answer == {"claim_id": body["claim_id"], "status_url": f"/v1/claims/{body['claim_id']}",
                                        "status": "ACCEPTED"}
    deadline, status_url = time.monotonic() + 20, answer["status_url"]
    while time.monotonic() < deadline:
        status, _, answer = call(api.url, "GET", status_url, headers=AUTH)
        if status == 200 and answer["status"] != "PENDING":
            break
        time.sleep(0.2)
    assert status == 200 and answer["status"] == "DECIDED"
    assert [r["line_number"] for r in answer["lines"]] == [1, 2]


def test_replacement_and_void_show_what_they_reversed(api):
    """?wait on a replacement answers with its decisions and the reversals it caused; the
    replaced claim's status says what replaced it; a void of the replacement, then a second
    void of the same claim (rejected: already voided)."""
    headers = {**AUTH, **JSON}

    def post(body: dict[str, Any]) -> dict[str, Any]:
        status, _, answer = call(api.url, "POST", "/v1/claims?wait=20", orjson.dumps(body), headers)
        assert status == 200, answer
        return answer

    original = _claim()
    first = post(original)
    assert first["status"] == "DECIDED" and "reversed_by" not in first and "reversals" not in first
    replacement = {**_claim(), "claim_frequency": "7", "original_claim_id": original["claim_id"]}
    answer = post(replacement)
    assert answer["status"] == "DECIDED" and answer["reverses"] == original["claim_id"]
    assert [(r["claim_id"], r["line_number"], r["status"], r["reversed_by"]) for r in answer["reversals"]] == \
        [(original["claim_id"], n, "REVERSED", replacement["claim_id"]) for n in (1, 2)]
    for decided, reversal in zip(first["lines"], answer["reversals"], strict=True):
        assert Decimal(reversal["allowed_amount"]) == -Decimal(decided["allowed_amount"])
    assert [r["status"] for r in answer["lines"]] == [r["status"] for r in first["lines"]]  # released: no duplicate
    status, _, replaced = call(api.url, "GET", f"/v1/claims/{original['claim_id']}", headers=AUTH)
    assert status == 200 and replaced["status"] == "REPLACED" and replaced["reversed_by"] == replacement["claim_id"]
    assert timeless(replaced["lines"]) == timeless(first["lines"])  # its decisions stay as they were
    assert timeless(replaced["reversed"]) == timeless(answer["reversals"])
    void = {**_claim(), "claim_frequency": "8", "original_claim_id": replacement["claim_id"]}
    void["lines"] = void["lines"][:1]
    voided = post(void)
    assert [r["status"] for r in voided["lines"]] == ["VOIDED"] and len(voided["reversals"]) == 2
    status, _, state = call(api.url, "GET", f"/v1/claims/{replacement['claim_id']}", headers=AUTH)
    assert state["status"] == "VOIDED" and state["reversed_by"] == void["claim_id"] and state["reverses"] == original["claim_id"]
    again = post({**void, "claim_id": f"T-{uuid.uuid4().hex[:12]}"})
    assert again["status"] == "REJECTED"
    assert [r["reasons"][0]["code"] for r in again["lines"]] == ["ORIGINAL_ALREADY_REPLACED"]


@pytest.mark.parametrize("headers, detail", [
    ({}, "missing"),
    ({"Authorization": "Bearer wrong-token"}, "invalid"),
    ({"Authorization": f"Basic {TOKEN}"}, "missing"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "invalid"),
])
def test_no_valid_token_gets_401(api, headers, detail):
    for method, path, body in (("POST", "/v1/claims?wait=1", orjson.dumps(_claim())), ("GET", "/v1/claims/X", None)):
        status, head, answer = call(api.url, method, path, body, {**JSON, **headers})
        assert status == 401 and head["WWW-Authenticate"].startswith("Bearer")
        assert answer["error"]["code"] == "UNAUTHORIZED" and detail in answer["error"]["message"]


@pytest.mark.parametrize("change, field, code", [
    ({"lines": "units"}, "lines[1].units", "SCHEMA"),
    ({"line": {"units": "-2"}}, "lines[1].units", "SCHEMA"),
    ({"line": {"drug": {"quantity": "zero"}}}, "lines[1].drug.quantity", "SCHEMA"),
    ({"line": {"modifiers": ["SH", "TOOLONG"]}}, "lines[1].modifiers[1]", "SCHEMA"),
    ({"line": {"service_date_to": "2099-01-01"}}, "lines[1].service_date_to", "MULTI_DATE"),
    ({"line": {"line_number": 1}}, "lines[1].line_number", "DUPLICATE_LINE_NUMBER"),
    ({"line": {"line_number": 7}}, "lines[1].line_number", "LINE_NUMBER"),
    ({"line": {"member_id": "SOMEONE-ELSE"}}, "lines[1].member_id", "HEADER_MISMATCH"),
    ({"header": {"provider_npi": "1234567890"}}, "provider_npi", "NPI"),
    ({"header": {"form": "UB-04"}}, "form", "FORM"),
    ({"header": {"claim_id": ""}}, "claim_id", "SCHEMA"),
    ({"header": {"lines": []}}, "lines", "SCHEMA"),
    ({"header": {"line_count": 5}}, "line_count", "LINE_NUMBER"),
])
def test_invalid_claim_gets_422_naming_the_field(api, change, field, code):
    body = _claim()
    if "lines" in change:
        del body["lines"][1][change["lines"]]
    body["lines"][1].update(change.get("line", {}))
    body.update(change.get("header", {}))
    status, _, answer = call(api.url, "POST", "/v1/claims?wait=1", orjson.dumps(body), {**AUTH, **JSON})
    assert status == 422, answer
    assert answer["error"]["field"] == field and answer["error"]["code"] == code, answer
    assert answer["error"]["message"]
    if body["claim_id"]:
        status, _, _ = call(api.url, "GET", f"/v1/claims/{body['claim_id']}", headers=AUTH)
        assert status == 404
        # nothing of a refused claim reached the input topic (the 404 alone would also hold
        # for a line published but not yet read): read the topic itself, to its end
        published = [value for _, _, _, _, value in read_to_end(api.bootstrap, [topics.SUBMITTED.name])
                     if value and body["claim_id"].encode() in value]
        assert published == [], "a refused claim's lines were published"


def test_an_empty_claim_names_every_missing_header_field(api):
    status, _, answer = call(api.url, "POST", "/v1/claims", b"{}", {**AUTH, **JSON})
    assert status == 422 and answer["error"]["field"] == "lines"
    assert [(e["field"], e["code"]) for e in answer["error"]["errors"]] == [
        ("lines", "SCHEMA"), ("claim_id", "SCHEMA"), ("form", "SCHEMA"), ("member_id", "SCHEMA"), ("provider_npi", "SCHEMA")]


@pytest.mark.parametrize("body, code", [
    (b"{not json", "MALFORMED_JSON"), (b"\xff\xfe{}", "MALFORMED_JSON"), (b"", "MALFORMED_JSON"),
])
def test_malformed_json_gets_400(api, body, code):
    status, _, answer = call(api.url, "POST", "/v1/claims", body, {**AUTH, **JSON})
    assert status == 400 and answer["error"]["code"] == code


@pytest.mark.parametrize("wait", ["31", "-1", "soon", "nan", "inf", ""])
def test_wait_out_of_range_gets_400(api, wait):
    status, _, answer = call(api.url, "POST", f"/v1/claims?wait={wait}", orjson.dumps(_claim()), {**AUTH, **JSON})
    assert status == 400 and answer["error"]["field"] == "wait"


def test_oversized_body_gets_413(api):
    big = orjson.dumps({**_claim(), "padding": "x" * 1_100_000})
    status, _, answer = call(api.url, "POST", "/v1/claims", big, {**AUTH, **JSON})
    assert status == 413 and answer["error"]["code"] == "TOO_LARGE"
    # no Content-Length (chunked): the limit holds while reading
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("POST", "/v1/claims", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={**AUTH, **JSON}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and orjson.loads(resp.read())["error"]["code"] == "TOO_LARGE"
    conn.close()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])
def test_wrong_content_type_gets_415(api, content_type):
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    status, _, answer = call(api.url, "POST", "/v1/claims", orjson.dumps(_claim()), headers)
    assert status == 415 and answer["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_unknown_claim_gets_404_and_other_methods_405(api):
    status, _, answer = call(api.url, "GET", "/v1/claims/NO-SUCH-CLAIM", headers=AUTH)
    assert status == 404 and answer["error"] == {"code": "NOT_FOUND", "field": "claim_id", "message": answer["error"]["message"]}
    status, _, answer = call(api.url, "DELETE", "/v1/claims/NO-SUCH-CLAIM", headers=AUTH)
    assert status == 405 and answer["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_unknown_route_gets_json_404(api):
    for path in ("/v1/nothing-here", "/v1/claims/A/B/C"):
        status, _, answer = call(api.url, "GET", path, headers=AUTH)
        assert status == 404 and answer["error"]["code"] == "NOT_FOUND"


def test_shadow_impact_of_a_worker_without_a_candidate_gets_404(api):
    status, _, body = call(api.url, "GET", "/v1/shadow/impact?by=rule", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and body["error"]["code"] == "NO_CANDIDATE", body


def test_claim_ids_with_reserved_characters(api):
    body = _claim(claim_id=f"T/{uuid.uuid4().hex[:6]} #1?")
    status, _, answer = call(api.url, "POST", "/v1/claims?wait=15", orjson.dumps(body), {**AUTH, **JSON})
    assert status == 200 and answer["status"] == "DECIDED", answer
    assert answer["status_url"] == "/v1/claims/" + urllib.parse.quote(body["claim_id"], safe="")
    status, _, again = call(api.url, "GET", answer["status_url"], headers=AUTH)
    assert status == 200 and again["claim_id"] == body["claim_id"] and timeless(again["lines"]) == timeless(answer["lines"])


def test_operational_pages_need_no_token(api):
    for path in ("/healthz", "/readyz", "/metrics"):
        with urllib.request.urlopen(api.url + path, timeout=5) as resp:
            assert resp.status == 200


def test_api_is_disabled_without_a_token(module_bootstrap, tmp_path):
    pipe = ApiPipeline(module_bootstrap, tmp_path, token="")
    pipe.start()
    try:
        pipe.wait_for("/healthz")
        for method, path, body in (("POST", "/v1/claims", orjson.dumps(_claim())), ("GET", "/v1/claims/X", None)):
            status, _, answer = call(pipe.url, method, path, body, {**AUTH, **JSON})
            assert status == 503 and answer["error"]["code"] == "API_DISABLED" and "CLAIMS_API_TOKEN" in answer["error"]["message"]
    finally:
        pipe.stop_all()


# --- bounded load test -----------------------------------------------------------------------------


def test_200_concurrent_submissions_are_all_decided(api, capsys):
    claims = [body for body, _ in api_claims(LOAD.lines)]
    assert len(claims) >= 200
    claims = [{**body, "claim_id": f"L-{body['claim_id']}"} for body in claims[:200]]
    before = _e2e_metric(api.url)
    results = asyncio.run(_load(api.url, claims))
    after = _e2e_metric(api.url)
    failures = [(claim["claim_id"], code, answer) for claim, (code, answer, _) in zip(claims, results)
                if code != 200 or answer.get("status") != "DECIDED" or len(answer["lines"]) != len(claim["lines"])]
    assert not failures, failures[:3]
    seconds = sorted(t for _, _, t in results)
    p50, p99 = statistics.quantiles(seconds, n=100)[49], statistics.quantiles(seconds, n=100)[98]
    with capsys.disabled():
        print(f"\n200 concurrent POST /v1/claims?wait=30 ({sum(len(c['lines']) for c in claims)} lines): "
              f"p50 {p50:.2f}s, p99 {p99:.2f}s, max {seconds[-1]:.2f}s; the pipeline's own submission-to-decision "
              f"time (claims_end_to_end_latency_seconds) averaged {(after[0] - before[0]) / max(after[1] - before[1], 1):.2f}s")


def _e2e_metric(url: str) -> tuple[float, float]:
    """(sum, count) of the worker's end-to-end latency histogram."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
              if ln.startswith("claims_end_to_end_latency_seconds_")}
    return values.get("claims_end_to_end_latency_seconds_sum", 0.0), values.get("claims_end_to_end_latency_seconds_count", 0.0)


async def _load(url: str, claims: list[dict]) -> list[tuple[int, dict, float]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers={**AUTH, **JSON},
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one(body):
            started = time.perf_counter()
            async with session.post(f"{url}/v1/claims?wait=30", data=orjson.dumps(body)) as resp:
                answer = await resp.json()
                return resp.status, answer, time.perf_counter() - started

        return await asyncio.gather(*(one(body) for body in claims))
