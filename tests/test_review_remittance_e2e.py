"""Remittance held until final, end to end on one worker (CONTRACT.md *Pended lines and manual
review*, *Corrections and voids*): a replacement whose own line pends gets no 835 (HTTP 409
PENDED, FHIR outcome `queued`) until its reviewer decides, and its 835 then starts with the
reversal of the original before its own payment; a claim replaced while pended was never
remitted, so the replacement's 835 takes nothing back and the original's own 835 answers
409 NO_REMITTANCE."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from edi import remit835
from contract import topics
from tests.harness import read_to_end
from tests.api_harness import AUTH
from tests.review_harness import INTEGRITY, claim, decide, factor_line, submit

pytestmark = pytest.mark.broker


def nursing(day: str) -> dict:
    return {"procedure_code": "99601", "units": "1", "charge_amount": "100.00", "service_date": day}


def get_835(pipe, claim_id: str, route: str = "835") -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{pipe.url}/v1/claims/{claim_id}/{route}", headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def remits(pipe, claim_id: str, timeout: float = 0.0) -> list[str]:
    """The 835s on claims.remittance.835 keyed `claim_id` (waiting up to `timeout` for one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [v.decode() for _, _, _, k, v in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name])
                 if k == claim_id.encode()]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def test_a_replacement_whose_line_pends_is_remitted_with_its_reversal_once_final(review_api):
    pipe, run = review_api, uuid.uuid4().hex[:6]
    original, replacement = f"RR-{run}-1", f"RR-{run}-2"
    answer = submit(pipe, claim(original, nursing("2026-04-01")))
    assert answer["status"] == "DECIDED" and len(remits(pipe, original, 30)) >= 1  # remitted at once
    answer = submit(pipe, claim(replacement, factor_line(charge="15000.00", day="2026-04-01"), nursing("2026-04-01"),
                                claim_frequency="7", original_claim_id=original))
    assert [line["status"] for line in answer["lines"]] == ["PENDED", "PAID"]

    status, body = get_835(pipe, replacement)
    refusal = orjson.loads(body)
    assert status == 409 and refusal["error"]["code"] == "PENDED" and refusal["error"]["field"] is None
    assert [(p["line_number"], p["reason"], p["queue"]) for p in refusal["pended_lines"]] == \
        [(1, "HIGH_DOLLAR", "PAYMENT_INTEGRITY")]
    status, body = get_835(pipe, replacement, "remittance")
    resource = orjson.loads(body)
    assert status == 200 and resource["outcome"] == "queued" and "payment" not in resource
    time.sleep(1.0)
    assert remits(pipe, replacement) == []  # held: the adjudicate stage handed nothing on

    status, paid = decide(pipe, INTEGRITY, replacement, 1, {"action": "PAY", "allowed_amount": "12000.00"})
    assert status == 200 and paid["status"] == "PAID"
    status, body = get_835(pipe, replacement)
    assert status == 200
    reversal, payment = remit835.read(body.decode())
    assert (reversal.claim_id, reversal.status, reversal.paid) == (original, "22", -100)
    assert (payment.claim_id, payment.status, payment.paid) == (replacement, "1", 12100)
    assert reversal.transaction == payment.transaction
    resource = orjson.loads(get_835(pipe, replacement, "remittance")[1])
    assert resource["outcome"] == "complete" and resource["payment"]["amount"]["value"] == 12100.0

    published = remits(pipe, replacement, 30)
    assert published, "no 835 for the replacement once final"
    assert [(c.claim_id, c.status) for c in remit835.read(published[-1])] == [(original, "22"), (replacement, "1")]


def test_a_claim_replaced_while_pended_is_never_remitted(review_api):
    pipe, run = review_api, uuid.uuid4().hex[:6]
    original, replacement = f"RW-{run}-1", f"RW-{run}-2"
    answer = submit(pipe, claim(original, factor_line(day="2026-04-02"), nursing("2026-04-02")))
    assert [line["status"] for line in answer["lines"]] == ["PENDED", "PAID"]
    answer = submit(pipe, claim(replacement, nursing("2026-04-02"), claim_frequency="7", original_claim_id=original))
    assert answer["lines"][0]["status"] == "PAID"
    [text] = remits(pipe, replacement, 30)[:1]
    assert [(c.claim_id, c.status, c.paid) for c in remit835.read(text)] == [(replacement, "1", 100)]  # nothing taken back
    status, body = get_835(pipe, original)
    assert status == 409 and orjson.loads(body)["error"]["code"] == "NO_REMITTANCE"
    status, body = get_835(pipe, replacement)
    assert status == 200 and [c.claim_id for c in remit835.read(body.decode())] == [replacement]
    assert remits(pipe, original) == []
    status, answer = decide(pipe, INTEGRITY, original, 1, {"action": "PAY"})
    assert status == 409  # reversed: it can no longer be decided


def test_a_pended_replacement_of_a_claim_replaced_while_pended_takes_nothing_back(review_api):
    """R1 (a nursing visit paid, a factor line pended) is never remitted; R2 replaces it and
    pends in turn: once R2 is decided its 835 carries R2 only (R1's 100.00 was never paid)."""
    pipe, run = review_api, uuid.uuid4().hex[:6]
    original, replacement = f"RX-{run}-1", f"RX-{run}-2"
    submit(pipe, claim(original, factor_line(day="2026-04-03"), nursing("2026-04-03")))
    answer = submit(pipe, claim(replacement, factor_line(charge="15000.00", day="2026-04-03"), nursing("2026-04-03"),
                                claim_frequency="7", original_claim_id=original))
    assert [line["status"] for line in answer["lines"]] == ["PENDED", "PAID"]
    status, _ = decide(pipe, INTEGRITY, replacement, 1, {"action": "PAY", "allowed_amount": "12000.00"})
    assert status == 200
    status, body = get_835(pipe, replacement)
    assert status == 200 and [(c.claim_id, c.paid) for c in remit835.read(body.decode())] == [(replacement, 12100)]
    published = remits(pipe, replacement, 30)
    assert published, "no 835 for the replacement once final"
    assert [(c.claim_id, c.status) for c in remit835.read(published[-1])] == [(replacement, "1")]  # nothing taken back
