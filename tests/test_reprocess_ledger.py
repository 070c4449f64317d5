"""Reprocessing in the ledger, on SQLite and PostgreSQL: the index, the queue of reference
changes, proposals (made, superseded, withdrawn, approved, rejected), the adjustment in one
transaction, corrections after an adjustment, and proposal making that a crash neither loses
nor repeats."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from rules import engine
from rules.reference import ReferenceData
from streams.ledger.store import Intake, Ledger
from contract.models import AwpPrice, FeeScheduleRate
from streams.ledger.reprocess import ProposalConflict, ProposalNotFound
from tests.ledger_harness import BOOKS, SAMPLE, Store, accept, line
from streams.pipeline.batch import load_reference_dir

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
AUTHS = "reference.authorizations"
AWP = "reference.awp-prices"
NDC = "00143985810"


def fresh_ref() -> ReferenceData:
    return copy.deepcopy(load_reference_dir(SAMPLE / "reference"))


def set_auth(ref: ReferenceData, number: str = "PA26-1001", **changes: Any) -> None:
    ref.apply("authorizations", number, ref.authorizations[number].model_copy(update=changes))


def set_awp(ref: ReferenceData, price: str, since: str = "2026-01-01") -> str:
    key = f"{NDC}:{since}"
    ref.apply("awp-prices", key, AwpPrice(ndc=NDC, awp_per_unit=Decimal(price), effective_from=date.fromisoformat(since)))
    return key


def submit(ledger: Ledger, ref: ReferenceData, objs: list[dict[str, Any]], now: datetime = T0) -> Intake:
    out = Intake()
    for obj in objs:
        intake = accept(ledger, obj)
        out.decisions += intake.decisions
        out.rejections += intake.rejections
        if intake.assembled:
            work = engine.price(engine.enrich(engine.start(intake.assembled, BOOKS, now), ref, BOOKS), ref)
            decided = ledger.decide(work, lambda h: engine.finalize(work, h, BOOKS, now))
            if decided is not None:
                out.decisions += decided.decisions
                out.rejections += decided.rejections
    return out


def claim(claim_id: str = "L1", **kw: Any) -> list[dict[str, Any]]:
    return [line(claim_id, 1, 2, **kw), line(claim_id, 2, 2, **kw)]


def change(ledger: Ledger, ref: ReferenceData, topic: str, key: str, change_id: str, now: datetime = T0):
    assert ledger.record_change(topic, key, change_id, now)
    made = None
    for cid, t, k in ledger.pending_changes():
        made = ledger.make_proposals(cid, t, k, ref, BOOKS, now)
    return made


def statuses(ledger: Ledger, claim_id: str) -> list[tuple]:
    return [(d.status, str(d.allowed_amount), d.adjusts, d.proposal_id) for d in ledger.decisions_for(claim_id)]


def test_decided_claims_are_indexed_and_found_by_their_keys(ledger: Ledger) -> None:
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    submit(ledger, ref, claim("L2", service_date="2026-02-10"))
    assert ledger.claims_looked_at(AUTHS, "PA26-1001") == ["L1", "L2"]
    assert ledger.claims_looked_at(AWP, f"{NDC}:2026-02-01") == ["L2"]  # dates on or after E only
    assert ledger.claims_looked_at(AWP, f"{NDC}:2026-01-01") == ["L1", "L2"]
    assert ledger.claims_looked_at("reference.fee-schedule", "S9500:2026-01-06") == ["L2"]
    assert ledger.claims_looked_at("reference.members", "M1001") == ["L1", "L2"]
    assert ledger.claims_looked_at("reference.drugs", NDC) == ["L1", "L2"]
    assert ledger.claims_looked_at("reference.members", "M1002") == []
    assert not ledger.record_change("reference.provider-contracts", "1245678903", "c0", T0)  # prospective


def test_many_changes_claims_are_found_in_one_call_as_one_by_one(ledger: Ledger) -> None:
    """The timer's one call per round (`claims_looked_at_all`, one round trip on PostgreSQL)
    answers, change by change and in order, what `claims_looked_at` answers: a change recorded
    before a claim was complete does not look at it, an unrecorded one looks at every claim."""
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    ledger.record_change("reference.members", "M1001", "early", T0 - timedelta(days=1))
    submit(ledger, ref, claim("L2", service_date="2026-02-10"))
    ledger.record_change(AWP, f"{NDC}:2026-02-01", "late", T0 + timedelta(days=1))
    changes = [("early", "reference.members", "M1001"), ("late", AWP, f"{NDC}:2026-02-01"),
               ("unknown", AUTHS, "PA26-1001"), (None, "reference.members", "M1002"), ("late", "reference.drugs", NDC)]
    expected = [ledger.claims_looked_at(t, k, c) for c, t, k in changes]
    assert ledger.claims_looked_at_all(changes) == expected
    assert [bool(claims) for claims in expected] == [False, True, True, False, True]
    ledger.changes_done(["early", "late"])
    assert ledger.pending_changes() == []


def test_late_authorization_is_adjusted_at_once(ledger: Ledger) -> None:
    ref = fresh_ref()
    set_auth(ref, status="PENDING")
    submit(ledger, ref, claim("L1"))
    assert [s for s, *_ in statuses(ledger, "L1")] == ["DENIED", "DENIED"]
    set_auth(ref, status="APPROVED")
    made = change(ledger, ref, AUTHS, "PA26-1001", "c1")
    (p,) = ledger.proposals(status=None)
    assert p.status == "APPROVED" and p.decided_by == "auto" and p.adjustment_claim_id == "L1~A1"
    assert [x.status for x in made.proposals] == ["OPEN", "APPROVED"]
    assert [(r.claim_id, r.status, r.reversed_by) for r in made.records] == [
        ("L1", "REVERSED", "L1~A1"), ("L1", "REVERSED", "L1~A1"), ("L1~A1", "PAID", None), ("L1~A1", "PAID", None)]
    assert statuses(ledger, "L1~A1") == [("PAID", "115.00", "L1", p.proposal_id), ("PAID", "21.25", "L1", p.proposal_id)]
    assert ledger.rows("paid_lines", "claim_id") == [("L1~A1",), ("L1~A1",)]
    assert ledger.rows("corrections") == [("L1", "L1~A1", "A")]
    assert ledger.adjustment_of("L1~A1")["adjusts"] == "L1"
    out = ledger.reprocess_outbox()
    assert [(t, k) for _, t, k, _ in out] == [("claims.reprocess.proposals", "L1")] * 2 + [("claims.lines.adjudicated", "L1")] * 2 \
        + [("claims.lines.adjudicated", "L1~A1")] * 2 + [("claims.remittance.835", "L1~A1")]  # the pair's 835
    ledger.reprocess_outbox_sent(i for i, *_ in out)
    assert ledger.reprocess_outbox() == []
    # the same change again (a replay) makes nothing; the adjusted claim is now the latest version
    assert ledger.record_change(AUTHS, "PA26-1001", "c1", T0)
    assert ledger.pending_changes() == []
    assert ledger.make_proposals("c1", AUTHS, "PA26-1001", ref, BOOKS, T0).proposals == []
    assert ledger.claims_looked_at(AUTHS, "PA26-1001") == ["L1~A1"]


def test_a_price_decrease_waits_then_is_approved(ledger: Ledger) -> None:
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    key = set_awp(ref, "10.00")
    change(ledger, ref, AWP, key, "c1")
    (p,) = ledger.proposals()
    assert p.status == "OPEN" and [x.line_number for x in p.lines] == [2]
    assert (str(p.allowed_before), str(p.allowed_after)) == ("136.25", "132.00")  # AWP x 2 x 85 %
    with pytest.raises(ProposalNotFound):
        ledger.decide_proposal("nope", "APPROVE", "alice", None, ref, BOOKS, T0)
    stored, made = ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", "ok", ref, BOOKS, T0)
    assert stored.status == "APPROVED" and stored.decided_by == "alice" and stored.adjustment_claim_id == "L1~A1"
    assert statuses(ledger, "L1~A1")[1] == ("PAID", "17.00", "L1", p.proposal_id)
    again, made2 = ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", "ok", ref, BOOKS, T0)
    assert again == stored and made2.records == []  # idempotent
    with pytest.raises(ProposalConflict):
        ledger.decide_proposal(p.proposal_id, "REJECT", "alice", None, ref, BOOKS, T0)


def test_rejected_supersede_and_withdraw(ledger: Ledger) -> None:
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    change(ledger, ref, AWP, set_awp(ref, "10.00"), "c1")
    (first,) = ledger.proposals()
    change(ledger, ref, AWP, set_awp(ref, "9.00"), "c2")
    (second,) = ledger.proposals()
    assert second.proposal_id != first.proposal_id
    assert ledger.proposal(first.proposal_id).status == "SUPERSEDED"
    # the price back: the dry run no longer differs, the open proposal is withdrawn
    change(ledger, ref, AWP, set_awp(ref, "12.50"), "c3")
    assert ledger.proposals() == [] and ledger.proposal(second.proposal_id).status == "WITHDRAWN"
    change(ledger, ref, AWP, set_awp(ref, "10.00"), "c4")
    (third,) = ledger.proposals()
    stored, _ = ledger.decide_proposal(third.proposal_id, "REJECT", "alice", "no", ref, BOOKS, T0)
    assert stored.status == "REJECTED" and ledger.decisions_for("L1~A1") == []
    assert sorted(p.status for p in ledger.proposals(status=None)) == ["REJECTED", "SUPERSEDED", "WITHDRAWN"]


def test_an_approval_after_the_state_moved_on_withdraws_and_proposes_again(ledger: Ledger) -> None:
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    change(ledger, ref, AWP, set_awp(ref, "10.00"), "c1")
    (p,) = ledger.proposals()
    set_awp(ref, "11.00")  # not yet looked at: the approval finds another result
    stored, made = ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", None, ref, BOOKS, T0)
    assert stored.status == "WITHDRAWN" and ledger.decisions_for("L1~A1") == []
    (again,) = ledger.proposals()
    assert again.lines[0].after.allowed_amount == Decimal("18.70")


def test_a_provider_correction_after_an_adjustment(ledger: Ledger) -> None:
    ref = fresh_ref()
    set_auth(ref, status="PENDING")
    submit(ledger, ref, claim("L1"))
    set_auth(ref, status="APPROVED")
    change(ledger, ref, AUTHS, "PA26-1001", "c1")
    stale = submit(ledger, ref, [line("R1", 1, 1, claim_frequency="7", original_claim_id="L1")])
    assert [r.reasons[0].code for r in stale.rejections] == ["ORIGINAL_ALREADY_REPLACED"]
    out = submit(ledger, ref, claim("R2", claim_frequency="7", original_claim_id="L1~A1"))
    assert [(d.claim_id, d.status, d.reversed_by) for d in out.decisions] == [
        ("L1~A1", "REVERSED", "R2"), ("L1~A1", "REVERSED", "R2"), ("R2", "PAID", None), ("R2", "PAID", None)]
    assert [r[0] for r in ledger.rows("paid_lines", "claim_id")] == ["R2", "R2"]  # no duplicate of the adjusted claim
    assert ledger.claims_looked_at(AUTHS, "PA26-1001") == ["R2"]


def test_a_provider_replacement_supersedes_the_open_proposal(ledger: Ledger) -> None:
    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    change(ledger, ref, AWP, set_awp(ref, "10.00"), "c1")
    (p,) = ledger.proposals()
    submit(ledger, ref, [line("R1", 1, 1, claim_frequency="7", original_claim_id="L1")])
    assert ledger.proposal(p.proposal_id).status == "SUPERSEDED" and ledger.proposals() == []
    with pytest.raises(ProposalConflict):
        ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", None, ref, BOOKS, T0)


def reviewed_claims(ledger: Ledger, nurse_charge: str = "100.00") -> None:
    """RV-1 and RV-2: a high-dollar factor line (pended, then denied CARC 50 on RV-1 and paid on
    RV-2 by a reviewer) and a nursing visit paid by the rules."""
    from tests.test_review import decide_lines, decide_review, factor
    from tests.test_review_remittance import nurse

    for claim_id, day in (("RV-1", "2026-02-10"), ("RV-2", "2026-02-11")):
        assert [d.status for d in decide_lines(ledger, [
            factor(claim_id, 1, 2, charge="15000.00", service_date=day),
            nurse(claim_id, 2, 2, service_date=day, charge_amount=nurse_charge)])] == ["PENDED", "PAID"]
    decide_review(ledger, "RV-1", 1, {"action": "DENY", "carc": "50"})
    decide_review(ledger, "RV-2", 1, {"action": "PAY"})


def test_a_record_a_reviewed_claim_was_decided_with_proposes_nothing(ledger: Ledger) -> None:
    """A reference record the claims were decided with, looked at after their pended lines
    were reviewed (a worker's first load is recorded after claims waiting on the topic were
    submitted, and under load the timer reaches it late): the dry run pends each reviewed line
    again, the reviewers' decisions stand, nothing is proposed or adjusted (the denied line
    pended again counted as a raise and was adjusted at once, the paid one waited as a fall)."""
    from tests.test_review import AUTH, REF

    reviewed_claims(ledger)
    before = {c: ledger.decisions_for(c) for c in ("RV-1", "RV-2")}
    assert [(d.status, d.review is not None) for c in before for d in before[c]] == [
        ("DENIED", True), ("PAID", False), ("PAID", True), ("PAID", False)]
    made = change(ledger, REF, AUTHS, AUTH, "c1", T0 + timedelta(minutes=5))
    assert ledger.pending_changes() == [] and made.proposals == [] and ledger.proposals(status=None) == []
    assert {c: ledger.decisions_for(c) for c in before} == before


def test_an_adjustment_keeps_a_reviewers_decision_the_rules_would_pend_again(ledger: Ledger) -> None:
    """A real change to another line of a reviewed claim (the nursing visit's fee raised): only
    that line differs and the adjustment is automatic; the adjusted claim keeps the reviewer's
    denial (no pend, no hold) and payment (its hold kept) instead of pending the lines again."""
    from tests.test_review import REF

    reviewed_claims(ledger, nurse_charge="300.00")
    ref = copy.deepcopy(REF)
    key = "99601:2026-01-01"
    ref.apply("fee-schedule", key, FeeScheduleRate(procedure_code="99601", rate=Decimal("200.00"),
                                                   effective_from=date(2026, 1, 1)))
    change(ledger, ref, "reference.fee-schedule", key, "c1", T0 + timedelta(minutes=5))
    proposals = ledger.proposals(status=None)
    assert sorted((p.claim_id, p.status, [ln.line_number for ln in p.lines]) for p in proposals) == [
        ("RV-1", "APPROVED", [2]), ("RV-2", "APPROVED", [2])]
    for claim_id, action, status, carcs in (("RV-1", "DENY", "DENIED", ["50"]), ("RV-2", "PAY", "PAID", [])):
        (old, _), (first, second) = ledger.decisions_for(claim_id), ledger.decisions_for(f"{claim_id}~A1")
        assert (first.claim_id, first.status, first.review.action, first.allowed_amount, first.adjusts) == (
            f"{claim_id}~A1", status, action, old.allowed_amount, claim_id)
        assert [a.carc for a in first.adjustments if a.carc != "45"] == carcs and first.pend is None
        assert second.status == "PAID" and second.allowed_amount > Decimal("100.00")
    assert ledger.open_pends() == []
    assert ledger.rows("paid_lines", "claim_id", "line_number") == [("RV-1~A1", 2), ("RV-2~A1", 1), ("RV-2~A1", 2)]


def test_proposal_making_interrupted_makes_the_rest_and_none_twice(store: Store) -> None:
    ledger = store.ledger
    ref = fresh_ref()
    for i, c in enumerate(("L1", "L2", "L3")):
        submit(ledger, ref, claim(c, service_date=f"2026-01-0{5 + i}"))
    key = set_awp(ref, "10.00")
    ledger.record_change(AWP, key, "c1", T0)
    (cid, topic, k), = ledger.pending_changes()
    ledger.propose(cid, topic, k, "L1", ref, BOOKS, T0)  # then a kill -9: L2 and L3 not looked at
    ledger = store.reopen()
    assert ledger.pending_changes() == [("c1", AWP, key)]
    ledger.make_proposals("c1", AWP, key, ref, BOOKS, T0)
    assert sorted(p.claim_id for p in ledger.proposals()) == ["L1", "L2", "L3"]
    assert ledger.count("proposals") == 3
    assert ledger.pending_changes() == []
    assert len([o for o in ledger.reprocess_outbox() if o[1] == "claims.reprocess.proposals"]) == 3


def test_an_adjustment_is_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in the middle of the adjustment leaves nothing of it; done again, once."""
    ledger = store.ledger
    ref = fresh_ref()
    set_auth(ref, status="PENDING")
    submit(ledger, ref, claim("L1"))
    set_auth(ref, status="APPROVED")
    from streams.ledger import reprocess as reprocess_store

    def boom(*a, **k):
        raise RuntimeError("crash inside the adjustment")

    monkeypatch.setattr(reprocess_store, "write_index", boom)
    ledger.record_change(AUTHS, "PA26-1001", "c1", T0)
    with pytest.raises(RuntimeError):
        ledger.make_proposals("c1", AUTHS, "PA26-1001", ref, BOOKS, T0)
    assert ledger.count("proposals") == 0 and ledger.decisions_for("L1~A1") == [] and ledger.count("reversals") == 0
    monkeypatch.undo()
    ledger = store.reopen()
    (cid, t, k), = ledger.pending_changes()
    ledger.make_proposals(cid, t, k, ref, BOOKS, T0)
    assert ledger.count("adjustments") == 1 and len(ledger.decisions_for("L1~A1")) == 2
    assert ledger.count("reversals") == 2


# --- crash points: a kill -9 anywhere in proposal making and adjusting ---------------------------


def _reprocess_run(url: str, every: int | None) -> tuple[dict, int]:
    """Claims decided with an authorization PENDING, then its approval and a price decrease:
    proposals and adjustments made while statements are interrupted every `every` steps (a
    crash: the transaction rolls back) and the work is done again, until it completes."""
    from streams.ledger.store import LedgerUnavailable
    from tests.test_crash_points import CrashingLedger

    ledger = CrashingLedger(url, every)
    ledger.armed = False
    ref = fresh_ref()
    set_auth(ref, status="PENDING")
    for i, c in enumerate(("L1", "L2", "L3")):
        submit(ledger, ref, claim(c, service_date=f"2026-01-0{5 + i}"))
    ledger.armed = True
    changes = [(AUTHS, lambda: set_auth(ref, status="APPROVED") or "PA26-1001", "c1"), (AWP, lambda: set_awp(ref, "10.00"), "c2")]
    for topic, apply, cid in changes:
        key = apply()
        for _ in range(10_000):
            try:
                ledger.record_change(topic, key, cid, T0)
                for pending, t, k in ledger.pending_changes():
                    ledger.make_proposals(pending, t, k, ref, BOOKS, T0)
                break
            except LedgerUnavailable:
                continue
    ledger.armed = False
    for p in ledger.proposals(status="OPEN"):
        ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", None, ref, BOOKS, T0)
    state = {t: ledger.rows(t) for t in ("proposals", "adjustments", "decisions", "reversals", "paid_lines", "unit_usage",
                                         "corrections", "claim_drug_days", "reference_changes")}
    state["outbox"] = ledger.rows("reprocess_outbox", "item", "topic", "msg_key", "body")
    crashes = ledger.crashes
    ledger.close()
    return state, crashes


def test_a_crash_anywhere_in_reprocessing_loses_nothing_and_repeats_nothing(tmp_path) -> None:
    expected, _ = _reprocess_run(f"sqlite:///{tmp_path / 'clean.db'}", None)
    assert len(expected["adjustments"]) == 6 and len(expected["proposals"]) == 6
    crashed_somewhere = 0
    for every in (263, 389, 521, 787, 1201):
        state, crashes = _reprocess_run(f"sqlite:///{tmp_path / f'crash-{every}.db'}", every)
        crashed_somewhere += crashes
        assert state == expected, f"interrupting every {every} steps ({crashes} crashes) changed the ledger"
    assert crashed_somewhere > 0


def test_an_approval_waits_for_a_view_that_holds_the_change(ledger: Ledger) -> None:
    """A worker whose reference view does not hold the proposal's change (or one still to be
    looked at) yet must not decide it again: ViewBehind (503), nothing stored."""
    from streams.ledger.reprocess import ViewBehind

    ref = fresh_ref()
    submit(ledger, ref, claim("L1"))
    change(ledger, ref, AWP, set_awp(ref, "10.00"), "inc:reference.awp-prices:0:7")
    (p,) = ledger.proposals()
    with pytest.raises(ViewBehind):
        ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", None, ref, BOOKS, T0, lambda c: not c.endswith(":7"))
    ledger.record_change(AUTHS, "PA26-1001", "inc:reference.authorizations:0:3", T0)  # recorded, not looked at yet
    with pytest.raises(ViewBehind):
        ledger.decide_proposal(p.proposal_id, "APPROVE", "alice", None, ref, BOOKS, T0, lambda c: not c.endswith(":3"))
    assert ledger.proposal(p.proposal_id).status == "OPEN" and ledger.count("adjustments") == 0
    stored, _ = ledger.decide_proposal(p.proposal_id, "REJECT", "alice", None, ref, BOOKS, T0, lambda c: False)
    assert stored.status == "REJECTED"  # a rejection decides nothing again


async def test_the_timer_looks_at_changes_in_order_and_waits_for_one_its_view_lacks(tmp_path, monkeypatch) -> None:
    """A change another worker recorded first (a fee raise) that this worker's view does not
    hold yet stops the round: the later change (an AWP raise) is not looked at before it, or
    its automatic adjustment, complete after the first change was recorded, would never be
    looked at for it. Once the view holds both, both apply, in order."""
    from streams.agents import reprocess as timer
    from streams.worker.runtime import Runtime
    from streams.settings import Settings
    from streams.worker.app import Worker

    settings = Settings(_env_file=None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    rt = Runtime(settings)
    rt.reference = fresh_ref()
    rt.reference_ready.set()
    w = Worker(settings=settings, app=None, runtime=rt, web_port=0)  # the timer's round needs no app

    async def nothing(w: Worker) -> int:
        return 0

    monkeypatch.setattr(timer, "publish_outbox", nothing)
    submit(rt.ledger, rt.reference, claim("L1"))
    fee, price = "inc:reference.fee-schedule:0:5", "inc:reference.awp-prices:0:9"
    rt.ledger.record_change("reference.fee-schedule", "S9500:2026-01-01", fee, T0)  # by a worker ahead of this one
    set_awp(rt.reference, "20.00")
    rt.reference_read_to[("reference.awp-prices", 0)] = 10  # this view holds the price, not the fee
    rt.ledger.record_change(AWP, f"{NDC}:2026-01-01", price, T0 + timedelta(seconds=1))
    try:
        await timer.one_round(w)
        assert [c for c, *_ in rt.ledger.pending_changes()] == [fee, price] and rt.ledger.proposals(None) == []
        rt.reference.apply("fee-schedule", "S9500:2026-01-01", FeeScheduleRate(
            procedure_code="S9500", rate=Decimal("130.00"), effective_from=date(2026, 1, 1)))
        rt.reference_read_to[("reference.fee-schedule", 0)] = 6
        await timer.one_round(w)
        assert rt.ledger.pending_changes() == []
        assert [(d.claim_id, str(d.allowed_amount)) for d in rt.ledger.decisions_for("L1~A1")] == [
            ("L1~A1", "130.00"), ("L1~A1", "34.00")]  # the fee (the first change's look) and 20.00 x 2 x 85 %
        assert [p.trigger.topic for p in rt.ledger.proposals(None)] == ["reference.fee-schedule"]
    finally:
        rt.close()


def test_what_a_workers_view_holds(tmp_path) -> None:
    """A change is held once the view read past its offset; a change of another broker
    incarnation (its offsets mean nothing here) and ids of other forms are held, so the
    timer, which stops at the first change its view lacks, never waits for one forever."""
    from streams.worker.runtime import Runtime
    from streams.settings import Settings

    rt = Runtime(Settings(_env_file=None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}"))
    rt.incarnation = "inc"
    rt.reference_read_to[("reference.awp-prices", 1)] = 5
    assert rt.reference_holds("inc:reference.awp-prices:1:4")
    assert not rt.reference_holds("inc:reference.awp-prices:1:5")
    assert not rt.reference_holds("inc:reference.members:0:0")  # nothing read there yet
    assert rt.reference_holds("old:reference.awp-prices:1:500")  # another incarnation's
    assert rt.reference_holds("offline") and rt.reference_holds("batch:3")
    rt.close()
