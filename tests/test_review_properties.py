"""Property tests of manual review on the ledger (SQLite, and PostgreSQL): any sequence of
claims (high-dollar and NOC lines that pend, nursing lines paid by rules, all on one
authorization of 10 units), reviewers' PAY/DENY at random points, repeated and conflicting
decisions, replacements and voids, re-deliveries and replays. After every step:

* the units in use never exceed the authorization's `approved_units`, pended holds counted,
  and are exactly those of the lines in force that are PAID or PENDED now; a line is denied
  for units (198) only when what is held leaves too few, and never paid beyond them;
* a pended line counts as paid for duplicates (18) until a reviewer denies it; a denial
  releases its units and fingerprint at once, a payment keeps them;
* the stream: a line has at most one record per status (repeats identical but for the
  time), a PENDED record carries `pend` and nothing owed, a reviewed final record carries
  `review` and no `pend`; re-delivery answers a line's latest record; a replay or a repeated
  decision changes nothing in the ledger; the outbox holds the final records stored and not
  yet published;
* remittance: a claim with a pended line is never remitted; once every pend is decided, each
  line's 835 amounts (first 835 per claim, as consumers dedupe by key) add up to what its
  records say is owed now, reversals included (a replacement held while pended still takes
  back what its original was paid; a claim reversed while pended was never paid).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import engine
from streams.ledger.store import Intake, Ledger
from contract.models import AdjudicatedLine, Authorization, ClaimLine
from contract.messages import DecidedClaim
from streams.ledger.remittance import decided_claim, remittance_inputs_all
from streams.ledger.review import ReviewConflict, ReviewNotFound
from tests.harness import drop_pg_schema, pg_schema_url
from tests.test_corrections import build
from tests.ledger_harness import BOOKS, T0, accept, line, snapshot
from tests.test_review import FACTOR, MEMBER, reference

AUTH, APPROVED = "PA-REVIEW-PROP", Decimal("10")


def _reference():
    ref = reference()
    ref.apply("authorizations", AUTH, Authorization(
        authorization_number=AUTH, member_id=MEMBER, status="APPROVED", procedure_codes=["J7192", "J9999", "99601"],
        start_date="2026-01-01", end_date="2026-12-31", approved_units=APPROVED))
    return ref


REF = _reference()
NOC_DRUG = {**FACTOR, "quantity": "100", "dosage": "100 IU"}


def _line(claim_id: str, n: int, k: int, day: str, code: str, units: str, charge: str, drug: dict | None) -> dict[str, Any]:
    return line(claim_id, n, k, member_id=MEMBER, authorization_number=AUTH, procedure_code=code, units=units,
                charge_amount=charge, service_date=day, drug=drug)


TEMPLATES = {  # J9999 pends (NOC_REVIEW), J7192 at 12,000.00 pends (HIGH_DOLLAR), 99601 is paid by rules
    "noc2": lambda c, n, k, day: _line(c, n, k, day, "J9999", "2", "500.00", NOC_DRUG),
    "noc4": lambda c, n, k, day: _line(c, n, k, day, "J9999", "4", "500.00", NOC_DRUG),
    "hd3": lambda c, n, k, day: _line(c, n, k, day, "J7192", "3", "12000.00", FACTOR),
    "n1": lambda c, n, k, day: _line(c, n, k, day, "99601", "1", "100.00", None),
    "n3": lambda c, n, k, day: _line(c, n, k, day, "99601", "3", "100.00", None),
}
DAYS = ("2026-02-10", "2026-02-11")
REVIEWS = ({"action": "PAY"}, {"action": "PAY", "allowed_amount": "50.00"}, {"action": "DENY", "carc": "50"},
           {"action": "DENY", "carc": "16", "rarc": ["N115"]})
claim_lines = st.lists(st.tuples(st.sampled_from(sorted(TEMPLATES)), st.sampled_from(DAYS)), min_size=1, max_size=3)
review_body = st.sampled_from(range(len(REVIEWS)))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("original"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("replace"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("void"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("review"), review_body, st.integers(0, 1000)),
        st.tuples(st.just("review"), review_body, st.integers(0, 1000)),
        st.tuples(st.just("review_again"), review_body, st.integers(0, 1000)),
        st.tuples(st.just("redeliver"), st.just(0), st.integers(0, 1000)),
        st.tuples(st.just("replay"), st.just(0), st.integers(0, 1000)),
        st.tuples(st.just("publish"), st.just(0), st.just(0)),
    ),
    min_size=1, max_size=16,
)
closing = st.lists(review_body, min_size=16, max_size=16)  # the decisions that close the pends left at the end


def fingerprint(d: AdjudicatedLine) -> str:
    return f"{d.member_id}|{d.provider_npi}|{d.service_date}|{d.procedure_code}|{','.join(sorted(set(d.modifiers)))}|{d.ndc11 or ''}"


def decide(ledger: Ledger, lines: list[ClaimLine], now) -> Intake | None:
    work = engine.price(engine.enrich(engine.start(lines, BOOKS, now), REF, BOOKS), REF)
    return ledger.decide(work, lambda history: engine.finalize(work, history, BOOKS, now))


def units_in_use(ledger: Ledger) -> Decimal:
    return sum((u for _, _, u in ledger.units_used(AUTH)), Decimal(0))


class Model:
    """What the sequence did, as a consumer of the outputs sees it."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.sent: list[dict[str, Any]] = []
        self.units = {}  # (claim, line) -> units
        self.claims: list[str] = []
        self.decided: set[str] = set()
        self.corrected: set[str] = set()
        self.voids: set[str] = set()
        self.published: list[AdjudicatedLine] = []
        self.reviewed: dict[tuple[str, int], dict[str, Any]] = {}  # the decision stored for each reviewed line
        self.outbox: list[AdjudicatedLine] = []  # final records stored by reviews, not yet published
        self.remitted: dict[str, DecidedClaim] = {}  # the first 835 of each claim (consumers dedupe by key)

    # --- the outputs ----------------------------------------------------------------------

    def publish(self, records: list[AdjudicatedLine]) -> None:
        for d in records:
            same = [p for p in self.published if (p.claim_id, p.line_number, p.status) == (d.claim_id, d.line_number, d.status)]
            for p in same:
                assert p.model_dump(exclude={"adjudicated_at"}) == d.model_dump(exclude={"adjudicated_at"})
            if d.status == "PENDED":
                assert d.pend is not None and d.allowed_amount == 0 and d.adjustments == [] and d.review is None
            else:
                assert d.pend is None
            if d.review is not None:
                assert d.status in ("PAID", "DENIED")
            self.published.append(d)

    def remit(self, claim: DecidedClaim | None) -> None:
        """The remittance agent's view of a claim handed to it (adjudicate or review)."""
        if claim is None:
            return
        [(remit, _, _)] = remittance_inputs_all(self.ledger, [claim])
        if remit is None:
            return
        assert not any(d.status == "PENDED" for d in remit.decisions)
        assert self.ledger.open_pends(limit=10_000) == [] or all(
            p["claim_id"] != claim.claim_id for p in self.ledger.open_pends(limit=10_000))
        self.remitted.setdefault(claim.claim_id, remit)

    def latest(self) -> dict[tuple[str, int], AdjudicatedLine]:
        """Each line's current record in the ledger (its decision: PENDED, or final)."""
        out = {}
        for claim_id in self.decided:
            for d in self.ledger.decisions_for(claim_id):
                out[(d.claim_id, d.line_number)] = d
        return out

    # --- the checks after every step ------------------------------------------------------

    def check_holds(self) -> None:
        in_force = self.decided - self.corrected
        holding = {k: d for k, d in self.latest().items() if k[0] in in_force and d.status in ("PAID", "PENDED")}
        used = units_in_use(self.ledger)
        assert used <= APPROVED, f"{used} units in use of {APPROVED} approved"
        assert used == sum((self.units[k] for k in holding), Decimal(0))
        assert {(c, n) for c, n, _ in self.ledger.units_used(AUTH)} == set(holding)
        assert set(self.ledger.rows("paid_lines", "claim_id", "line_number")) == set(holding)
        open_pends = {(p["claim_id"], p["line_number"]) for p in self.ledger.open_pends(limit=10_000)}
        assert open_pends == {k for k, d in holding.items() if d.status == "PENDED"}
        assert self.ledger.decision_outbox(limit=10_000) == sorted(self.outbox, key=lambda r: (r.claim_id, r.line_number))

    def check_new_claim(self, claim_id: str, before: Decimal, step: list[AdjudicatedLine]) -> None:
        """A claim's new decisions, in line order, against the units held before it."""
        held = before
        holding_fingerprints = {fingerprint(d) for k, d in self.latest().items()
                                if k[0] in self.decided - self.corrected and k[0] != claim_id and d.status in ("PAID", "PENDED")}
        for d in (d for d in step if d.claim_id == claim_id):
            units = self.units[(d.claim_id, d.line_number)]
            carcs = [a.carc for a in d.adjustments]
            if d.status in ("PAID", "PENDED"):
                held += units
                assert held <= APPROVED and fingerprint(d) not in holding_fingerprints
                holding_fingerprints.add(fingerprint(d))
            elif "198" in carcs:
                assert held + units > APPROVED, "denied for units while enough were left"
            elif "18" in carcs:
                assert fingerprint(d) in holding_fingerprints, "a duplicate of a line neither paid nor pended"

    def check_end(self) -> None:
        by_line: dict[tuple[str, int], dict[str, AdjudicatedLine]] = defaultdict(dict)
        for d in self.published:
            by_line[(d.claim_id, d.line_number)].setdefault(d.status, d)
        in_force = self.decided - self.corrected
        latest = self.latest()
        remitted: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
        for claim in self.remitted.values():
            for d in claim.decisions:
                remitted[(d.claim_id, d.line_number)] += d.allowed_amount
        for key, records in by_line.items():
            firsts = set(records) - {"REVERSED", "PENDED"}
            assert len(firsts) <= 1, records
            if "PENDED" in records:
                assert key in self.reviewed or key[0] in self.corrected
            owed = sum((r.allowed_amount for r in records.values()), Decimal(0))
            if key[0] in in_force:
                assert "REVERSED" not in records and owed == latest[key].allowed_amount
                assert latest[key].status != "PENDED"
            else:
                assert "REVERSED" in records and owed == 0
            assert remitted[key] == owed, f"line {key}: remitted {remitted[key]}, owed {owed}"


def review(m: Model, claim_id: str, number: int, body: dict[str, Any], at: int) -> None:
    reviewed = m.ledger.review(claim_id, number, body, "pat", None, BOOKS, T0 + timedelta(seconds=at))
    assert reviewed.stored_now
    m.reviewed[(claim_id, number)] = body
    record = reviewed.record
    assert record.review is not None and record.review.action == body["action"]
    holds = {(c, n) for c, n, _ in m.ledger.units_used(AUTH)} | set(m.ledger.rows("paid_lines", "claim_id", "line_number"))
    if body["action"] == "DENY":  # a denial releases at once
        assert record.status == "DENIED" and (claim_id, number) not in holds
    else:
        assert record.status == "PAID" and (claim_id, number) in holds
    m.outbox.append(record)
    if reviewed.claim_final is not None:
        assert decided_claim(m.ledger, claim_id) is not None or claim_id in m.corrected
        m.remit(DecidedClaim(claim_id=claim_id, decisions=reviewed.claim_final))  # what the review API hands on
    else:
        assert any(d.status == "PENDED" for d in m.ledger.decisions_for(claim_id))


def check_sequence(ledger: Ledger, ops: list[tuple[str, Any, int]], closing_reviews: list[int]) -> None:
    m = Model(ledger)
    for index, (op, arg, target) in enumerate(ops):
        at = index + 1
        if op in ("original", "replace", "void"):
            objs = build(TEMPLATES, f"P{index}", op, arg, target, m.claims)
            original = objs[0].get("original_claim_id")
            claim_id = objs[0]["claim_id"]
            before = units_in_use(ledger) - sum((u for c, _, u in ledger.units_used(AUTH) if c == original), Decimal(0))
            m.sent += objs
            m.units.update({(o["claim_id"], o["line_number"]): Decimal(o["units"]) for o in objs})
            step: list[AdjudicatedLine] = []
            rejected = False
            for obj in objs:
                intake = accept(ledger, obj, float(index))
                m.publish(intake.decisions)
                if intake.assembled:
                    decided = decide(ledger, intake.assembled, T0 + timedelta(seconds=at))
                    step = decided.decisions if decided else []
                    rejected = bool(decided and decided.rejections)
                    m.publish(step)
            m.claims.append(claim_id)
            if rejected:
                continue
            m.decided.add(claim_id)
            if original is not None:
                m.corrected.add(original)
                if op == "void":
                    m.voids.add(claim_id)
            m.check_new_claim(claim_id, before, step)
            if not any(d.status == "PENDED" for d in step):  # the adjudicate stage hands it on
                m.remit(DecidedClaim(claim_id=claim_id, decisions=tuple(step)))
        elif op == "review":
            pends = ledger.open_pends(limit=10_000)
            if pends:
                p = pends[target % len(pends)]
                review(m, p["claim_id"], p["line_number"], REVIEWS[arg], at)
        elif op == "review_again":  # a decided, reversed or never pended line: nothing changes
            if not m.sent:
                continue
            obj = m.sent[target % len(m.sent)]
            key = (obj["claim_id"], obj["line_number"])
            state = dict(((c, n), s) for c, n, s in ledger.rows("pends", "claim_id", "line_number", "state")).get(key)
            if state == "OPEN":
                continue
            before_rows = snapshot(ledger)
            body = REVIEWS[arg]
            try:
                again = ledger.review(*key, body, "sam", None, BOOKS, T0 + timedelta(seconds=at))
            except ReviewNotFound:
                assert state is None
            except ReviewConflict as exc:
                assert state == "REVERSED" or m.reviewed[key] != body
                assert exc.current.status in ("PAID", "DENIED", "REVERSED")
            else:
                assert state == "DECIDED" and m.reviewed[key] == body and not again.stored_now
            assert snapshot(ledger) == before_rows
        elif op == "publish":  # the outbox drained: the finals reach the stream
            ledger.decision_outbox_sent(m.outbox)
            m.publish(m.outbox)
            m.outbox = []
        elif m.sent:
            before_rows = snapshot(ledger)
            if op == "redeliver":  # a line again at intake: its latest record
                obj = m.sent[target % len(m.sent)]
                intake = accept(ledger, obj, float(index))
                key = (obj["claim_id"], obj["line_number"])
                if obj["claim_id"] in m.decided:
                    latest = [d for d in intake.decisions if (d.claim_id, d.line_number) == key]
                    current = next((d for d in reversed(m.published) if (d.claim_id, d.line_number) == key), None)
                    stored = {d.line_number: d for d in ledger.decisions_for(obj["claim_id"])}[key[1]]
                    assert latest and latest[-1].status in (stored.status, "REVERSED")
                    assert current is None or current.status != "PENDED" or latest[-1].status != "PAID" or \
                        key in m.reviewed
                m.publish(intake.decisions)
            else:  # a whole claim again at the adjudicate stage: its stored records, the ledger unchanged
                claim_id = m.claims[target % len(m.claims)]
                lines = [ClaimLine.model_validate(o) for o in m.sent if o["claim_id"] == claim_id]
                decided = decide(ledger, lines, T0 + timedelta(seconds=at))
                step = decided.decisions if decided else []
                m.publish(step)
                if step and not decided.rejections and not any(d.status == "PENDED" for d in step):
                    m.remit(DecidedClaim(claim_id=claim_id, decisions=tuple(step)))
            assert snapshot(ledger) == before_rows, "a re-delivery changed the ledger"
        m.check_holds()
    # every pend left is decided, and the outbox drained: then every line is remitted as owed
    for i, choice in enumerate(closing_reviews):
        pends = ledger.open_pends(limit=10_000)
        if not pends:
            break
        review(m, pends[0]["claim_id"], pends[0]["line_number"], REVIEWS[choice], len(ops) + i + 1)
        m.check_holds()
    while pends := ledger.open_pends(limit=10_000):
        review(m, pends[0]["claim_id"], pends[0]["line_number"], REVIEWS[0], 10_000)
    ledger.decision_outbox_sent(m.outbox)
    m.publish(m.outbox)
    m.outbox = []
    m.check_holds()
    m.check_end()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, closing_reviews=closing)
def test_any_sequence_with_pends_and_reviews_sqlite(tmp_path_factory: pytest.TempPathFactory, ops, closing_reviews) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('review-prop') / 'ledger.db'}")
    try:
        check_sequence(ledger, ops, closing_reviews)
    finally:
        ledger.close()


@pytest.mark.postgres
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, closing_reviews=closing)
def test_any_sequence_with_pends_and_reviews_postgresql(postgres_url: str, ops, closing_reviews) -> None:
    schema = f"t_rev_{uuid.uuid4().hex[:12]}"  # each example starts from an empty ledger of its own
    ledger = Ledger(pg_schema_url(schema))
    try:
        check_sequence(ledger, ops, closing_reviews)
    finally:
        ledger.close()
        drop_pg_schema(schema)
