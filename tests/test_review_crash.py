"""Manual review end to end under a crash (issue 22): two workers, lines pended by the
pipeline, reviewers' decisions POSTed to both workers, and one worker killed with SIGKILL
while decisions are being stored; it is started again.

* Stream equals batch for the pended records: before any review, what the live pipeline
  published (PENDED records included) is record for record what batch mode prints for the
  same input, and no claim has an 835 (each has a pended line; the HTTP 835 answers 409
  PENDED naming it, the FHIR ClaimResponse's outcome is `queued`).
* After the kill and the restart: every pended line's final record is on
  `claims.lines.adjudicated` exactly once per (claim_id, line_number, status) after dedupe
  (repeats identical but for `adjudicated_at`), with the decision that was sent: none lost
  (a decision stored but not published is published from the outbox), none doubled (one
  DECIDED history row per line); the ledger's authorized units are batch mode's less the
  denied lines'; the outbox and the queue are empty; each claim's 835 carries the final
  decisions (the reviewers' amounts).
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from edi import remit835
from contract import topics
from streams.kafka import client
from streams.ledger.store import Ledger
from tests.harness import batch_expectation, keyed, read_to_end, unit_usage
from tests.api_harness import TOKEN, ApiPipeline
from tests.ledger_harness import line
from tests.probes import wait_for
from tests.review_harness import FACTOR, MEMBER, NPI, reference as review_reference

pytestmark = pytest.mark.broker

REVIEWER = f"reviewer-{uuid.uuid4().hex}"
AUTH_NO, APPROVED = "PA-REVIEW-CRASH", "5000"
CLAIMS = 48
KILL_AFTER = 14  # decisions stored before w1 is killed (of 48)


def reference() -> dict[str, list[dict]]:
    ref = review_reference()
    ref["authorizations"].append({"authorization_number": AUTH_NO, "member_id": MEMBER, "status": "APPROVED",
                                  "procedure_codes": ["J7192", "J9999", "99601"], "start_date": "2026-01-01",
                                  "end_date": "2026-12-31", "approved_units": APPROVED})
    return ref


def claim_lines(run: str) -> list[bytes]:
    """48 claims of two lines on days of their own: a high-dollar factor VIII line (even claims,
    PAYMENT_INTEGRITY) or a NOC J9999 line (odd, CLINICAL) that pends, and a nursing visit."""
    out = []
    for i in range(CLAIMS):
        claim_id, day = f"{run}-{i:03d}", (date(2026, 1, 1) + timedelta(days=i)).isoformat()
        common = {"member_id": MEMBER, "provider_npi": NPI, "authorization_number": AUTH_NO, "service_date": day}
        first = {"procedure_code": "J7192", "units": "9", "charge_amount": "15000.00", "drug": FACTOR} if i % 2 == 0 else \
            {"procedure_code": "J9999", "units": "2", "charge_amount": "500.00",
             "drug": {**FACTOR, "quantity": "100", "dosage": "100 IU"}}
        out.append(orjson.dumps(line(claim_id, 1, 2, **common, **first)))
        out.append(orjson.dumps(line(claim_id, 2, 2, **common, procedure_code="99601", units="1", charge_amount="100.00",
                                     drug=None)))
    return out


def decision_for(i: int) -> dict[str, Any]:
    return [{"action": "PAY"}, {"action": "PAY", "allowed_amount": "100.00", "note": "repriced"},
            {"action": "DENY", "carc": "50", "rarc": ["N115"]}][i % 3]


def post(port: int, path: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=orjson.dumps(body), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"null")


def get(port: int, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def timeless(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without the times inside `pend` and `review` (`keyed` leaves out the top-level
    ones): when a line was pended or decided differs between the stream and batch mode."""
    out = []
    for r in records:
        r = dict(r)
        if r.get("pend"):
            r["pend"] = {**r["pend"], "pended_at": None}
        if r.get("review"):
            r["review"] = {**r["review"], "decided_at": None}
        out.append(r)
    return out


def decided_count(ledger: Ledger) -> int:
    return sum(1 for (event,) in ledger.rows("review_history", "event") if event == "DECIDED")


@pytest.mark.parametrize("backend", [pytest.param("sqlite", marks=pytest.mark.both_brokers),  # kill -9 and a rebalance
                                     pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill9_while_review_decisions_are_stored(backend, fresh_bootstrap, tmp_path, request):
    run = f"RC{uuid.uuid4().hex[:6]}"
    ref = reference()
    lines = claim_lines(run)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(lines, ref, batch_ledger)
    pended = sorted((r["claim_id"], r["line_number"]) for r in expected if r.get("status") == "PENDED")
    assert len(pended) == CLAIMS and {r["pend"]["queue"] for r in expected if r.get("pend")} == {"PAYMENT_INTEGRITY", "CLINICAL"}

    workdir = tmp_path / "stream"
    workdir.mkdir()
    ledger_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    pipe = ApiPipeline(fresh_bootstrap, workdir, partitions=4, ledger_url=ledger_url)
    pipe.reviewers(("Rae Reviewer", REVIEWER, ["PAYMENT_INTEGRITY", "CLINICAL"]))
    pipe.load_reference(ref)
    pipe.start("w1")
    pipe.start("w2")
    ledger = Ledger(pipe.ledger_url)
    try:
        pipe.submit(lines)
        records = pipe.collect(expected, timeout=180)
        # stream equals batch, PENDED records included, before any review
        assert keyed(timeless(records)) == keyed(timeless(expected))
        assert keyed(records).keys() == keyed(expected).keys()
        assert sum(1 for r in records if r.get("status") == "PENDED") >= CLAIMS
        ports = {name: pipe.web_port(name) for name in ("w1", "w2")}
        for name, port in ports.items():  # the worker's web server answers (readyz) before the reviews
            deadline = time.monotonic() + 60
            while get(port, "/readyz")[0] != 200:
                assert time.monotonic() < deadline, f"{name} never ready"
                time.sleep(0.2)
        # held until final: no 835 for any claim, 409 PENDED naming the line, FHIR outcome queued
        assert [k for _, _, _, k, _ in read_to_end(fresh_bootstrap, [topics.REMITTANCE_835.name])
                if k and k.decode().startswith(run)] == []
        status, body = get(ports["w2"], f"/v1/claims/{run}-000/835")
        answer = orjson.loads(body)
        assert status == 409 and answer["error"]["code"] == "PENDED", answer
        assert [(p["line_number"], p["queue"]) for p in answer["pended_lines"]] == [(1, "PAYMENT_INTEGRITY")]
        status, body = get(ports["w1"], f"/v1/claims/{run}-001/remittance")
        assert status == 200 and orjson.loads(body)["outcome"] == "queued"

        # reviewers decide every pended line, on both workers; w1 is killed while they flow
        alive = {"w1": True}
        lock = threading.Lock()
        failed_on_w1 = Counter()

        def review(i: int) -> tuple[int, Any]:
            claim_id, number = pended[i]
            name = "w1" if i % 2 == 0 else "w2"
            deadline = time.monotonic() + 120
            while True:
                with lock:
                    target = name if alive.get(name, False) or name == "w2" else "w2"
                try:
                    status, answer = post(ports[target], f"/v1/reviews/{claim_id}/{number}", decision_for(i), REVIEWER)
                except (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError):
                    status, answer = None, None
                    if target == "w1":
                        failed_on_w1["requests"] += 1
                if status == 200:
                    return status, answer
                assert status in (None, 503), (status, answer)  # a crash or a failed publish: send it again
                assert time.monotonic() < deadline, f"decision {i} never answered"
                time.sleep(0.2)

        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(review, i) for i in range(len(pended))]
            deadline = time.monotonic() + 60
            while decided_count(ledger) < KILL_AFTER:
                assert time.monotonic() < deadline, "the reviews never got going"
                time.sleep(0.01)
            with lock:
                alive["w1"] = False
            pipe.kill("w1")
            at_kill = decided_count(ledger)
            outbox_at_kill = len(ledger.decision_outbox())  # stored, not yet published (w2's may be on their way)
            answers = [f.result() for f in futures]
        assert at_kill < len(pended), "every decision was stored before the kill: it hit nothing in flight"
        pipe.start("w1")

        finals = {(a["claim_id"], a["line_number"]): a for _, a in answers}
        wanted = {(topics.ADJUDICATED.name, c, n, a["status"]) for (c, n), a in finals.items()}

        def done(got: list[dict[str, Any]]) -> bool:
            return wanted <= {(r["topic"], r.get("claim_id"), r.get("line_number"), r.get("status")) for r in got}

        import asyncio

        after = asyncio.run(client.collect(fresh_bootstrap, done, 120))
        deadline = time.monotonic() + 60
        while ledger.decision_outbox():  # published from the outbox by now, or soon
            assert time.monotonic() < deadline, "the outbox was never drained"
            time.sleep(0.5)

        def remitted_835s() -> list[tuple[str, str]] | None:
            """This run's 835s once every claim has one (the 835 writer follows the decisions)."""
            got = [(k.decode(), v.decode()) for _, _, _, k, v in read_to_end(fresh_bootstrap, [topics.REMITTANCE_835.name])
                   if k and k.decode().startswith(run)]
            return got if {k for k, _ in got} >= {c for c, _ in pended} else None

        remits = wait_for(remitted_835s, 60, "an 835 for every claim once its pended line was decided", procs=pipe.workers)
        after = asyncio.run(client.collect(fresh_bootstrap, lambda got: False, 5))  # everything published so far
    finally:
        pipe.stop_all(check=False)

    # every final record exactly once per (claim, line, status) after dedupe, as decided
    mine = [r for r in after if r["topic"] == topics.ADJUDICATED.name and str(r.get("claim_id", "")).startswith(run)]
    by_key = keyed(mine)  # repeats identical but for adjudicated_at
    for i, key in enumerate(pended):
        statuses = {s for (_, c, n, s) in by_key if (c, n) == key}
        body = decision_for(i)
        final = "PAID" if body["action"] == "PAY" else "DENIED"
        assert statuses == {"PENDED", final}, (key, statuses)
        record = next(r for r in mine if (r["claim_id"], r["line_number"], r["status"]) == (*key, final))
        assert record["review"]["action"] == body["action"] and record["review"]["reviewer"] == "Rae Reviewer"
        assert record["pend"] is None
        if body.get("allowed_amount"):
            assert record["allowed_amount"] == "100.00"
            assert [(a["carc"], a["rule"]) for a in record["adjustments"]] == [("45", "REVIEW-PRICED")]
        if final == "DENIED":
            assert [(a["carc"], a["rule"], a["rarc"]) for a in record["adjustments"]] == [("50", "REVIEW-DENIED", ["N115"])]
    # the rest is batch mode's, record for record
    unreviewed = [r for r in mine if r.get("review") is None]
    assert keyed(timeless(unreviewed)) == keyed(timeless([r for r in expected if r["topic"] == topics.ADJUDICATED.name]))

    # the ledger: one decision per line, units as batch mode's less the denied lines', nothing left over
    history = Counter((c, n) for c, n, e in ledger.rows("review_history", "claim_id", "line_number", "event") if e == "DECIDED")
    assert history == Counter({key: 1 for key in pended})
    denied = {key for i, key in enumerate(pended) if decision_for(i)["action"] == "DENY"}
    assert unit_usage(ledger) == [u for u in unit_usage(batch_ledger) if (u[0], u[1]) not in denied]
    assert ledger.open_pends() == [] and ledger.decision_outbox() == []

    # each claim's 835 carries the final decisions (the reviewers' amounts); none before
    paid_by_claim: dict[str, Decimal] = defaultdict(Decimal)
    for r in {(r["claim_id"], r["line_number"], r["status"]): r for r in mine}.values():  # deduped
        if r["status"] in ("PAID", "DENIED"):
            paid_by_claim[r["claim_id"]] += Decimal(r["allowed_amount"])
    remitted: dict[str, Decimal] = {}
    for key, text in remits:
        [claim] = remit835.read(text)
        assert remit835.balance_errors([claim]) == []
        assert remitted.setdefault(key, claim.paid) == claim.paid  # a repeat remits the same
    assert remitted == dict(paid_by_claim)
    print(f"\nreview crash ({backend}): {len(pended)} decisions, {at_kill} stored at the kill, {outbox_at_kill} in the outbox then, "
          f"{failed_on_w1['requests']} requests to w1 failed and were sent again, "
          f"{len(mine) - len(by_key)} repeated records, {len(remits) - len(remitted)} repeated 835s")
