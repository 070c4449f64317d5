"""The review API end to end (CONTRACT.md *Pended lines and manual review*): a real worker on
a real broker, reviewers from CLAIMS_REVIEWERS_FILE, lines pended by the pipeline, decided
over HTTP; every status of the contract's table (401, 403, 404, 409, 422, idempotent 200),
the final record on `claims.lines.adjudicated` once, the claim's 835 held until every line
is final, the history, the queue's filters, and the pend metrics.

One worker for the module (`review_api`): the tests use claims of their own."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from contract import topics
from tests.api_harness import AUTH, JSON, ApiPipeline, bearer, call
from tests.harness import read_to_end
from tests.probes import wait_for
from tests.review_harness import (
    CLINICAL,
    INTEGRITY,
    MEMBER,
    claim,
    day,
    decide,
    factor_line,
    noc_line,
    submit,
)

pytestmark = pytest.mark.broker


# --- pended, listed, decided ------------------------------------------------------------------


def test_a_pended_line_is_paid_by_its_reviewer_and_published_once(review_api):
    pipe, claim_id = review_api, f"RV-{uuid.uuid4().hex[:8]}"
    answer = submit(pipe, claim(claim_id, factor_line(charge="15000.00", day=day(2)),
                                {"procedure_code": "99601", "units": "1", "charge_amount": "100.00", "service_date": day(2)}))
    assert answer["status"] == "IN_REVIEW"
    pended, nursing = answer["lines"]
    assert (pended["status"], pended["allowed_amount"], pended["pend"]["reason"], pended["pend"]["queue"]) == \
        ("PENDED", "0.00", "HIGH_DOLLAR", "PAYMENT_INTEGRITY")
    assert pended["pend"]["suggested_amount"] == "12507.75" and nursing["status"] == "PAID" and nursing["pend"] is None

    status, _, queue = call(pipe.url, "GET", "/v1/reviews?queue=PAYMENT_INTEGRITY", headers=bearer(INTEGRITY))
    item = next(i for i in queue if i["claim_id"] == claim_id)
    assert status == 200 and item["line_number"] == 1 and item["charge_amount"] == "15000.00"
    assert item["suggested_amount"] == "12507.75" and item["member_id"] == MEMBER and item["age_seconds"] >= 0
    assert item["other_lines"] == [{"line_number": 2, "procedure_code": "99601", "status": "PAID",
                                    "allowed_amount": nursing["allowed_amount"]}]

    status, paid = decide(pipe, INTEGRITY, claim_id, 1, {"action": "PAY", "allowed_amount": "12000.00", "note": "invoice ok"})
    assert status == 200, paid
    assert (paid["status"], paid["allowed_amount"], paid["pend"]) == ("PAID", "12000.00", None)
    assert paid["review"]["action"] == "PAY" and paid["review"]["reviewer"] == "Ines Integrity"
    assert [(a["carc"], a["amount"], a["rule"]) for a in paid["adjustments"]] == [("45", "3000.00", "REVIEW-PRICED")]
    status, again = decide(pipe, INTEGRITY, claim_id, 1, {"action": "PAY", "allowed_amount": "12000"})
    assert status == 200 and again == paid  # idempotent: the stored record, not a second decision

    status, _, view = call(pipe.url, "GET", f"/v1/claims/{claim_id}", headers=AUTH)
    assert status == 200 and view["status"] == "DECIDED" and view["lines"][0]["review"]["reviewer"] == "Ines Integrity"
    status, _, history = call(pipe.url, "GET", f"/v1/reviews/{claim_id}/1/history", headers=AUTH)
    assert status == 200 and [(e["event"], e["by"]) for e in history] == \
        [("PENDED", "REVIEW-HIGH-DOLLAR"), ("DECIDED", "Ines Integrity")]
    assert history[1]["note"] == "invoice ok"

    records = _records_of(pipe, claim_id, 2)
    assert [(r["line_number"], r["status"]) for r in records] == [(1, "PENDED"), (2, "PAID"), (1, "PAID")]
    assert {k: v for k, v in records[2].items() if k != "adjudicated_at"} == \
        {k: v for k, v in paid.items() if k != "adjudicated_at"}
    remits = wait_for(lambda: [v for t, _, _, k, v in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name]) if k == claim_id.encode()],
                      30, f"the 835 of {claim_id}, written after its final decisions")
    assert len(remits) == 1
    text = remits[0].decode()
    assert f"CLP*{claim_id}*1*15100.00*12100.00*" in text and "SVC*HC:J7192*15000.00*12000.00~" in text, text  # both lines, the reviewer's amount (12,000.00 + 100.00)


def _records_of(pipe: ApiPipeline, claim_id: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = [orjson.loads(v) for _, _, _, k, v in read_to_end(pipe.bootstrap, [topics.ADJUDICATED.name], quiet_ms=300)
                   if k == claim_id.encode()]
        if len(records) > count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_a_denial_releases_the_duplicate_hold_and_the_queue_filters(review_api):
    pipe = review_api
    first, second, third = (f"RD-{uuid.uuid4().hex[:8]}" for _ in range(3))
    assert submit(pipe, claim(first, factor_line(day=day(5))))["lines"][0]["status"] == "PENDED"
    dup = submit(pipe, claim(second, factor_line(day=day(5))))["lines"][0]
    assert dup["status"] == "DENIED" and [a["carc"] for a in dup["adjustments"]] == ["18"]
    noc = submit(pipe, claim(f"RN-{uuid.uuid4().hex[:8]}", noc_line(day=day(5))))["lines"][0]
    assert (noc["status"], noc["pend"]["reason"], noc["pend"]["queue"]) == ("PENDED", "NOC_REVIEW", "CLINICAL")

    _, _, clinical = call(pipe.url, "GET", "/v1/reviews?queue=CLINICAL", headers=AUTH)
    _, _, noc_only = call(pipe.url, "GET", "/v1/reviews?reason=NOC_REVIEW&limit=500", headers=AUTH)
    assert {i["queue"] for i in clinical} == {"CLINICAL"} and noc["claim_id"] in {i["claim_id"] for i in noc_only}
    ages = [i["pended_at"] for i in noc_only]
    assert ages == sorted(ages)  # oldest first

    status, denied = decide(pipe, INTEGRITY, first, 1, {"action": "DENY", "carc": "50", "rarc": ["N115"]})
    assert status == 200 and denied["status"] == "DENIED"
    assert [(a["group"], a["carc"], a["rarc"], a["amount"], a["rule"]) for a in denied["adjustments"]] == \
        [("CO", "50", ["N115"], "12000.00", "REVIEW-DENIED")]
    assert submit(pipe, claim(third, factor_line(day=day(5))))["lines"][0]["status"] == "PENDED"  # no longer a duplicate


def test_every_refusal_of_the_contracts_table(review_api):
    pipe, claim_id = review_api, f"RE-{uuid.uuid4().hex[:8]}"
    submit(pipe, claim(claim_id, factor_line(day=day(8))))
    path = f"/v1/reviews/{claim_id}/1"
    # 401: no token, an unknown one
    assert call(pipe.url, "POST", path, b'{"action": "PAY"}', JSON)[0] == 401
    assert decide(pipe, "not-a-token", claim_id, 1, {"action": "PAY"})[0] == 401
    # 403: the API token reads but does not decide; a reviewer outside the line's queue; a reviewer elsewhere
    status, answer = decide(pipe, AUTH["Authorization"].split()[1], claim_id, 1, {"action": "PAY"})
    assert status == 403 and answer["error"]["code"] == "FORBIDDEN"
    status, answer = decide(pipe, CLINICAL, claim_id, 1, {"action": "PAY"})
    assert status == 403 and "PAYMENT_INTEGRITY" in answer["error"]["message"]
    assert call(pipe.url, "POST", "/v1/claims/simulate", b"{}", {**bearer(CLINICAL), **JSON})[0] == 403
    assert call(pipe.url, "GET", "/v1/reviews", headers=bearer(CLINICAL))[0] == 200
    # 404: no such claim or line, a line never pended, not a line number
    assert decide(pipe, INTEGRITY, "NO-SUCH-CLAIM", 1, {"action": "PAY"})[0] == 404
    assert decide(pipe, INTEGRITY, claim_id, 2, {"action": "PAY"})[0] == 404
    assert decide(pipe, INTEGRITY, claim_id, "x", {"action": "PAY"})[0] == 404
    assert call(pipe.url, "GET", f"/v1/reviews/{claim_id}/2/history", headers=AUTH)[0] == 404
    # 422, naming the field
    for body, field in (({"action": "PAY", "allowed_amount": "12000.01"}, "allowed_amount"),
                        ({"action": "PAY", "allowed_amount": "-5"}, "allowed_amount"),
                        ({"action": "PAY", "allowed_amount": "1.005"}, "allowed_amount"),
                        ({"action": "DENY", "carc": "45"}, "carc"),
                        ({"action": "MAYBE"}, "action"),
                        ([1, 2], "body")):
        status, answer = decide(pipe, INTEGRITY, claim_id, 1, body)
        assert (status, answer["error"]["field"]) == (422, field), (body, answer)
    assert decide(pipe, INTEGRITY, claim_id, 1, b"{not json")[0] == 400
    # 200, then 409 for a different decision, with the line's current record
    status, paid = decide(pipe, INTEGRITY, claim_id, 1, {"action": "PAY"})
    assert status == 200 and paid["allowed_amount"] == "12000.00"
    status, answer = decide(pipe, INTEGRITY, claim_id, 1, {"action": "DENY", "carc": "96"})
    assert status == 409 and answer["current"] == paid and answer["error"]["code"] == "CONFLICT"
    assert {k: v for k, v in answer.items() if k not in ("error", "current")} == paid  # the current record itself
    # 409 for a line reversed by a correction
    pended_id = f"RC-{uuid.uuid4().hex[:8]}"
    submit(pipe, claim(pended_id, noc_line(day=day(9))))
    void = submit(pipe, claim(f"{pended_id}-V", noc_line(day=day(9)), claim_frequency="8", original_claim_id=pended_id))
    assert [r["status"] for r in void["reversals"]] == ["REVERSED"] and void["reversals"][0]["pend"] is None
    status, answer = decide(pipe, CLINICAL, pended_id, 1, {"action": "PAY"})
    assert status == 409 and answer["current"]["status"] == "REVERSED"
    status, _, history = call(pipe.url, "GET", f"/v1/reviews/{pended_id}/1/history", headers=bearer(CLINICAL))
    assert [e["event"] for e in history] == ["PENDED", "REVERSED"]


def test_who_am_i_and_the_pend_metrics(review_api):
    pipe = review_api
    status, _, me = call(pipe.url, "GET", "/v1/reviews/me", headers=bearer(CLINICAL))
    assert status == 200 and (me["name"], me["can_decide"], me["queues"]) == ("Casey Clinical", True, ["CLINICAL"])
    assert me["review_denial_carcs"] == ["16", "50", "96", "197", "252"]
    status, _, me = call(pipe.url, "GET", "/v1/reviews/me", headers=AUTH)
    assert (me["name"], me["can_decide"]) == ("default", False)
    submit(pipe, claim(f"RM-{uuid.uuid4().hex[:8]}", noc_line(day=day(12))))
    deadline = time.monotonic() + 15
    while True:
        samples = {(name, labels.get("queue"), labels.get("reason")): value for name, labels, value in pipe.metrics()
                   if name.startswith("claims_review_")}
        if samples.get(("claims_review_pended_lines", "CLINICAL", "NOC_REVIEW"), 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert samples[("claims_review_pended_lines", "CLINICAL", "NOC_REVIEW")] >= 1
    assert samples[("claims_review_oldest_pend_age_seconds", "CLINICAL", None)] >= 0
    assert ("claims_review_decisions_total", "PAYMENT_INTEGRITY", None) in samples
    assert not any(MEMBER in str(key) for key in samples)
