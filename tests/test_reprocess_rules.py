"""Reprocessing's pure logic (rules/reprocess.py): which claims a reference change looks at,
the dry run, the proposal, automatic approval and the adjustment's records; a property test
that adjusting a claim and then replacing it leaves units and duplicates as if only the
final version had been decided."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import engine, reprocess
from rules.corrections import OriginalClaim
from rules.engine import History
from rules.reference import ReferenceData
from rules.reprocess import AUTHORIZATION, CODE, MEMBER, NDC, Lookup
from rules.rulebook import default_rulebooks
from contract.models import AdjudicatedLine, Authorization, AwpPrice, ClaimLine, ProposalTrigger
from streams.pipeline.batch import load_reference_dir
from tests.ledger_harness import SAMPLE, line

BOOKS = default_rulebooks()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TRIGGER = ProposalTrigger(topic="reference.authorizations", key="PA26-1001")


def ref_copy() -> ReferenceData:
    return copy.deepcopy(load_reference_dir(SAMPLE / "reference"))


def claim(claim_id: str = "C1", **kw: Any) -> list[ClaimLine]:
    return [ClaimLine.model_validate(line(claim_id, n, 2, **kw)) for n in (1, 2)]


def auth(ref: ReferenceData, number: str = "PA26-1001", **changes: Any) -> None:
    ref.apply("authorizations", number, ref.authorizations[number].model_copy(update=changes))


class Mem:
    """What the ledger keeps between claims, in memory: per claim its decisions, the paid
    fingerprints, units and drug days it established (a correction releases them)."""

    def __init__(self) -> None:
        self.decisions: dict[str, list[AdjudicatedLine]] = {}
        self.lines: dict[str, list[ClaimLine]] = {}
        self.paid: dict[str, set[tuple[str, str]]] = {}
        self.units: dict[str, list[tuple[str, Decimal]]] = {}
        self.days: dict[str, set[tuple[str, date]]] = {}
        self.replaced: set[str] = set()

    def history(self, member: str, without: str | None) -> History:
        h = History()
        for c, fps in self.paid.items():
            if c != without:
                h.paid_fingerprints |= {fp for fp, m in fps if m == member}
        for c, days in self.days.items():
            if c != without:
                h.drug_days |= {d for m, d in days if m == member}
        for c, used in self.units.items():
            if c != without:
                for a, u in used:
                    h.units_used[a] = h.units_used.get(a, Decimal(0)) + u
        return h

    def record(self, claim_id: str, lines: list[ClaimLine], outcome: engine.Outcome) -> None:
        member = lines[0].member_id
        self.decisions[claim_id] = outcome.new_decisions
        self.lines[claim_id] = lines
        self.paid[claim_id] = {(fp, m) for fp, _, m in outcome.paid}
        self.units[claim_id] = [(a, u) for a, _, u in outcome.units]
        self.days[claim_id] = {(member, d) for d in outcome.drug_days}

    def release(self, claim_id: str) -> None:
        self.replaced.add(claim_id)
        for table in (self.paid, self.units, self.days):
            table.pop(claim_id, None)

    def submit(self, lines: list[ClaimLine], ref: ReferenceData) -> list[AdjudicatedLine]:
        head = lines[0]
        history = self.history(head.member_id, head.original_claim_id)
        if head.is_correction:
            history.original = OriginalClaim(head.original_claim_id, "DECIDED",
                                             next(iter([c for c in self.replaced if c == head.original_claim_id]), None),
                                             tuple(self.decisions[head.original_claim_id]))
        outcome = engine.decide(lines, ref, history, BOOKS, T0)
        assert outcome.rejection is None, outcome.rejection
        if outcome.reverses:
            self.release(outcome.reverses)
        self.record(head.claim_id, lines, outcome)
        return outcome.decisions

    def dry_run(self, claim_id: str, ref: ReferenceData) -> list[AdjudicatedLine]:
        lines = self.lines[claim_id]
        return reprocess.dry_run(lines, ref, self.history(lines[0].member_id, claim_id), BOOKS, T0)

    def adjust(self, claim_id: str, ref: ReferenceData, n: int, pid: str = "RP-1") -> reprocess.Adjustment:
        lines = self.lines[claim_id]
        minted = reprocess.mint(reprocess.root_of(claim_id), n)
        adj = reprocess.adjust(lines, self.decisions[claim_id], minted, pid, ref,
                               self.history(lines[0].member_id, claim_id), BOOKS, T0)
        self.release(claim_id)
        self.record(minted, [reprocess.as_new([ln], minted)[0] for ln in lines], adj.outcome)
        return adj

    def state(self) -> tuple:
        """Units and duplicates as the next claim would see them."""
        return (sorted(fp for fps in self.paid.values() for fp in fps),
                sorted((a, u) for used in self.units.values() for a, u in used if u),
                sorted(d for days in self.days.values() for d in days))


# --- which claims -----------------------------------------------------------------------------


def test_lookups_follow_the_contract_table() -> None:
    assert reprocess.lookups("reference.authorizations", "PA26-1001") == [Lookup(AUTHORIZATION, "PA26-1001")]
    assert reprocess.lookups("reference.awp-prices", "00143985810:2026-01-01") == [
        Lookup(NDC, "00143985810", date(2026, 1, 1))]
    assert reprocess.lookups("reference.fee-schedule", "S9500:2025-01-01") == [Lookup(CODE, "S9500", date(2025, 1, 1))]
    assert reprocess.lookups("reference.members", "M1001") == [Lookup(MEMBER, "M1001")]
    assert reprocess.lookups("reference.drugs", "00143985810") == [Lookup(NDC, "00143985810")]
    assert reprocess.lookups("reference.provider-contracts", "1245678903") == []  # prospective
    assert reprocess.lookups("reference.awp-prices", "00143985810") == []  # no date: unreadable
    assert reprocess.lookups("reference.awp-prices", "00143985810:not-a-date") == []


def test_index_entries_and_matching() -> None:
    lines = claim()
    entries = reprocess.index_entries(lines)
    assert entries == {(MEMBER, "M1001", ""), (AUTHORIZATION, "PA26-1001", ""), (CODE, "S9500", "2026-01-05"),
                       (CODE, "J0696", "2026-01-05"), (NDC, "00143985810", "2026-01-05")}
    assert reprocess.matches(Lookup(NDC, "00143985810", date(2026, 1, 5)), entries)
    assert not reprocess.matches(Lookup(NDC, "00143985810", date(2026, 1, 6)), entries)  # dates before E only
    assert reprocess.matches(Lookup(NDC, "00143985810"), entries)  # a drug record: any date
    assert reprocess.matches(Lookup(CODE, "S9500", date(2025, 1, 1)), entries)
    assert not reprocess.matches(Lookup(AUTHORIZATION, "PA26-1002"), entries)


def test_only_final_claims_are_looked_at() -> None:
    ref = ref_copy()
    decisions = Mem().submit(claim(), ref)
    assert reprocess.looked_at(decisions)
    assert not reprocess.looked_at([])
    for status in ("PENDED", "VOIDED", "REVERSED"):
        assert not reprocess.looked_at([decisions[0], decisions[1].model_copy(update={"status": status})])


def test_minted_ids() -> None:
    assert reprocess.mint("C1", 1) == "C1~A1"
    assert reprocess.root_of("C1~A2") == "C1" and reprocess.root_of("C1") == "C1"
    assert reprocess.proposal_id("ch-1", "C1") == reprocess.proposal_id("ch-1", "C1") != reprocess.proposal_id("ch-2", "C1")


# --- the dry run and the proposal ----------------------------------------------------------------


def test_late_authorization_approval_proposes_an_increase_approved_automatically() -> None:
    ref = ref_copy()
    auth(ref, status="PENDING")
    mem = Mem()
    before = mem.submit(claim(), ref)
    assert [d.status for d in before] == ["DENIED", "DENIED"] and {a.carc for d in before for a in d.adjustments} == {"197"}
    assert mem.dry_run("C1", ref) and reprocess.propose("C1", before, mem.dry_run("C1", ref), TRIGGER, "RP-1", T0) is None
    auth(ref, status="APPROVED")
    after = mem.dry_run("C1", ref)
    assert [d.status for d in after] == ["PAID", "PAID"] and all(d.claim_id == "C1" for d in after)
    p = reprocess.propose("C1", before, after, TRIGGER, "RP-1", T0)
    assert p is not None and p.status == "OPEN" and [x.line_number for x in p.lines] == [1, 2]
    assert p.allowed_before == 0 and p.allowed_after == sum(d.allowed_amount for d in after) > 0
    assert reprocess.only_raises(p) and reprocess.auto_approves(p, BOOKS)
    assert reprocess.same_result(p, before, after)
    body = p.model_dump(mode="json")
    assert body["allowed_before"] == "0.00" and body["trigger"] == {"topic": "reference.authorizations", "key": "PA26-1001"}


def test_price_decrease_waits_and_lesser_of_still_caps() -> None:
    ref = ref_copy()
    mem = Mem()
    before = mem.submit(claim(), ref)
    assert [d.status for d in before] == ["PAID", "PAID"]
    # a corrected AWP, lower, effective back to the first of the year
    ref.apply("awp-prices", "00143985810:2026-01-01",
              AwpPrice(ndc="00143985810", awp_per_unit=Decimal("10.00"), effective_from=date(2026, 1, 1)))
    p = reprocess.propose("C1", before, mem.dry_run("C1", ref), TRIGGER, "RP-2", T0)
    assert p is not None and [x.line_number for x in p.lines] == [2]
    assert p.lines[0].after.allowed_amount < p.lines[0].before.allowed_amount
    assert not reprocess.only_raises(p) and not reprocess.auto_approves(p, BOOKS)
    # raised far above the charge: lesser-of caps it at the charge
    ref.apply("awp-prices", "00143985810:2026-01-01",
              AwpPrice(ndc="00143985810", awp_per_unit=Decimal("1000.00"), effective_from=date(2026, 1, 1)))
    after = mem.dry_run("C1", ref)
    assert after[1].allowed_amount == Decimal("60.00")


def test_auto_approval_follows_the_rulebook() -> None:
    ref = ref_copy()
    auth(ref, status="PENDING")
    mem = Mem()
    before = mem.submit(claim(), ref)
    auth(ref, status="APPROVED")
    p = reprocess.propose("C1", before, mem.dry_run("C1", ref), TRIGGER, "RP-1", T0)
    book = BOOKS.get(p.lines[0].after.policy_version)
    assert book.reprocess.auto_approve_increases is True and book.reprocess.queue == "REPROCESS"
    off = book.reprocess.model_copy(update={"auto_approve_increases": False})
    object.__setattr__(book, "reprocess", off)
    try:
        assert not reprocess.auto_approves(p, BOOKS)
    finally:
        object.__setattr__(book, "reprocess", off.model_copy(update={"auto_approve_increases": True}))


def test_the_dry_run_sees_other_claims_but_not_its_own() -> None:
    """Its own duplicate fingerprints and units are released; another claim's are not."""
    ref = ref_copy()
    auth(ref, approved_units=Decimal("1"))
    mem = Mem()
    first = mem.submit(claim("C1"), ref)
    assert first[0].status == "PAID"  # uses the 1 unit
    assert [d.status for d in mem.dry_run("C1", ref)] == [d.status for d in first]  # its own unit: released
    second = mem.submit(claim("C2", service_date="2026-01-06"), ref)
    assert second[0].status == "DENIED"  # units exhausted
    # C2 re-decided: C1 still holds the unit, nothing changes
    assert reprocess.propose("C2", second, mem.dry_run("C2", ref), TRIGGER, "RP", T0) is None


# --- the adjustment ------------------------------------------------------------------------------


def test_adjustment_records() -> None:
    ref = ref_copy()
    auth(ref, status="PENDING")
    mem = Mem()
    before = mem.submit(claim(), ref)
    auth(ref, status="APPROVED")
    adj = mem.adjust("C1", ref, 1, pid="RP-9")
    assert adj.claim_id == "C1~A1" and adj.adjusts == "C1" and adj.reverses == "C1"
    assert [(r.claim_id, r.status, r.reversed_by, r.allowed_amount) for r in adj.reversals] == [
        ("C1", "REVERSED", "C1~A1", Decimal("0.00")), ("C1", "REVERSED", "C1~A1", Decimal("0.00"))]
    assert all(r.adjusts is None and r.proposal_id is None for r in adj.reversals)
    new = adj.outcome.new_decisions
    assert [(d.claim_id, d.status, d.adjusts, d.proposal_id) for d in new] == [
        ("C1~A1", "PAID", "C1", "RP-9"), ("C1~A1", "PAID", "C1", "RP-9")]
    assert adj.outcome.decisions == new
    # a second adjustment reverses C1~A1, is numbered per submitted claim and adjusts C1
    auth(ref, status="DENIED")
    adj2 = mem.adjust("C1~A1", ref, 2)
    assert adj2.claim_id == "C1~A2" and adj2.adjusts == "C1" and adj2.reverses == "C1~A1"
    assert [r.allowed_amount for r in adj2.reversals] == [-d.allowed_amount for d in new]
    assert before  # noqa


def test_adjusted_amounts_balance() -> None:
    ref = ref_copy()
    mem = Mem()
    mem.submit(claim(), ref)
    ref.apply("awp-prices", "00143985810:2026-01-01",
              AwpPrice(ndc="00143985810", awp_per_unit=Decimal("10.00"), effective_from=date(2026, 1, 1)))
    adj = mem.adjust("C1", ref, 1)
    for d in adj.outcome.new_decisions:
        charge = {1: Decimal("150.00"), 2: Decimal("60.00")}[d.line_number]
        assert sum((a.amount for a in d.adjustments), Decimal(0)) == charge - d.allowed_amount


# --- property: adjust, then replace, as if only the final version was decided ------------------

CODES = ["S9500", "J0696", "99601", "S5498"]
DRUG = {"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"}


@st.composite
def claims(draw, claim_id: str, frequency: str = "1", original: str | None = None) -> list[ClaimLine]:
    n = draw(st.integers(1, 3))
    out = []
    for i in range(1, n + 1):
        code = draw(st.sampled_from(CODES))
        kw: dict[str, Any] = {"procedure_code": code, "units": str(draw(st.sampled_from([1, 2]))),
                              "service_date": f"2026-01-0{draw(st.integers(5, 6))}", "charge_amount": "150.00",
                              "drug": DRUG if code == "J0696" else None, "claim_frequency": frequency,
                              "original_claim_id": original}
        out.append(ClaimLine.model_validate(line(claim_id, i, n, **kw)))
    return out


@st.composite
def ref_changes(draw) -> tuple[dict, dict]:
    """The authorization before and after: status, units limit."""
    before = {"status": draw(st.sampled_from(["APPROVED", "PENDING"])),
              "approved_units": draw(st.sampled_from([None, Decimal("2"), Decimal("3")]))}
    after = {"status": draw(st.sampled_from(["APPROVED", "PENDING"])),
             "approved_units": draw(st.sampled_from([None, Decimal("2"), Decimal("4")]))}
    return before, after


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(others=claims("X1"), original=claims("C1"), change=ref_changes(), replacement=claims("R1", "7", "C1~A1"),
       later=st.booleans())
def test_adjusting_then_replacing_is_as_if_only_the_final_version_was_decided(
        others, original, change, replacement, later) -> None:
    ref = ref_copy()
    auth(ref, **change[0])
    mem = Mem()
    mem.submit(others, ref)
    mem.submit(original, ref)
    auth(ref, **change[1])
    mem.adjust("C1", ref, 1)
    if later:  # the reference changes again before the provider's replacement
        auth(ref, status="APPROVED", approved_units=None)
    mem.submit(replacement, ref)

    only = Mem()
    only.submit(others, ref_with(change[0]))
    only.submit(reprocess.as_new(replacement), ref if not later else ref)
    assert mem.state() == only.state()


def ref_with(changes: dict) -> ReferenceData:
    ref = ref_copy()
    auth(ref, **changes)
    return ref


def test_replacing_an_adjusted_claim_names_the_latest_version() -> None:
    ref = ref_copy()
    mem = Mem()
    mem.submit(claim("C1"), ref)
    mem.adjust("C1", ref, 1)
    from rules import corrections
    head = claim("R1", claim_frequency="7", original_claim_id="C1")[0]
    problem = corrections.check(head, OriginalClaim("C1", "DECIDED", "C1~A1", tuple(mem.decisions["C1"])))
    assert problem is not None and problem.code == "ORIGINAL_ALREADY_REPLACED"
    head = claim("R1", claim_frequency="7", original_claim_id="C1~A1")[0]
    assert corrections.check(head, OriginalClaim("C1~A1", "DECIDED", None, tuple(mem.decisions["C1~A1"]))) is None
    assert timedelta  # noqa
    assert Authorization  # noqa


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=claims("C1"), price=st.sampled_from(["9.00", "12.50", "30.00"]), since=st.integers(1, 8))
def test_a_claims_subset_of_the_reference_data_decides_it_as_the_whole(lines, price, since) -> None:
    """The dry run reads `ReferenceData.subset(lines)` (a copy another thread may read): the
    same decisions as the whole view."""
    ref = ref_copy()
    ref.apply("awp-prices", f"00143985810:2026-01-0{since}",
              AwpPrice(ndc="00143985810", awp_per_unit=Decimal(price), effective_from=date(2026, 1, since)))
    whole = reprocess.dry_run(lines, ref, History(), BOOKS, T0)
    assert reprocess.dry_run(lines, ref.subset(lines), History(), BOOKS, T0) == whole


def test_a_subset_taken_while_the_view_changes_is_whole() -> None:
    """A writer thread adds effective-dated prices (two list inserts each) while another takes
    subsets: every copy pairs each start with its own record (no torn read)."""
    import threading

    ref = ref_copy()
    lines = claim("C1")
    stop = threading.Event()

    def write() -> None:
        days = [date(2025, 12, 31) - timedelta(days=i) for i in range(300)]
        while not stop.is_set():
            for day in days:  # an earlier date each time: an insert at the front, shifting both lists
                ref.apply("awp-prices", f"00143985810:{day}", AwpPrice(ndc="00143985810", awp_per_unit=Decimal("1.00"),
                                                                       effective_from=day))
            for day in days:
                ref.apply("awp-prices", f"00143985810:{day}", None)

    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns between almost any two bytecodes
    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(10_000):
            dated = ref.subset(lines).awp["00143985810"]
            assert all(start == record.effective_from for start, record in zip(dated.starts, dated.records, strict=True))
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
