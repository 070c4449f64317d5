"""Reprocessing under kill -9 (issue 27): a real worker on a real broker, SIGKILLed while it
makes proposals and automatic adjustments for a late authorization approval, and again while
reviewers' approvals of a price decrease are being stored; each time it is started again.

After each restart: every claim the change looks at has exactly one proposal (none lost,
none made twice), every adjustment is in the ledger once (one `adjustments` row, one
`<claim_id>~A<n>` claim with its decisions, one reversal per line, paid lines and authorized
units only for the latest version), nothing is left in the outbox or the queue of changes,
and what reached the topics is, after dedupe, what batch mode prints for the same input with
the change interleaved (repeats identical). The ledger-level crash points (a statement
interrupted anywhere) are tests/test_reprocess_ledger.py's.
"""

from __future__ import annotations

import asyncio
import http.client
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.kafka import client
from contract import topics
from streams.ledger.store import Ledger
from tests.harness import batch_expectation, keyed, unit_usage
from tests.api_harness import ApiPipeline
from tests.ledger_harness import line
from tests.test_reprocess_e2e import NDC, auth, reference as e2e_reference
from tests.test_review_crash import post

pytestmark = pytest.mark.broker

REVIEWER = f"reprocess-crash-{uuid.uuid4().hex}"
NUMBER = "PA-CRASH"
CLAIMS = 56
UNITS = "5000"  # counted (9 a claim), never exhausted
KILL_AFTER = 4  # adjustments stored before the kill (of 56)
NEW_PRICE = {"ndc": NDC, "awp_per_unit": "10.00", "effective_from": "2026-01-01"}
OUT = (topics.ADJUDICATED.name, topics.REPROCESS_PROPOSALS.name)


def reference() -> dict[str, list[dict]]:
    ref = e2e_reference()
    ref["authorizations"].append(auth(NUMBER, "PENDING", units=UNITS))
    return ref


def claim_lines(run: str) -> list[bytes]:
    """56 claims of a per diem and its drug, each on a day of its own (no duplicates) before the
    sample's AWP price of 2026-03-01 (the new price changes them all)."""
    out = []
    for i in range(CLAIMS):
        day = (date(2026, 1, 1) + timedelta(days=i)).isoformat()
        for n in (1, 2):
            out.append(orjson.dumps(line(f"{run}-{i:03d}", n, 2, authorization_number=NUMBER, service_date=day)))
    return out


def ref_line(topic: str, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"reference": {"topic": topic, "value": value}})


def wait(predicate, what: str, pipe: ApiPipeline, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for name, proc in pipe.workers.items():
            assert proc.poll() is None, f"worker {name} died: see {pipe.log(name)}"
        assert time.monotonic() < deadline, f"{what} after {timeout}s (see {pipe.workdir})"
        time.sleep(0.05)


def kill_once(pipe: ApiPipeline, ledger: Ledger, stored: int) -> int:
    """kill -9 the worker once `stored` adjustments are in the ledger; how many were then."""
    deadline = time.monotonic() + 120
    while ledger.count("adjustments") < stored:
        assert pipe.workers["w1"].poll() is None, f"the worker died: see {pipe.log('w1')}"
        assert time.monotonic() < deadline, "no adjustment was made"
        time.sleep(0.005)
    pipe.kill("w1")
    return ledger.count("adjustments")


def settled(ledger: Ledger, adjustments: int) -> bool:
    return (ledger.count("adjustments") == adjustments and ledger.pending_changes() == []
            and ledger.reprocess_outbox() == [])


def without_proposal_ids(records: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """`keyed` (repeats identical) without the proposal id, which derives from where the
    change was read (the broker's offset, batch mode's line)."""
    return {k: tuple(x for x in v if x[0] != "proposal_id") for k, v in keyed(records).items()}


# one broker (Tansu): what a crash here must not lose or repeat is the ledger's (the outbox, the
# ids per change and claim); the broker's side of a kill -9 (group offsets, transactions) is
# tests/test_review_crash.py's and tests/test_faults.py's, on both brokers (this test passed on
# Apache Kafka too, in 61 s: CLAIMS_TEST_ALL_BROKERS=1 runs it there)
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill9_while_making_proposals_and_adjustments(backend, fresh_bootstrap, tmp_path, request) -> None:
    run = f"RX{uuid.uuid4().hex[:6]}"
    ref, lines = reference(), claim_lines(run)
    approved = auth(NUMBER, "APPROVED", units=UNITS)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = [r for r in batch_expectation([*lines, ref_line("reference.authorizations", approved)], ref, batch_ledger)
                if r["topic"] == topics.ADJUDICATED.name]
    assert Counter(r["status"] for r in expected) == {"DENIED": 2 * CLAIMS, "REVERSED": 2 * CLAIMS, "PAID": 2 * CLAIMS}

    workdir = tmp_path / "stream"
    workdir.mkdir()
    ledger_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    pipe = ApiPipeline(fresh_bootstrap, workdir, partitions=2, ledger_url=ledger_url)
    pipe.reviewers(("Rex Reprocess", REVIEWER, ["REPROCESS"]))
    pipe.load_reference(ref)
    pipe.start("w1")
    ledger = Ledger(pipe.ledger_url)
    try:
        pipe.submit(lines)
        wait(lambda: ledger.count("decisions") == 2 * CLAIMS, "the claims were not decided", pipe)

        # 1. the late approval: proposals and automatic adjustments, killed in the middle
        pipe.load_reference({"authorizations": [approved]})
        automatic_at_kill = at_kill = kill_once(pipe, ledger, KILL_AFTER)
        assert at_kill < CLAIMS, "every adjustment was made before the kill: it hit nothing in flight"
        pipe.start("w1")
        wait(lambda: settled(ledger, CLAIMS), "the adjustments were not all made", pipe)
        first = asyncio.run(client.collect(fresh_bootstrap, lambda got: False, 3, names=OUT))
        mine = [r for r in first if str(r.get("claim_id", "")).startswith(run)]
        assert without_proposal_ids([r for r in mine if r["topic"] == topics.ADJUDICATED.name]) == without_proposal_ids(expected)
        assert_once(ledger, run, 1)
        assert len(unit_usage(ledger)) == 2 * CLAIMS and unit_usage(ledger) == unit_usage(batch_ledger)

        # 2. a price decrease: open proposals, approved by a reviewer; killed while they are stored
        pipe.load_reference({"awp-prices": [NEW_PRICE]})
        wait(lambda: len(ledger.proposals("OPEN", 500)) == CLAIMS and ledger.pending_changes() == [],
             "the price decrease's proposals were not made", pipe)
        opened = ledger.proposals("OPEN", 500)
        port = pipe.web_port("w1")
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(post, port, f"/v1/reprocess/{p.proposal_id}", {"action": "APPROVE"}, REVIEWER)
                       for p in opened]
            at_kill = kill_once(pipe, ledger, CLAIMS + KILL_AFTER) - CLAIMS
            for f in futures:  # answered, or cut off by the kill
                try:
                    f.result()
                except (OSError, http.client.HTTPException):
                    pass
        assert at_kill < CLAIMS, "every approval was stored before the kill"
        pipe.start("w1")
        port = pipe.web_port("w1")
        answers = {}
        for p in opened:  # each decision sent again until answered: the same one, stored once
            deadline = time.monotonic() + 60
            while (answer := _try(port, p.proposal_id))[0] != 200:
                assert answer[0] in (None, 503), answer
                assert time.monotonic() < deadline, f"{p.proposal_id} never answered"
                time.sleep(0.2)
            answers[p.claim_id] = answer[1]
        assert {a["status"] for a in answers.values()} == {"APPROVED"}
        assert {c: a["adjustment_claim_id"] for c, a in answers.items()} == {c: f"{c.split('~')[0]}~A2" for c in answers}
        wait(lambda: settled(ledger, 2 * CLAIMS), "the approved adjustments were not all published", pipe)
        after = asyncio.run(client.collect(fresh_bootstrap, lambda got: False, 3, names=OUT))
    finally:
        pipe.stop_all(check=False)

    assert_once(ledger, run, 2)
    mine = [r for r in after if str(r.get("claim_id", "")).startswith(run)]
    by_key = keyed(mine)  # every repeat identical but for its time
    for p in opened:
        root, minted = p.claim_id.split("~")[0], answers[p.claim_id]["adjustment_claim_id"]
        statuses = Counter((c, s) for (t, c, _, s) in by_key if t == topics.ADJUDICATED.name and c.startswith(root))
        assert statuses == {(root, "DENIED"): 2, (root, "REVERSED"): 2, (f"{root}~A1", "PAID"): 2,
                            (f"{root}~A1", "REVERSED"): 2, (minted, "PAID"): 2}, statuses
        after_line2 = next(ln.after for ln in p.lines if ln.line_number == 2)
        (decided,) = [d for d in ledger.decisions_for(minted) if d.line_number == 2]
        assert decided.allowed_amount == after_line2.allowed_amount < next(ln.before for ln in p.lines).allowed_amount
        published = [r["status"] for r in mine if r["topic"] == topics.REPROCESS_PROPOSALS.name and r["proposal_id"] == p.proposal_id]
        assert set(published) == {"OPEN", "APPROVED"}, published
    paid = Counter(c for (c,) in ledger.rows("paid_lines", "claim_id") if c.startswith(run))
    assert paid == {f"{p.claim_id.split('~')[0]}~A2": 2 for p in opened}
    def by_root(usage: list[tuple]) -> list[tuple]:
        return sorted((c.split("~")[0], n, a, u) for c, n, a, u in usage if c.startswith(run))

    assert [c for c, *_ in unit_usage(ledger)] == sorted(f"{c}~A2" for p in opened for c in [p.claim_id.split("~")[0]] * 2)
    assert by_root(unit_usage(ledger)) == by_root(unit_usage(batch_ledger))  # each line's units counted once
    print(f"\nreprocess crash ({backend}): {CLAIMS} claims; killed at {automatic_at_kill} automatic and {at_kill} approved adjustments")


def _try(port: int, proposal_id: str) -> tuple[int | None, Any]:
    try:
        return post(port, f"/v1/reprocess/{proposal_id}", {"action": "APPROVE"}, REVIEWER)
    except (OSError, http.client.HTTPException):
        return None, None


def assert_once(ledger: Ledger, run: str, n: int) -> None:
    """Every claim of the run adjusted exactly `n` times, each adjustment stored once."""
    roots = [f"{run}-{i:03d}" for i in range(CLAIMS)]
    rows = [r for r in ledger.rows("adjustments", "claim_id", "adjusts", "reverses", "n") if r[1].startswith(run)]
    assert sorted(rows) == sorted((f"{c}~A{k}", c, c if k == 1 else f"{c}~A{k - 1}", k) for c in roots for k in range(1, n + 1))
    proposals = [p for p in ledger.proposals(None, 10_000) if p.claim_id.startswith(run)]
    assert Counter(p.claim_id.split("~")[0] for p in proposals) == {c: n for c in roots}, "a proposal lost or made twice"
    assert {p.status for p in proposals} == {"APPROVED"}
    reversals = Counter(c for (c,) in ledger.rows("reversals", "claim_id") if c.startswith(run))
    assert reversals == {(c if k == 1 else f"{c}~A{k - 1}"): 2 for c in roots for k in range(1, n + 1)}
    for c in roots:
        assert [d.status for d in ledger.decisions_for(f"{c}~A{n}")] == ["PAID", "PAID"]
        assert ledger.decisions_for(f"{c}~A{n + 1}") == []
    assert sum(Decimal(str(d.allowed_amount)) for c in roots for d in ledger.decisions_for(f"{c}~A{n}")) > 0
