"""The reviewer's page (GET /review, streams/api/review_page.py): served without a token and
without PHI, a strict CSP and no inline script, the rulebook's denial CARCs in its
configuration; then, in headless Chromium against a real worker on the broker, a reviewer
signs in with their token, filters the queue, opens a line pended by the pipeline, is refused
an amount above the charge (one clear line), pays it, and sees its history, and the PAID
record reaches `claims.lines.adjudicated`. The page's own address never changes and no URL
it requests carries the token or a member id; a screenshot is kept under
var/test-artifacts/."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from rules.rulebook import default_rulebooks
from contract import topics
from tests import browser
from tests.harness import read_to_end, sample_reference
from tests.api_harness import AUTH, JSON, TOKEN, ApiPipeline, call
from tests.test_openapi import fetch

pytestmark = pytest.mark.broker

PAT = f"pat-{uuid.uuid4().hex}"  # a reviewer of the PAYMENT_INTEGRITY queue
CAL = f"cal-{uuid.uuid4().hex}"  # a reviewer of the CLINICAL queue
MEMBER = "M1003"
#: M1003's authorization for the not-otherwise-classified codes the plan reviews
NOC_AUTH = {"authorization_number": "PA26-REVIEW-PAGE", "member_id": MEMBER, "status": "APPROVED",
            "procedure_codes": ["J9999", "J3590", "S9542"], "start_date": "2026-01-01", "end_date": "2026-12-31",
            "approved_units": None}
FACTOR = {"ndc": "68516-4601-02", "quantity": "9000", "unit": "F2", "dosage": "9000 IU", "frequency": "once"}


def claims() -> list[dict[str, Any]]:
    """A factor VIII claim whose 12,000.00 line pends (HIGH_DOLLAR) next to a nursing visit
    that is paid, and a J9999 line (NOC_REVIEW)."""
    header = {"form": "837P", "member_id": MEMBER, "provider_npi": "1987654328", "diagnosis_codes": ["D66"]}
    return [
        {**header, "claim_id": "RV-PAGE-0001", "authorization_number": "PA26-1003", "lines": [
            {"line_number": 1, "procedure_code": "J7192", "modifiers": [], "service_date": "2026-03-16", "units": "9",
             "charge_amount": "12000.00", "drug": FACTOR},
            {"line_number": 2, "procedure_code": "99601", "modifiers": [], "service_date": "2026-03-16", "units": "1",
             "charge_amount": "175.00"}]},
        {**header, "claim_id": "RV-PAGE-0002", "authorization_number": NOC_AUTH["authorization_number"], "lines": [
            {"line_number": 1, "procedure_code": "J9999", "modifiers": [], "service_date": "2026-03-17", "units": "1",
             "charge_amount": "500.00", "drug": {**FACTOR, "quantity": "100", "dosage": "100 IU"}}]},
    ]


@pytest.fixture(scope="module")
def worker(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    workdir = tmp_path_factory.mktemp("review-page")
    pipe = ApiPipeline(module_bootstrap, workdir)
    pipe.reviewers(("Pat Integrity", PAT, ["PAYMENT_INTEGRITY"]), ("Cal Clinical", CAL, ["CLINICAL"]))
    reference = sample_reference()
    reference["authorizations"].append(NOC_AUTH)
    pipe.load_reference(reference)
    with pipe.running():
        yield pipe


def test_page_is_served_without_a_token_with_a_strict_policy(worker):
    status, head, page = fetch(worker.url + "/review")
    assert status == 200 and head["Content-Type"].startswith("text/html")
    csp = head["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert head["Referrer-Policy"] == "no-referrer" and head["Cache-Control"] == "no-store"
    assert b"<script>" not in page and b"<style" not in page and b"http" not in page.replace(b"http-equiv", b"")
    for asset in (b"review/review.js", b"review/review.css"):
        assert b'"' + asset + b'"' in page
        status, head, content = fetch(f"{worker.url}/{asset.decode()}")
        assert status == 200 and content
    assert b"innerHTML" not in fetch(worker.url + "/review/review.js")[2]  # everything shown is text


def test_page_configuration_is_the_rulebooks(worker):
    status, head, raw = fetch(worker.url + "/review/config.json")
    assert status == 200 and head["Content-Type"].startswith("application/json")
    config = json.loads(raw)
    for book in default_rulebooks().books:
        shown = config["policy_versions"][book.version]
        assert [c["carc"] for c in shown["review_denial_carcs"]] == book.review.review_denial_carcs
        assert shown["queues"] == book.review.queues
        assert [r["reason"] for r in shown["reasons"]] == [r.reason for r in book.review.reasons]
    assert all(c["text"] for c in config["policy_versions"][config["default_version"]]["review_denial_carcs"])


#: the scripts the browser runs, one after the other (each an async function)
HELPERS = """
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const $ = id => document.getElementById(id);
  async function until(test, what, timeout = 20000) {
    for (const end = Date.now() + timeout; ; await sleep(50)) {
      const value = test();
      if (value) return value;
      if (Date.now() > end) throw new Error("the page never showed " + what + "; error line: " + $("error").textContent);
    }
  }
  const shown = id => !$(id).hidden && $(id).offsetParent !== null;
  const rows = id => [...$(id).querySelectorAll("tbody tr")].map(tr => [...tr.children].map(td => td.textContent.trim()));
"""

SIGN_IN_WRONG = """async () => {%s
  await until(() => shown("sign-in"), "the sign-in form");
  $("token").value = "not-a-reviewer-token";
  $("sign-in-button").click();
  const error = await until(() => shown("error") && $("error").textContent, "an error");
  return {error, workspace: shown("workspace"), stored: sessionStorage.length};
}""" % HELPERS

READ_ONLY = """async () => {%s
  $("token").value = %s;
  $("sign-in-button").click();
  await until(() => shown("workspace") && rows("queue-table").length >= 2, "the queue");
  document.querySelector("#queue-table button.open").click();
  await until(() => shown("detail") && rows("history").length >= 1, "the line's detail");
  const seen = {who: $("who-name").textContent, queues: $("who-queues").textContent, rows: rows("queue-table"),
                payable: shown("pay-form"),
                deniable: shown("deny-form"), note: $("read-only").textContent, stored: sessionStorage.length};
  $("sign-out").click();
  await until(() => shown("sign-in"), "the sign-in form again");
  return {...seen, after: sessionStorage.length, detailAfter: shown("detail"), notice: $("notice").textContent};
}"""

DENY = """async () => {%s
  $("token").value = %s;
  $("sign-in-button").click();
  await until(() => shown("workspace") && rows("queue-table").length >= 2, "the queue");
  [...document.querySelectorAll("#queue-table button.open")].find(b => b.textContent.includes("RV-PAGE-0002")).click();
  await until(() => shown("detail") && rows("history").length >= 1 && shown("deny-form"), "the line's deny form");
  $("deny-carc").value = "50";
  $("deny-rarc").value = "n115";
  $("deny-note").value = "Not medically necessary for this diagnosis.";
  $("deny-button").click();
  await until(() => shown("result") && rows("history").length >= 2, "the denial and its history");
  const seen = {status: $("result").dataset.status, result: $("result-record").textContent, notice: $("notice").textContent,
                history: rows("history"), who: $("who-name").textContent};
  $("sign-out").click();
  await until(() => shown("sign-in"), "the sign-in form again");
  return seen;
}"""

SIGN_IN = """async () => {%s
  $("token").value = %s;
  $("sign-in-button").click();
  await until(() => shown("workspace") && rows("queue-table").length >= 1, "the queue");
  const all = rows("queue-table");
  $("filter-queue").value = "PAYMENT_INTEGRITY";
  $("filter-queue").dispatchEvent(new Event("change"));
  await until(() => rows("queue-table").length === 1, "the PAYMENT_INTEGRITY queue alone");
  return {who: $("who-name").textContent, queues: $("who-queues").textContent, all, filtered: rows("queue-table"),
          error: shown("error") ? $("error").textContent : null,
          stored: Object.keys(sessionStorage), tokenInStorage: Object.values(sessionStorage).includes(%s)};
}"""

OPEN_AND_PAY = """async () => {%s
  const open = [...document.querySelectorAll("#queue-table button.open")].find(b => b.textContent.includes("RV-PAGE-0001"));
  open.click();
  await until(() => shown("detail") && rows("history").length >= 1, "the line's detail and history");
  const detail = {title: $("detail-title").textContent, pend: $("detail-pend").textContent,
                  pricing: $("detail-pricing").textContent, others: rows("other-lines"),
                  carcs: [...$("deny-carc").options].map(o => o.value), placeholder: $("pay-amount").placeholder,
                  history: rows("history"), payable: shown("pay-form")};
  $("pay-amount").value = "99999.00";
  $("pay-button").click();
  const refused = await until(() => shown("error") && $("error").textContent, "the refusal");
  $("pay-amount").value = "11,500.00";
  $("pay-note").value = "Invoice checked against the assay.";
  $("pay-button").click();
  await until(() => shown("result") && rows("history").length >= 2, "the decision and its history");
  await until(() => !rows("queue-table").some(r => r.join(" ").includes("RV-PAGE-0001")), "the queue without the line");
  return {detail, refused, errorAfter: shown("error"), notice: $("notice").textContent,
          result: $("result-record").textContent, status: $("result").dataset.status, history: rows("history")};
}""" % HELPERS


def _adjudicated(bootstrap: str, claim_id: str, status: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [orjson.loads(v) for t, _, _, _, v in read_to_end(bootstrap, [topics.ADJUDICATED.name], quiet_ms=500)
                 if v and orjson.loads(v).get("claim_id") == claim_id]
        if any(r["status"] == status for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_reviewer_pays_a_pended_line_through_the_page(worker, tmp_path):
    for body in claims():
        status, _, answer = call(worker.url, "POST", "/v1/claims?wait=15", orjson.dumps(body), {**AUTH, **JSON})
        assert status == 200 and answer["status"] == "IN_REVIEW", answer
    by_line = {(r["claim_id"], r["line_number"]): r for r in
               [*_adjudicated(worker.bootstrap, "RV-PAGE-0001", "PENDED"), *_adjudicated(worker.bootstrap, "RV-PAGE-0002", "PENDED")]}
    assert by_line[("RV-PAGE-0001", 1)]["status"] == "PENDED" and by_line[("RV-PAGE-0001", 2)]["status"] == "PAID"
    assert by_line[("RV-PAGE-0002", 1)]["pend"]["reason"] == "NOC_REVIEW"

    shot = browser.artifact(f"review-page-{tmp_path.name}.png")
    url = worker.url + "/review"
    scripts = [SIGN_IN_WRONG, READ_ONLY % (HELPERS, json.dumps(TOKEN)), DENY % (HELPERS, json.dumps(CAL)),
               SIGN_IN % (HELPERS, json.dumps(PAT), json.dumps(PAT)), OPEN_AND_PAY]
    seen = browser.visit(url, scripts, tmp_path / "chromium", shot)
    print(f"\nscreenshot of /review after paying a line: {shot}")
    wrong, read_only, denied, signed_in, paid = seen.results

    assert wrong["error"].startswith("401") and not wrong["workspace"] and wrong["stored"] == 0
    # the API token reads the queue and decides nothing: no forms; signing out forgets the token
    assert read_only["who"] == "default" and read_only["queues"] == "reads only" and read_only["stored"] == 1
    assert not read_only["payable"] and not read_only["deniable"] and "not decide" in read_only["note"]
    assert read_only["after"] == 0 and not read_only["detailAfter"] and read_only["notice"] == "Signed out."
    assert [r[3] for r in read_only["rows"]] == ["RV-PAGE-0001 / 1", "RV-PAGE-0002 / 1"]  # oldest first
    # a CLINICAL reviewer denies the J9999 line with a CARC of the rulebook's list
    assert denied["who"] == "Cal Clinical" and denied["status"] == "DENIED" and "CO-50 (N115) 500.00 REVIEW-DENIED" in denied["result"]
    assert [r[1:3] for r in denied["history"]] == [["PENDED", "REVIEW-NOC"], ["DECIDED", "Cal Clinical"]]
    assert signed_in["who"] == "Pat Integrity" and "PAYMENT_INTEGRITY" in signed_in["queues"] and not signed_in["error"]
    assert signed_in["tokenInStorage"] and signed_in["stored"] == ["claims-review-token"]
    assert [r[3] for r in signed_in["all"]] == ["RV-PAGE-0001 / 1"]  # the J9999 line was decided
    assert [(r[1], r[2], r[3]) for r in signed_in["filtered"]] == [("PAYMENT_INTEGRITY", "HIGH_DOLLAR", "RV-PAGE-0001 / 1")]

    detail = paid["detail"]
    assert "HIGH_DOLLAR" in detail["pend"] and "REVIEW-HIGH-DOLLAR" in detail["pend"] and "12,000.00" in detail["pend"]
    assert "AWP" in detail["pricing"] and detail["placeholder"] == "12000.00" and detail["payable"]
    assert detail["others"] == [["2", "99601", "PAID", "147.25"]]
    assert detail["carcs"] == default_rulebooks().books[-1].review.review_denial_carcs
    assert [r[1] for r in detail["history"]] == ["PENDED"]
    assert paid["refused"].startswith("422") and "allowed_amount" in paid["refused"] and "\n" not in paid["refused"]
    assert not paid["errorAfter"] and "PAID at 11,500.00" in paid["notice"]
    assert paid["status"] == "PAID" and "Pat Integrity" in paid["result"] and "REVIEW-PRICED" in paid["result"]
    assert [r[1] for r in paid["history"]] == ["PENDED", "DECIDED"] and paid["history"][1][2] == "Pat Integrity"

    # no PHI in the page's address or in any URL it asked for, and never the token
    assert set(seen.locations) == {url}, seen.locations
    assert all(MEMBER not in u and PAT not in u and TOKEN not in u for u in seen.requests), seen.requests
    log = worker.log("w1").read_text(encoding="utf-8", errors="replace")
    assert MEMBER not in log and "RV-PAGE-000" not in log and PAT not in log and TOKEN not in log
    assert not [c for c in seen.console if c.startswith("exception")], seen.console
    assert shot.stat().st_size > 10_000

    final = [r for r in _adjudicated(worker.bootstrap, "RV-PAGE-0001", "PAID") if r["line_number"] == 1 and r["status"] == "PAID"]
    assert len(final) == 1, final
    record = final[0]
    assert record["allowed_amount"] == "11500.00" and record["pend"] is None
    assert record["review"]["action"] == "PAY" and record["review"]["reviewer"] == "Pat Integrity"
    assert record["review"]["note"] == "Invoice checked against the assay."
    assert [(a["group"], a["carc"], a["rule"], a["amount"]) for a in record["adjustments"]] == [("CO", "45", "REVIEW-PRICED", "500.00")]
    denial = [r for r in _adjudicated(worker.bootstrap, "RV-PAGE-0002", "DENIED") if r["status"] == "DENIED"]
    assert len(denial) == 1 and denial[0]["review"]["reviewer"] == "Cal Clinical"
    assert [(a["group"], a["carc"], a["rarc"], a["rule"], a["amount"]) for a in denial[0]["adjustments"]] == \
        [("CO", "50", ["N115"], "REVIEW-DENIED", "500.00")]
    status, _, queue = call(worker.url, "GET", "/v1/reviews", headers={"Authorization": f"Bearer {PAT}"})
    assert status == 200 and queue == []
