"""Reprocessing end to end: a real worker on a real broker. A late authorization approval
is adjusted at once (the proposal on `claims.reprocess.proposals`, the reversal and the
adjusted claim on `claims.lines.adjudicated`, the claim status); a price decrease waits,
and a reviewer of the REPROCESS queue approves or rejects it over HTTP (401/403/404/409/422,
idempotent repeats); a submitted claim id with `~` is rejected CLAIM_ID."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.worker import metrics
from contract import topics
from streams.ledger.store import Ledger
from tests.harness import read_to_end, sample_reference
from tests.api_harness import AUTH, JSON, SAMPLES, ApiPipeline, bearer, call

pytestmark = pytest.mark.broker

REPROCESSOR = f"reprocess-{uuid.uuid4().hex}"
CLINICAL = f"clinical-{uuid.uuid4().hex}"
INTEGRITY = f"integrity-{uuid.uuid4().hex}"
MEMBER, NPI = "M1001", "1245678903"
LATE, PRICED, SAME, HELD = "PA-LATE-E2E", "PA-PRICE-E2E", "PA-SAME-E2E", "PA-HELD-E2E"
NDC = "00143985810"
CEF = {"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"}
CODES = ["S9500", "J0696"]
#: the member and code of a high-dollar factor VIII line (tests/test_review_api.py's)
FACTOR_CLAIM = ("M1003", ["J7192"], "100")


def auth(number: str, status: str, member: str = MEMBER, codes: list[str] = CODES, units: str | None = None) -> dict[str, Any]:
    return {"authorization_number": number, "member_id": member, "status": status, "procedure_codes": codes,
            "start_date": "2026-01-01", "end_date": "2026-12-31", "approved_units": units}


def reference() -> dict[str, list[dict]]:
    ref = sample_reference()
    ref["authorizations"] += [auth(LATE, "PENDING"), auth(PRICED, "APPROVED"), auth(SAME, "PENDING"),
                              auth(HELD, "PENDING", *FACTOR_CLAIM)]
    return ref


@pytest.fixture(scope="module")
def pipe(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    workdir = tmp_path_factory.mktemp("reprocess-worker")
    p = ApiPipeline(module_bootstrap, workdir)
    p.reviewers(("Rita Reprocess", REPROCESSOR, ["REPROCESS"]), ("Casey Clinical", CLINICAL, ["CLINICAL"]),
                ("Ines Integrity", INTEGRITY, ["PAYMENT_INTEGRITY"]))
    p.load_reference(reference())
    with p.running():
        yield p


def claim(claim_id: str, number: str, day: str) -> dict[str, Any]:
    return {"claim_id": claim_id, "form": "CMS-1500", "member_id": MEMBER, "provider_npi": NPI,
            "authorization_number": number, "diagnosis_codes": ["M86.171"],
            "lines": [{"procedure_code": "S9500", "units": "1", "charge_amount": "150.00", "service_date": day},
                      {"procedure_code": "J0696", "units": "8", "charge_amount": "60.00", "service_date": day, "drug": CEF}]}


def submit(pipe: ApiPipeline, body: dict[str, Any]) -> dict[str, Any]:
    status, _, answer = call(pipe.url, "POST", "/v1/claims?wait=20", orjson.dumps(body), {**AUTH, **JSON})
    assert status == 200, answer
    return answer


def wait_proposal(pipe: ApiPipeline, claim_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, _, answer = call(pipe.url, "GET", f"/v1/reprocess?status={status}&limit=500", headers=bearer(REPROCESSOR))
        assert code == 200, answer
        found = [p for p in answer["proposals"] if p["claim_id"] == claim_id]
        if found:
            return found[-1]
        time.sleep(0.3)
    raise AssertionError(f"no {status} proposal for {claim_id}")


def decide(pipe: ApiPipeline, token: str, proposal_id: str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    code, _, answer = call(pipe.url, "POST", f"/v1/reprocess/{proposal_id}", raw, {**bearer(token), **JSON})
    return code, answer


def published(pipe: ApiPipeline, topic: str, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, _, _, k, v in read_to_end(pipe.bootstrap, [topic]) if k == key.encode() and v]


def test_a_late_authorization_approval_is_adjusted_at_once(pipe: ApiPipeline) -> None:
    claim_id = f"RL-{uuid.uuid4().hex[:8]}"
    answer = submit(pipe, claim(claim_id, LATE, "2026-02-03"))
    assert [ln["status"] for ln in answer["lines"]] == ["DENIED", "DENIED"]
    pipe.load_reference({"authorizations": [auth(LATE, "APPROVED")]})
    p = wait_proposal(pipe, claim_id, "APPROVED")
    assert p["decided_by"] == "auto" and p["adjustment_claim_id"] == f"{claim_id}~A1"
    assert p["trigger"] == {"topic": "reference.authorizations", "key": LATE}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = published(pipe, topics.ADJUDICATED.name, claim_id) + published(pipe, topics.ADJUDICATED.name, f"{claim_id}~A1")
        if len(records) >= 6:
            break
        time.sleep(0.5)
    got = sorted((r["claim_id"], r["line_number"], r["status"], r["adjusts"], r["proposal_id"]) for r in records)
    assert got == sorted([(claim_id, 1, "DENIED", None, None), (claim_id, 2, "DENIED", None, None),
                          (claim_id, 1, "REVERSED", None, None), (claim_id, 2, "REVERSED", None, None),
                          (f"{claim_id}~A1", 1, "PAID", claim_id, p["proposal_id"]),
                          (f"{claim_id}~A1", 2, "PAID", claim_id, p["proposal_id"])])
    statuses = [x["status"] for x in published(pipe, topics.REPROCESS_PROPOSALS.name, claim_id)]
    assert statuses[-1] == "APPROVED" and "OPEN" in statuses
    code, _, adjusted = call(pipe.url, "GET", f"/v1/claims/{claim_id}~A1", headers=AUTH)
    assert code == 200 and [ln["status"] for ln in adjusted["lines"]] == ["PAID", "PAID"], adjusted
    assert (adjusted["adjusts"], adjusted["reverses"], adjusted["proposal_id"]) == (claim_id, claim_id, p["proposal_id"])
    assert [r["status"] for r in adjusted["reversals"]] == ["REVERSED", "REVERSED"]
    code, _, original = call(pipe.url, "GET", f"/v1/claims/{claim_id}", headers=AUTH)
    assert code == 200 and original["status"] == "ADJUSTED" and original["adjusted_by"] == f"{claim_id}~A1", original
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{pipe.url}/v1/claims/{claim_id}~A1/remittance", headers=AUTH),
                                timeout=40) as resp:
        fhir = orjson.loads(resp.read())
    assert fhir["resourceType"] == "ClaimResponse" and claim_id in orjson.dumps(fhir).decode()


def test_a_price_decrease_waits_for_a_reviewer(pipe: ApiPipeline) -> None:
    first, second = f"RP-{uuid.uuid4().hex[:8]}", f"RP-{uuid.uuid4().hex[:8]}"
    submit(pipe, claim(first, PRICED, "2026-05-04"))
    submit(pipe, claim(second, PRICED, "2026-05-05"))
    pipe.load_reference({"awp-prices": [{"ndc": NDC, "awp_per_unit": "10.00", "effective_from": "2026-05-01"}]})
    p1, p2 = wait_proposal(pipe, first, "OPEN"), wait_proposal(pipe, second, "OPEN")
    assert [ln["line_number"] for ln in p1["lines"]] == [2] and p1["allowed_after"] < p1["allowed_before"]
    # who may decide, and what
    assert decide(pipe, "nope", p1["proposal_id"], {"action": "APPROVE"})[0] == 401
    assert decide(pipe, CLINICAL, p1["proposal_id"], {"action": "APPROVE"})[0] == 403
    code, _, _ = call(pipe.url, "POST", f"/v1/reprocess/{p1['proposal_id']}", b'{"action": "APPROVE"}', {**AUTH, **JSON})
    assert code == 403
    code, answer = decide(pipe, REPROCESSOR, p1["proposal_id"], {"action": "MAYBE"})
    assert code == 422 and answer["error"]["field"] == "action"
    assert decide(pipe, REPROCESSOR, "RP-none", {"action": "APPROVE"})[0] == 404
    # approved: the adjustment
    code, approved = decide(pipe, REPROCESSOR, p1["proposal_id"], {"action": "APPROVE", "note": "price file fix"})
    assert code == 200, approved
    assert (approved["status"], approved["decided_by"], approved["adjustment_claim_id"]) == ("APPROVED", "Rita Reprocess", f"{first}~A1")
    assert decide(pipe, REPROCESSOR, p1["proposal_id"], {"action": "APPROVE", "note": "price file fix"}) == (200, approved)
    assert decide(pipe, REPROCESSOR, p1["proposal_id"], {"action": "REJECT"})[0] == 409
    # rejected: nothing adjusted
    code, rejected = decide(pipe, REPROCESSOR, p2["proposal_id"], {"action": "REJECT"})
    assert code == 200 and rejected["status"] == "REJECTED" and rejected["adjustment_claim_id"] is None
    code, _, one = call(pipe.url, "GET", f"/v1/reprocess/{p2['proposal_id']}", headers=AUTH)
    assert code == 200 and one == rejected
    assert call(pipe.url, "GET", f"/v1/claims/{second}~A1", headers=AUTH)[0] == 404


def test_a_submitted_claim_id_with_a_tilde_is_rejected(pipe: ApiPipeline) -> None:
    code, _, answer = call(pipe.url, "POST", "/v1/claims?wait=20", orjson.dumps(claim("X~A1", PRICED, "2026-05-06")), {**AUTH, **JSON})
    assert code in (200, 400, 422), answer
    assert "CLAIM_ID" in orjson.dumps(answer).decode()


def test_the_adjustment_835_is_the_reversal_then_the_adjusted_claim(pipe: ApiPipeline) -> None:
    from edi import remit835

    claim_id = f"R8-{uuid.uuid4().hex[:8]}"
    submit(pipe, claim(claim_id, PRICED, "2026-06-02"))
    pipe.load_reference({"awp-prices": [{"ndc": NDC, "awp_per_unit": "20.00", "effective_from": "2026-06-01"}]})
    p = wait_proposal(pipe, claim_id, "APPROVED")  # a raise: made at once
    minted = p["adjustment_claim_id"]
    deadline = time.monotonic() + 30
    texts: list[str] = []
    while time.monotonic() < deadline and not texts:
        texts = [v.decode() for _, _, _, k, v in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name]) if k == minted.encode()]
        time.sleep(0.5)
    assert len(texts) == 1
    (text,) = texts
    clps = [seg.split("*") for seg in text.replace("\n", "").split("~") if seg.startswith("CLP*")]
    # `~` is the 835's segment terminator: the X12 writer writes it as a space in CLP07
    assert [(c[1], c[2], c[7]) for c in clps] == [(claim_id, "22", claim_id), (claim_id, "1", minted.replace("~", " "))]
    assert remit835.balance_errors(remit835.read(text)) == []


def batch_lines(body: dict[str, Any]) -> list[bytes]:
    """A claim as submitted over HTTP, as batch mode's input lines."""
    header = {k: v for k, v in body.items() if k != "lines"}
    return [orjson.dumps({**header, **ln, "line_number": i, "line_count": len(body["lines"])})
            for i, ln in enumerate(body["lines"], start=1)]


def ref_line(topic: str, value: dict[str, Any]) -> bytes:
    """A reference record interleaved in batch mode's input."""
    return orjson.dumps({"reference": {"topic": topic, "value": value}})


def same(records: list[dict[str, Any]]) -> list[str]:
    """Records as the stream and batch mode both give them: without their times, topic and
    proposal ids (a proposal id derives from where its change was read)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("_at") and k not in ("proposal_id", "topic")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return sorted(orjson.dumps(strip(r), option=orjson.OPT_SORT_KEYS).decode() for r in records)


def batch_ref() -> Any:
    """The module worker's reference data before its tests changed any (batch mode's start)."""
    from contract.models import Authorization
    from streams.pipeline.batch import load_reference_dir

    ref = load_reference_dir(SAMPLES / "reference")
    for row in reference()["authorizations"][-4:]:
        ref.apply("authorizations", row["authorization_number"], Authorization.model_validate(row))
    return ref


def test_stream_equals_batch_for_adjusted_records(pipe: ApiPipeline) -> None:
    """The same claim and the same late approval, through the worker and through batch mode
    (the authorization interleaved in the input): the same records, but for the times and
    the proposal id (it derives from where the change was read)."""
    from streams.pipeline.batch import run_batch
    from tests.ledger_harness import BOOKS

    claim_id = f"SB-{uuid.uuid4().hex[:8]}"
    # before the module's AWP changes (2026-05-01, 2026-06-01), which batch mode does not load:
    # the price in effect is the sample's whichever tests ran first on this worker
    body = claim(claim_id, SAME, "2026-04-15")
    submit(pipe, body)
    pipe.load_reference({"authorizations": [auth(SAME, "APPROVED")]})
    p = wait_proposal(pipe, claim_id, "APPROVED")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        streamed = published(pipe, topics.ADJUDICATED.name, claim_id) + published(pipe, topics.ADJUDICATED.name, p["adjustment_claim_id"])
        if len(streamed) >= 6:
            break
        time.sleep(0.5)
    batch_in = [*batch_lines(body), ref_line("reference.authorizations", auth(SAME, "APPROVED"))]
    batched = [r for r in run_batch(batch_in, batch_ref(), BOOKS) if r["topic"] == topics.ADJUDICATED.name]
    assert len(batched) == 6 and same(streamed) == same(batched)


def test_supersede_withdraw_and_a_correction_after_an_adjustment_as_batch_mode(pipe: ApiPipeline) -> None:
    """Over the stream: a price decrease proposes, a second decrease before any approval
    supersedes it (SUPERSEDED, then the new OPEN), the price back withdraws it, a raise is
    adjusted at once (<claim_id>~A1); then the provider's replacement naming the original is
    rejected ORIGINAL_ALREADY_REPLACED and the one naming <claim_id>~A1 reverses the adjusted
    claim. Batch mode, with the same reference records interleaved, publishes the same
    records and proposals (but for times and proposal ids)."""
    from streams.pipeline.batch import run_batch
    from tests.ledger_harness import BOOKS

    claim_id = f"SS-{uuid.uuid4().hex[:8]}"
    prices = [{"ndc": NDC, "awp_per_unit": price, "effective_from": "2026-08-01"} for price in ("12.00", "9.00", "8.00", "12.00", "14.00")]
    body = claim(claim_id, PRICED, "2026-08-04")
    stale = {**claim(f"{claim_id}-R0", PRICED, "2026-08-04"), "claim_frequency": "7", "original_claim_id": claim_id}
    fixed = {**claim(f"{claim_id}-R1", PRICED, "2026-08-04"), "claim_frequency": "7", "original_claim_id": f"{claim_id}~A1"}

    ledger = Ledger(pipe.ledger_url)
    key, loaded = f"{NDC}:2026-08-01", []

    def load(p: dict[str, Any]) -> None:
        """One price record, and wait until its change was looked at (so each change is looked
        at with the view it brought, as batch mode does)."""
        loaded.append(p)
        pipe.load_reference({"awp-prices": [p]})
        deadline = time.monotonic() + 30
        while [s for (k, s) in ledger.rows("reference_changes", "ref_key", "state") if k == key] != ["DONE"] * len(loaded):
            assert time.monotonic() < deadline, "the price change was not looked at"
            time.sleep(0.1)

    def price(p: dict[str, Any], status: str) -> dict[str, Any]:
        load(p)
        return wait_proposal(pipe, claim_id, status)

    load(prices[0])  # in effect from 2026-08-01: no claim there yet
    assert [ln["status"] for ln in submit(pipe, body)["lines"]] == ["PAID", "PAID"]
    first = price(prices[1], "OPEN")
    second = price(prices[2], "SUPERSEDED")
    assert second["proposal_id"] == first["proposal_id"]
    (opened,) = [p for p in wait_proposals(pipe, claim_id) if p["status"] == "OPEN"]
    assert opened["lines"][0]["after"]["allowed_amount"] == "13.60"  # 8.00 x 2 x 85 %
    withdrawn = price(prices[3], "WITHDRAWN")
    assert withdrawn["proposal_id"] == opened["proposal_id"]
    adjusted = price(prices[4], "APPROVED")
    assert (adjusted["decided_by"], adjusted["adjustment_claim_id"]) == ("auto", f"{claim_id}~A1")
    rejected = submit(pipe, stale)
    assert {r["code"] for ln in rejected["lines"] for r in ln.get("reasons", [])} == {"ORIGINAL_ALREADY_REPLACED"}, rejected
    replaced = submit(pipe, fixed)
    assert [ln["status"] for ln in replaced["lines"]] == ["PAID", "PAID"], replaced
    mine = (claim_id, f"{claim_id}~A1", stale["claim_id"], fixed["claim_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        streamed = [orjson.loads(v) for t, _, _, k, v in read_to_end(pipe.bootstrap, [topics.ADJUDICATED.name, topics.REJECTED.name,
                                                                                     topics.REPROCESS_PROPOSALS.name])
                    if v and k and k.decode() in mine]
        if sum(1 for r in streamed if r.get("reversed_by") == fixed["claim_id"]) == 2:
            break
        time.sleep(0.5)
    assert sorted((r["claim_id"], r["line_number"], r["status"], r["reversed_by"]) for r in streamed if r.get("status") == "REVERSED") == [
        (claim_id, 1, "REVERSED", f"{claim_id}~A1"), (claim_id, 2, "REVERSED", f"{claim_id}~A1"),
        (f"{claim_id}~A1", 1, "REVERSED", fixed["claim_id"]), (f"{claim_id}~A1", 2, "REVERSED", fixed["claim_id"])]

    batch_in = [ref_line("reference.awp-prices", prices[0]), *batch_lines(body),
                *(ref_line("reference.awp-prices", p) for p in prices[1:]), *batch_lines(stale), *batch_lines(fixed)]
    batched = [r for r in run_batch(batch_in, batch_ref(), BOOKS)
               if r["topic"] in (topics.ADJUDICATED.name, topics.REJECTED.name, topics.REPROCESS_PROPOSALS.name)]
    assert [(r["status"], r["claim_id"]) for r in batched if r["topic"] == topics.REPROCESS_PROPOSALS.name] == [
        ("OPEN", claim_id), ("SUPERSEDED", claim_id), ("OPEN", claim_id), ("WITHDRAWN", claim_id),
        ("OPEN", claim_id), ("APPROVED", claim_id)]
    assert same(streamed) == same(batched)


def wait_proposals(pipe: ApiPipeline, claim_id: str) -> list[dict[str, Any]]:
    """Every proposal of a claim, oldest first."""
    code, _, answer = call(pipe.url, "GET", "/v1/reprocess?status=&limit=500", headers=bearer(REPROCESSOR))
    assert code == 200, answer
    return [p for p in answer["proposals"] if p["claim_id"] == claim_id]


def test_an_adjustment_that_pends_a_line_is_remitted_once_it_is_final(pipe: ApiPipeline) -> None:
    """A late approval of a high-dollar factor line: the automatic adjustment's line meets a
    review reason (HIGH_DOLLAR), so <claim_id>~A1's line is PENDED (with `adjusts`), no 835
    goes out and the HTTP 835 answers 409 PENDED; once a reviewer pays it, the final record
    keeps `adjusts` and `proposal_id`, and the 835 is the adjustment's pair, once. The
    ledger holds the adjusted line's paid line and units (the original's released), as for
    any pend, before the review and after it."""
    from edi import remit835
    from tests.review_harness import FACTOR
    from tests.test_review_crash import post

    claim_id = f"RH-{uuid.uuid4().hex[:8]}"
    member, codes, _ = FACTOR_CLAIM
    body = {"claim_id": claim_id, "form": "CMS-1500", "member_id": member, "provider_npi": NPI, "authorization_number": HELD,
            "diagnosis_codes": ["D66"], "lines": [{"procedure_code": codes[0], "units": "9", "charge_amount": "15000.00",
                                                   "service_date": "2026-09-01", "drug": FACTOR}]}
    assert [ln["status"] for ln in submit(pipe, body)["lines"]] == ["DENIED"]
    pipe.load_reference({"authorizations": [auth(HELD, "APPROVED", *FACTOR_CLAIM)]})
    p = wait_proposal(pipe, claim_id, "APPROVED")
    minted = p["adjustment_claim_id"]
    assert (p["decided_by"], minted, p["lines"][0]["after"]["status"]) == ("auto", f"{claim_id}~A1", "PENDED")
    code, _, answer = call(pipe.url, "GET", f"/v1/claims/{minted}/835", headers=AUTH)
    assert code == 409 and answer["error"]["code"] == "PENDED", answer
    ledger = Ledger(pipe.ledger_url)
    (pended,) = ledger.decisions_for(minted)
    assert (pended.status, pended.pend.reason, pended.adjusts, pended.proposal_id) == ("PENDED", "HIGH_DOLLAR", claim_id, p["proposal_id"])
    held = [r for r in ledger.rows("paid_lines", "claim_id", "line_number") if r[0].startswith(claim_id)]
    assert held == [(minted, 1)]  # a pended line holds what it would establish, as any pend does

    code, final = post(pipe.port, f"/v1/reviews/{minted}/1", {"action": "PAY"}, INTEGRITY)
    assert code == 200 and (final["status"], final["adjusts"], final["proposal_id"]) == ("PAID", claim_id, p["proposal_id"]), final
    assert final["review"]["reviewer"] == "Ines Integrity"
    deadline = time.monotonic() + 30
    texts: list[str] = []
    while time.monotonic() < deadline and not texts:
        texts = [v.decode() for _, _, _, k, v in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name]) if k == minted.encode()]
        time.sleep(0.3)
    (text,) = texts
    clps = [seg.split("*") for seg in text.replace("\n", "").split("~") if seg.startswith("CLP*")]
    assert [(c[1], c[2], c[7]) for c in clps] == [(claim_id, "22", claim_id), (claim_id, "1", minted.replace("~", " "))]
    assert remit835.balance_errors(remit835.read(text)) == []
    records = published(pipe, topics.ADJUDICATED.name, claim_id) + published(pipe, topics.ADJUDICATED.name, minted)
    assert sorted((r["claim_id"], r["status"]) for r in records) == [
        (claim_id, "DENIED"), (claim_id, "REVERSED"), (minted, "PAID"), (minted, "PENDED")]
    assert [r[:2] for r in ledger.rows("paid_lines", "claim_id", "line_number") if r[0].startswith(claim_id)] == [(minted, 1)]
    assert [u[:2] for u in ledger.rows("unit_usage", "claim_id", "line_number") if u[0].startswith(claim_id)] == [(minted, 1)]


def test_the_reprocess_metrics_on_the_workers_metrics_endpoint(pipe: ApiPipeline) -> None:
    """/metrics after real proposals and adjustments: an automatic adjustment (a raise) and an
    approved one (a decrease) counted by kind, the money each moved by kind and direction,
    and the open proposals by trigger topic as the ledger holds them, with the oldest's age."""
    ledger = Ledger(pipe.ledger_url)

    def sample(name: str, **labels: str) -> float:
        return sum(v for n, lab, v in pipe.metrics() if n == name and all(lab.get(k) == x for k, x in labels.items()))

    def load(*prices: tuple[str, str]) -> None:
        """AWP prices, and wait until the ledger looked at each change."""
        keys = [f"{NDC}:{since}" for _, since in prices]
        before = {k: sum(1 for (r,) in ledger.rows("reference_changes", "ref_key") if r == k) for k in keys}
        pipe.load_reference({"awp-prices": [{"ndc": NDC, "awp_per_unit": p, "effective_from": since} for p, since in prices]})
        deadline = time.monotonic() + 30
        while not all(sum(1 for r, s in ledger.rows("reference_changes", "ref_key", "state") if r == k and s == "DONE") > before[k]
                      for k in keys):
            assert time.monotonic() < deadline, "the price changes were not looked at"
            time.sleep(0.1)

    load(("12.00", "2026-10-01"), ("12.00", "2026-11-01"), ("12.00", "2026-12-01"))  # no claims on those dates yet
    run = uuid.uuid4().hex[:6]
    raised, lowered, waiting = (f"RM{run}-{m}" for m in (10, 11, 12))
    for claim_id, day in ((waiting, "2026-10-05"), (lowered, "2026-11-05"), (raised, "2026-12-05")):
        submit(pipe, claim(claim_id, PRICED, day))
    counts = {kind: sample("claims_reprocess_adjustments_total", kind=kind) for kind in ("automatic", "approved")}
    dollars = {(kind, d): sample("claims_reprocess_adjusted_dollars_total", kind=kind, direction=d)
               for kind in ("automatic", "approved") for d in ("increase", "decrease")}

    load(("14.00", "2026-12-01"))  # raised: adjusted at once
    auto = wait_proposal(pipe, raised, "APPROVED")
    load(("9.00", "2026-11-01"))  # lowered: a reviewer approves it
    code, approved = decide(pipe, REPROCESSOR, wait_proposal(pipe, lowered, "OPEN")["proposal_id"], {"action": "APPROVE"})
    assert code == 200 and approved["status"] == "APPROVED", approved
    load(("10.00", "2026-10-01"))  # waiting: left open
    wait_proposal(pipe, waiting, "OPEN")
    moved = {"auto": Decimal(auto["allowed_after"]) - Decimal(auto["allowed_before"]),
             "approved": Decimal(approved["allowed_after"]) - Decimal(approved["allowed_before"])}
    assert moved == {"auto": Decimal("3.40"), "approved": Decimal("-5.10")}  # 2 units x 85 % of the AWP change

    assert sample("claims_reprocess_adjustments_total", kind="automatic") == counts["automatic"] + 1
    assert sample("claims_reprocess_adjustments_total", kind="approved") == counts["approved"] + 1
    assert sample("claims_reprocess_adjusted_dollars_total", kind="automatic", direction="increase") == \
        pytest.approx(dollars["automatic", "increase"] + 3.40)
    assert sample("claims_reprocess_adjusted_dollars_total", kind="approved", direction="decrease") == \
        pytest.approx(dollars["approved", "decrease"] + 5.10)
    assert sample("claims_reprocess_adjusted_dollars_total", kind="automatic", direction="decrease") == dollars["automatic", "decrease"]
    open_by_trigger = Counter(p.trigger.topic for p in ledger.proposals("OPEN", 500))
    assert open_by_trigger["reference.awp-prices"] >= 1
    deadline = time.monotonic() + 15
    while True:  # the gauges are read from the ledger once a round
        gauges = {t: sample("claims_reprocess_open_proposals", trigger=t) for t in metrics.REPROCESS_TRIGGERS}
        if gauges == {t: float(open_by_trigger[t]) for t in metrics.REPROCESS_TRIGGERS}:
            break
        assert time.monotonic() < deadline, (gauges, open_by_trigger)
        time.sleep(0.3)
    assert sample("claims_reprocess_oldest_open_proposal_age_seconds") > 0
    labels = {k for n, lab, _ in pipe.metrics() if n.startswith("claims_reprocess") for k in lab}
    assert labels <= {"trigger", "kind", "direction"}  # nothing of a claim or a member in a label
