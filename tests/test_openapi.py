"""The /v1 API's OpenAPI document (docs/openapi.json, GET /v1/openapi.json) and its reference
page (GET /v1/docs): current with the models, valid OpenAPI 3.1, listing every route the
worker registers; then, against one real worker with the sample reference data, a bounded
schemathesis run driven by the document alone, and Swagger UI used in headless Chromium."""

from __future__ import annotations

import json
import os
import uuid
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from rules.rulebook import candidate_path
from streams.api import base, claims as api, models as api_models, openapi, x12 as x12_api
from streams.worker.reviewers import SCOPES
from streams.build import build_worker
from streams.settings import Settings
from tests import browser
from tests.harness import sample_reference
from tests.api_harness import TOKEN, ApiPipeline, api_claims, call

ROOT = Path(__file__).resolve().parents[1]
#: routes that answer for another documented operation: a claim whose id is "simulate"
SAME_AS = {("get", "/v1/claims/simulate"): ("get", "/v1/claims/{claim_id}")}
#: the schemathesis run: the checks the issue asks for (and 405s with a right `Allow`), bounded, reproducible
FUZZ_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
               "unsupported_method")
FUZZ_EXAMPLES = 100
#: a reviewer's token: the second schemathesis pass drives the review routes with it
REVIEWER = f"reviewer-{uuid.uuid4().hex}"
#: a scoped client of CLAIMS_CLIENTS_FILE (every scope): the first schemathesis pass runs with it
FUZZ_CLIENT = f"fuzz-{uuid.uuid4().hex}"
FUZZ_SEED = 20261201
FUZZ_TIMEOUT_S = 600  # per run; a loaded 2-core machine needs far more than a quiet one (about 100 s)


def documented() -> set[tuple[str, str]]:
    return {(method, path) for path, ops in openapi.document()["paths"].items() for method in ops}


# --- no worker ----------------------------------------------------------------------------------------


def test_committed_document_is_current():
    assert not openapi.stale(), ("docs/openapi.json is stale: a model or route changed; run `python -m streams.api.openapi` "
                                 "and commit the result (review the diff: it is an API change)")


def test_check_command_detects_a_model_change(tmp_path, monkeypatch, capsys):
    out = tmp_path / "openapi.json"
    assert openapi.main(["--out", str(out)]) == 0
    assert openapi.main(["--check", "--out", str(out)]) == 0

    class ErrorAnswer(api_models.ErrorAnswer):
        request_id: str | None = None

    monkeypatch.setattr(openapi, "MODELS", tuple((ErrorAnswer if m is api_models.ErrorAnswer else m, mode)
                                                 for m, mode in openapi.MODELS))
    openapi.document.cache_clear()
    openapi.render.cache_clear()
    try:
        assert openapi.main(["--check", "--out", str(out)]) == 1
        assert "stale" in capsys.readouterr().err
    finally:
        monkeypatch.undo()
        openapi.document.cache_clear()
        openapi.render.cache_clear()


def test_document_is_valid_openapi_3_1():
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    errors = [e.message for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert not errors, errors[:5]


#: a worker assembled as `claims-pipeline worker` does: its routes are what the API serves
app = build_worker(Settings()).app


def test_document_lists_every_api_route():
    """Every method a /v1 view answers (not with 405) is an operation of the document, and
    nothing else is; the reference routes themselves are not API operations."""
    registered = {(method.lower(), path) for path, view in app.web.views.items() if isinstance(view, base.ApiView)
                  for method in view.allowed_methods() if method != "HEAD"}
    assert {SAME_AS.get(r, r) for r in registered} == documented()


def test_every_api_view_declares_a_scope_and_its_operation_ids():
    """Every method a /v1 view answers names its operation (the document's operationId for that
    path and method, which the access log records) and a contract scope."""
    document = openapi.document()["paths"]
    for path, view in app.web.views.items():
        if not isinstance(view, base.ApiView):
            continue
        methods = [m for m in view.allowed_methods() if m != "HEAD"]
        assert set(view.operations) == set(methods), (path, view.operations)
        for method in methods:
            doc_method, doc_path = SAME_AS.get((method.lower(), path), (method.lower(), path))
            operation, scope = view.operations[method]
            assert document[doc_path][doc_method]["operationId"] == operation, (path, method)
            assert scope in SCOPES, (path, method, scope)


def test_request_example_is_a_claim_the_api_accepts():
    example = openapi.document()["paths"]["/v1/claims"]["post"]["requestBody"]["content"]["application/json"]["example"]
    lines = api.claim_lines(example)  # ApiError if the front end refused it
    assert len(lines) == len(example["lines"]) and lines[0]["claim_id"] == example["claim_id"]


# --- one worker, the sample reference data --------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    """A worker with the sample reference data and a candidate rulebook (so `?candidate=true`
    is answered too)."""
    workdir = tmp_path_factory.mktemp("openapi-worker")
    pipe = ApiPipeline(module_bootstrap, workdir)
    pipe.env["CLAIMS_SHADOW_RULEBOOK"] = str(candidate_path("hit-jz-2027-01-01.toml"))
    pipe.reviewers(("Fuzz Reviewer", REVIEWER, ["PAYMENT_INTEGRITY", "CLINICAL"]))
    pipe.clients(("fuzz", FUZZ_CLIENT, list(SCOPES)))
    pipe.load_reference(sample_reference())
    with pipe.running():
        yield pipe


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET, with no token unless `headers` give one."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


@pytest.mark.broker
def test_worker_serves_the_document_and_the_page_without_a_token(worker):
    status, head, body = fetch(worker.url + "/v1/openapi.json")
    assert status == 200 and head["Content-Type"].startswith("application/json")
    assert json.loads(body) == json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    status, head, page = fetch(worker.url + "/v1/docs")
    assert status == 200 and head["Content-Type"].startswith("text/html") and "script-src 'self'" in head["Content-Security-Policy"]
    for asset in re.findall(rb'(?:src|href)="([^"]+)"', page):
        status, _, content = fetch(f"{worker.url}/v1/{asset.decode()}")
        assert status == 200 and content, asset


@pytest.mark.broker
def test_reference_is_served_with_the_api_disabled(module_bootstrap, tmp_path):
    """A worker without CLAIMS_API_TOKEN answers every operation 503, and still documents them."""
    pipe = ApiPipeline(module_bootstrap, tmp_path, token="")
    pipe.start()
    try:
        pipe.wait_for("/healthz")
        status, _, body = fetch(pipe.url + "/v1/openapi.json")
        assert status == 200 and json.loads(body) == openapi.document()
        assert fetch(pipe.url + "/v1/docs")[0] == 200
    finally:
        pipe.stop_all()


def answer_validator(path: str, method: str, status: int, media: str = "application/json") -> Draft202012Validator:
    """The JSON Schema (2020-12, as OpenAPI 3.1 has it) of one documented answer."""
    document = openapi.document()
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return Draft202012Validator({**response["content"][media]["schema"], "components": document["components"]})


def assert_documented(path: str, method: str, status: int, answer: Any, media: str = "application/json") -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in answer_validator(path, method, status, media).iter_errors(answer)]
    assert not errors, f"{method.upper()} {path} {status} does not meet the document: {errors[:5]}"


@pytest.mark.broker
def test_every_kind_of_answer_meets_the_document(worker):
    """Every sample claim over HTTP (every rule: PAID and DENIED lines), a line added to a
    decided claim (a rejection), what-if live and candidate, the 835, the ClaimResponse and
    a waited 837P: each answer meets the document's schema for its status."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    statuses, kinds = set(), set()
    claims = [body for body, _ in api_claims((ROOT / "streams" / "sample_data" / "claims.jsonl").read_bytes().splitlines())]
    first = claims[0]
    closed = {**first, "lines": [*first["lines"], {**first["lines"][0], "line_number": len(first["lines"]) + 1}]}
    for body in [*claims, closed]:
        status, _, answer = call(worker.url, "POST", "/v1/claims?wait=10", orjson.dumps(body), headers)
        assert_documented("/v1/claims", "post", status, answer)
        statuses.add(answer["status"])
        kinds |= {(r["topic"], r.get("status")) for r in answer.get("lines", [])}
    assert {"DECIDED", "PARTIALLY_REJECTED"} <= statuses
    assert {("claims.lines.adjudicated", "PAID"), ("claims.lines.adjudicated", "DENIED"),
            ("claims.lines.rejected", None)} <= kinds
    for query in ("", "?candidate=true"):
        status, _, answer = call(worker.url, "POST", f"/v1/claims/simulate{query}", orjson.dumps(claims[1]), headers)
        assert status == 200 and answer["simulated"] is True
        assert_documented("/v1/claims/simulate", "post", status, answer)
    status, head, raw = fetch(f"{worker.url}/v1/claims/{first['claim_id']}/remittance", headers)
    answer = json.loads(raw)
    assert status == 200 and head["Content-Type"] == x12_api.FHIR_MEDIA_TYPE and answer["resourceType"] == "ClaimResponse"
    assert_documented("/v1/claims/{claim_id}/remittance", "get", status, answer, x12_api.FHIR_MEDIA_TYPE)
    x12 = (ROOT / "streams" / "sample_data" / "claims.837").read_bytes()
    status, _, answer = call(worker.url, "POST", "/v1/x12/837?wait=15", x12,
                             {**headers, "Content-Type": x12_api.X12_MEDIA_TYPE})
    assert status == 200 and answer["claims"][0]["status"] == "DECIDED", answer
    assert_documented("/v1/x12/837", "post", status, answer)


@pytest.mark.broker
def test_answers_of_a_worker_without_reference_data_meet_the_document(fresh_bootstrap, tmp_path):
    """Accepted and pending claims say why they wait (no reference data); what-if is 503
    NOT_READY with Retry-After: each as the document says. A broker of its own: on the module's,
    the reference data the module's worker loaded would be read, and the two would share a group."""
    pipe = ApiPipeline(fresh_bootstrap, tmp_path)
    pipe.start()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = orjson.dumps(openapi.document()["paths"]["/v1/claims"]["post"]["requestBody"]["content"]["application/json"]["example"])
    try:
        pipe.wait_for("/healthz")
        for query in ("", "?wait=0.5"):
            status, _, answer = call(pipe.url, "POST", f"/v1/claims{query}", body, headers)
            assert status == 202 and "reference data" in answer["reason"], answer
            assert_documented("/v1/claims", "post", status, answer)
        status, head, answer = call(pipe.url, "POST", "/v1/claims/simulate", body, headers)
        assert status == 503 and answer["error"]["code"] == "NOT_READY" and head["Retry-After"] == "1"
        assert_documented("/v1/claims/simulate", "post", status, answer)
    finally:
        pipe.stop_all()


@pytest.mark.broker
def test_schemathesis_finds_nothing(worker, tmp_path):
    """schemathesis, driven by the served document alone (every phase: its examples, boundary
    coverage, fuzzing, stateful sequences through the inferred links), with a scoped client's
    token (CLAIMS_CLIENTS_FILE, every scope)."""
    done = _schemathesis(worker, tmp_path / "api", FUZZ_CLIENT)
    assert "15 selected / 15 total" in done.stdout
    # the review and reprocess routes again with a reviewer's token, which may decide (the API token may not)
    done = _schemathesis(worker, tmp_path / "review", REVIEWER, "--include-tag", "review")
    assert "7 selected / 15 total" in done.stdout


def _schemathesis(worker: ApiPipeline, tmp_path: Path, token: str, *select: str) -> subprocess.CompletedProcess:
    tmp_path.mkdir()
    report = tmp_path / "schemathesis"
    config = tmp_path / "schemathesis.toml"  # no crash cache: a run replays nothing of an earlier one
    config.write_text("[cache]\nenabled = false\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
           f"{worker.url}/v1/openapi.json", "--url", worker.url, *select,
           "-H", f"Authorization: Bearer {token}", "--checks", FUZZ_CHECKS, "--max-examples", str(FUZZ_EXAMPLES),
           "--seed", str(FUZZ_SEED), "--generation-database", "none", "--workers", "1", "--request-timeout", "40",
           "--no-color", "--report", "junit", "--report-dir", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S, cwd=ROOT,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"})
    summary = done.stdout[done.stdout.rfind("SUMMARY"):] if "SUMMARY" in done.stdout else done.stdout[-3000:]
    print(f"\nschemathesis (report in {report}):\n{summary}")
    assert done.returncode == 0, f"schemathesis found problems:\n{done.stdout[-20000:]}\n{done.stderr[-3000:]}"
    return done


#: Swagger UI as a person uses it: read the operations it lists, press Authorize and paste the
#: bearer token, then "Try it out" and "Execute" one operation with its example, and read the
#: answer. Runs in the page; every step waits for what it needs (Swagger UI renders asynchronously)
TRY_IT_OUT = """(async (token, operationId) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  async function find(selector, root = document, timeout = 30000) {
    for (const end = Date.now() + timeout; ; await sleep(100)) {
      const el = root.querySelector(selector);
      if (el) return el;
      if (Date.now() > end) throw new Error("Swagger UI shows no " + selector);
    }
  }
  function type(input, value) {  // a React-controlled input
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, value);
    input.dispatchEvent(new Event("input", {bubbles: true}));
  }
  await find(".opblock");
  const operations = [...document.querySelectorAll(".opblock")].map(op => [
    op.querySelector(".opblock-summary-method").textContent.toLowerCase(),
    op.querySelector(".opblock-summary-path").dataset.path]);
  const servers = [...document.querySelectorAll(".servers select option")].map(o => o.value);
  (await find(".auth-wrapper .authorize")).click();
  type(await find(".modal-ux input"), token);
  (await find(".modal-ux button.authorize")).click();
  (await find(".modal-ux button.btn-done")).click();
  const op = await find("[id$='-" + operationId + "']");
  (await find(".opblock-summary-control", op)).click();
  (await find(".try-out__btn", op)).click();
  (await find("button.execute", op)).click();
  const status = await find(".live-responses-table tr.response .response-col_status", op);
  const body = await find(".live-responses-table .response-col_description pre", op);
  return {operations, servers, status: status.textContent.trim(), body: body.textContent};
})"""


@pytest.mark.broker
def test_reference_page_in_a_browser_lists_every_operation_and_tries_one_out(worker, tmp_path):
    """Swagger UI in headless Chromium: every operation listed, the server is the page's own
    origin, and Authorize + "Try it out" + Execute submits the example claim to this worker."""
    shot = browser.artifact(f"v1-docs-{tmp_path.name}.png")
    script = f"() => {TRY_IT_OUT}({json.dumps(TOKEN)}, {json.dumps('submitClaim')})"
    seen = browser.visit(worker.url + "/v1/docs", [script], tmp_path / "chromium", shot, timeout=90, height=2000).results[0]
    print(f"\nscreenshot of /v1/docs after Try it out: {shot}")
    assert {tuple(op) for op in seen["operations"]} == documented()
    assert seen["servers"] == ["/"]
    example = openapi.document()["paths"]["/v1/claims"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert seen["status"] == "202", seen
    assert json.loads(seen["body"]) == {"claim_id": example["claim_id"], "status": "ACCEPTED",
                                        "status_url": f"/v1/claims/{example['claim_id']}"}
    assert shot.stat().st_size > 10_000
