"""One drainer at a time for each of the ledger's outboxes (streams/ledger/leases.py,
streams/worker/outboxes.py): the ledger's lease across workers, a worker's lock between its
timer and its requests, and, end to end, two workers sharing one ledger whose timers drain
every 0.5 s while reviewers decide lines on both: every final record, 835 and access-log
entry is published once (a worker's timer once published a reviewer's record a second time
while the request that stored it was publishing it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import orjson
import pytest

from contract import topics
from streams.ledger.leases import REVIEWED
from streams.settings import Settings
from streams.worker import outboxes
from streams.worker.runtime import Runtime
from tests.api_harness import JSON, ApiPipeline, bearer, call
from tests.harness import read_to_end
from tests.probes import wait_for
from tests.review_harness import FACTOR, claim, reference, submit

REVIEWER = f"lease-{uuid.uuid4().hex}"


# --- the ledger's lease ---------------------------------------------------------------------------


def test_one_owner_holds_an_outbox_until_it_gives_it_back_or_its_lease_expires(ledger):
    assert not ledger.outbox_waiting("decision_outbox")
    with pytest.raises(ValueError, match="no outbox named 'claims'"):
        ledger.outbox_waiting("claims")
    assert ledger.take_outbox("decision_outbox", "a", 30)
    assert ledger.take_outbox("decision_outbox", "a", 30)  # its holder extends it
    assert not ledger.take_outbox("decision_outbox", "b", 30)
    assert ledger.take_outbox("outbox", "b", 30)  # each outbox has a lease of its own
    assert ledger.outbox_holder("decision_outbox")[0] == "a"
    ledger.give_outbox("decision_outbox", "b")  # not b's to give
    assert not ledger.take_outbox("decision_outbox", "b", 30)
    ledger.give_outbox("decision_outbox", "a")
    assert ledger.outbox_holder("decision_outbox") is None
    assert ledger.take_outbox("decision_outbox", "b", 0.2)
    assert not ledger.take_outbox("decision_outbox", "a", 30)
    time.sleep(0.3)  # b died holding it: the lease passes on once it expires
    assert ledger.take_outbox("decision_outbox", "a", 30)
    assert not ledger.take_outbox("decision_outbox", "b", 30)


def test_the_outboxes_rows_waiting_and_the_age_of_the_oldest(ledger):
    now = 1_800_000_000.0
    assert ledger.outbox_stats(now) == [("outbox", 0, 0.0), ("decision_outbox", 0, 0.0), ("reprocess_outbox", 0, 0.0),
                                        ("access_outbox", 0, 0.0)]
    with ledger.transaction() as q:
        q("INSERT INTO decision_outbox (claim_id, line_number, body, made_at) VALUES ('C1', 1, '{}', ?)", now - 90)
        q("INSERT INTO decision_outbox (claim_id, line_number, body, made_at) VALUES ('C1', 2, '{}', ?)", now - 5)
        q("INSERT INTO outbox (claim_id, line_number, body) VALUES ('C2', 1, '{}')")  # stored before made_at
        q("INSERT INTO access_log (entry_id, at, client, action, status, request_id, body) "
          "VALUES ('E1', '2027-01-15T07:59:30.000000Z', 'etl', 'getClaim', 200, 'r1', '{}')")
        q("INSERT INTO access_outbox (entry_id, client, body) VALUES ('E1', 'etl', '{}')")
    assert ledger.outbox_stats(now) == [("outbox", 1, 0.0), ("decision_outbox", 2, 90.0), ("reprocess_outbox", 0, 0.0),
                                        ("access_outbox", 1, 30.0)]
    assert ledger.outbox_waiting("decision_outbox") and not ledger.outbox_waiting("reprocess_outbox")


# --- a worker's drainers --------------------------------------------------------------------------


def _worker(url: str) -> SimpleNamespace:
    """What `outboxes.draining` uses of a worker: its runtime (ledger, owner id, locks)."""
    return SimpleNamespace(runtime=Runtime(Settings(ledger_url=url)))


def test_drainers_take_turns_in_a_worker_and_across_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    one, two = _worker(url), _worker(url)
    with one.runtime.ledger.transaction() as q:  # a record to publish: an empty outbox takes no lease
        q("INSERT INTO decision_outbox (claim_id, line_number, body) VALUES ('C1', 1, '{}')")
    inside: list[str] = []
    overlaps: list[str] = []

    async def drain(w: SimpleNamespace, name: str, wait: float, hold: float, after: float = 0) -> bool:
        await asyncio.sleep(after)
        async with outboxes.draining(w, REVIEWED, wait) as lease:
            if lease is None:
                return False
            if inside:
                overlaps.append(f"{name} while {inside}")
            inside.append(name)
            await asyncio.sleep(hold)
            await lease.extend()
            inside.remove(name)
            return True

    async def scenario() -> None:
        # the timer and a request of one worker, and the other worker's timer, all at once
        took = await asyncio.gather(drain(one, "timer", 0, 0.3), drain(one, "request", 5, 0.1, 0.1),
                                    drain(two, "other", 0, 0.1, 0.1))
        assert took == [True, True, False], took  # the other worker skips its round; the request waits its turn
        assert await drain(two, "other", 0, 0)  # given back: no wait for the lease to expire
        async with outboxes.draining(one, REVIEWED) as lease:
            assert lease is not None
            two.runtime.ledger.give_outbox(REVIEWED, one.runtime.owner)  # as if it had expired...
            assert two.runtime.ledger.take_outbox(REVIEWED, two.runtime.owner, 30)  # ...and been taken
            with pytest.raises(outboxes.LeaseLost):
                await lease.extend()

    asyncio.run(scenario())
    assert not overlaps, overlaps


# --- end to end: two workers, one ledger, timers every 0.5 s ---------------------------------------


@pytest.fixture(scope="module")
def two_workers(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    pipe = ApiPipeline(module_bootstrap, tmp_path_factory.mktemp("outbox-leases"))
    pipe.env["CLAIMS_ASSEMBLY_TIMEOUT_S"] = "1.5"  # the expiry timer (and its drains) every 0.5 s
    pipe.reviewers(("Lee Lease", REVIEWER, ["PAYMENT_INTEGRITY", "CLINICAL"]))
    pipe.load_reference(reference())
    try:
        urls = []
        for name in ("w1", "w2"):
            pipe.start(name)
            pipe.wait_for("/readyz")
            urls.append(f"http://127.0.0.1:{pipe.web_port(name)}")
        yield pipe, urls
    finally:
        pipe.stop_all()


def test_two_workers_publish_every_reviewed_record_835_and_access_entry_once(two_workers):
    pipe, urls = two_workers
    run = uuid.uuid4().hex[:6]
    ids = [f"LEASE-{run}-{n:02d}" for n in range(16)]
    for n, claim_id in enumerate(ids):
        line = {"procedure_code": "J7192", "units": "9", "charge_amount": "12000.00",
                "service_date": f"2026-04-{n + 1:02d}", "drug": FACTOR}
        pipe.last = ("w1", "w2")[n % 2]
        assert submit(pipe, claim(claim_id, line))["status"] == "IN_REVIEW"

    def decide(n: int) -> tuple[int, object]:
        status, _, answer = call(urls[n % 2], "POST", f"/v1/reviews/{ids[n]}/1",
                                 orjson.dumps({"action": "PAY", "allowed_amount": "11000.00"}), {**bearer(REVIEWER), **JSON})
        return status, answer

    with ThreadPoolExecutor(4) as pool:  # decisions on both workers at once, while both timers drain
        answers = list(pool.map(decide, range(len(ids))))
    assert all(status == 200 for status, _ in answers), answers

    def finals() -> Counter[str]:
        return Counter(r["claim_id"] for r in (orjson.loads(v) for *_, v in read_to_end(pipe.bootstrap, [topics.ADJUDICATED.name]) if v)
                       if r["claim_id"] in ids and r["status"] == "PAID")

    def remits() -> Counter[str]:
        return Counter(k.decode() for *_, k, _ in read_to_end(pipe.bootstrap, [topics.REMITTANCE_835.name]) if k and k.decode() in ids)

    wait_for(lambda: len(finals()) == len(ids) and len(remits()) == len(ids), 30, "every final record and 835")
    time.sleep(1.5)  # three more timer rounds on each worker: a second copy would be out by now
    assert finals() == Counter(ids) and remits() == Counter(ids), (finals(), remits())

    entries = Counter(orjson.loads(v)["entry_id"] for *_, v in read_to_end(pipe.bootstrap, [topics.AUDIT_ACCESS.name]) if v)
    assert entries and max(entries.values()) == 1, [e for e, n in entries.items() if n > 1]
    # and the outboxes' gauges: every one exported by each worker, the review outbox empty
    for name in ("w1", "w2"):
        ages = {labels["outbox"]: v for n, labels, v in pipe.metrics(name) if n == "claims_outbox_oldest_row_age_seconds"}
        rows = {labels["outbox"]: v for n, labels, v in pipe.metrics(name) if n == "claims_outbox_rows"}
        assert set(ages) == set(rows) == {"outbox", "decision_outbox", "reprocess_outbox", "access_outbox"}, ages
        assert rows["decision_outbox"] == 0 and ages["decision_outbox"] == 0
