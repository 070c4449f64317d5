"""Corrections and voids (claim frequency 7 and 8) in the ledger, on SQLite and PostgreSQL:
the check of the original, reversal, release, the new claim's decisions, re-delivery, races,
and property tests over any sequence of originals, replacements, voids and re-deliveries."""

from __future__ import annotations

import threading
import time
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
from contract.models import AdjudicatedLine, ClaimLine
from contract.messages import DecidedBatch, DecidedClaim, decided_messages
from tests.harness import drop_pg_schema, pg_schema_url
from tests.ledger_harness import BOOKS, REF, T0, Store, accept, line, snapshot

MEMBER, AUTH, NPI = "M1004", "PA26-1004", "1245678903"  # PA26-1004: 6 approved units of 99601/99602/S5498
CEF = {"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"}


def nursing(claim_id: str, number: int = 1, count: int = 1, units: str = "2", day: str = "2026-02-02", **kw: Any) -> dict[str, Any]:
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": AUTH, "procedure_code": "99601",
                                            "units": units, "charge_amount": "500.00", "service_date": day, **kw})


def drug(claim_id: str, number: int = 1, count: int = 1, day: str = "2026-02-02", **kw: Any) -> dict[str, Any]:
    """A drug line PA26-1004 does not cover (denied 197) that still supports per diem that day."""
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": AUTH, "procedure_code": "J0696",
                                            "units": "8", "charge_amount": "60.00", "service_date": day, "drug": CEF, **kw})


def per_diem(claim_id: str, number: int = 1, count: int = 1, day: str = "2026-02-02", **kw: Any) -> dict[str, Any]:
    return line(claim_id, number, count, **{"member_id": MEMBER, "authorization_number": AUTH, "procedure_code": "S5498",
                                            "units": "1", "charge_amount": "40.00", "service_date": day, **kw})


def correcting(obj: dict[str, Any], claim_id: str, original: str, frequency: str = "7", **kw: Any) -> dict[str, Any]:
    return {**obj, "claim_id": claim_id, "claim_frequency": frequency, "original_claim_id": original, **kw}


def submit(ledger: Ledger, objs: list[dict[str, Any]], seconds: float = 0.0) -> Intake:
    """Accept lines; decide the claim they complete; everything published, in order."""
    out = Intake()
    for obj in objs:
        intake = accept(ledger, obj, seconds)
        out.decisions += intake.decisions
        out.rejections += intake.rejections
        if intake.assembled:
            decided = decide(ledger, intake.assembled)
            if decided is not None:
                out.decisions += decided.decisions
                out.rejections += decided.rejections
    return out


def decide(ledger: Ledger, lines: list[ClaimLine], now=T0) -> Intake | None:
    work = engine.price(engine.enrich(engine.start(lines, BOOKS, now), REF, BOOKS), REF)
    return ledger.decide(work, lambda history: engine.finalize(work, history, BOOKS, now))


def summary(records: list[AdjudicatedLine]) -> list[tuple]:
    return [(d.claim_id, d.line_number, d.status, str(d.allowed_amount), d.reversed_by, [a.carc for a in d.adjustments])
            for d in records]


def codes(intake: Intake) -> list[tuple]:
    return [(r.claim_id, r.line_number, r.reasons[0].code, r.reasons[0].field) for r in intake.rejections]


def units_in_use(ledger: Ledger) -> Decimal:
    return sum((u for _, _, u in ledger.units_used(AUTH)), Decimal(0))


# --- reversal, release, the new claim ---------------------------------------------------------------


def test_replacement_reverses_the_original_and_is_decided_after_the_release(ledger: Ledger) -> None:
    first = submit(ledger, [nursing("O", 1, 2, units="2"), drug("O", 2, 2)])
    assert summary(first.decisions) == [("O", 1, "PAID", "310.00", None, ["45"]), ("O", 2, "DENIED", "0.00", None, ["197"])]
    assert units_in_use(ledger) == 2
    before = {d.line_number: d for d in ledger.decisions_for("O")}
    # the same nursing line again would be a duplicate (18); as a replacement it is not
    out = submit(ledger, [correcting(nursing("R", 1, 1, units="3"), "R", "O")])
    assert out.rejections == []
    assert summary(out.decisions) == [
        ("O", 1, "REVERSED", "-310.00", "R", ["45"]),
        ("O", 2, "REVERSED", "0.00", "R", ["197"]),
        ("R", 1, "PAID", "465.00", None, ["45"]),
    ]
    reversed_1 = out.decisions[0]
    assert [a.amount for a in reversed_1.adjustments] == [Decimal("-190.00")]
    assert reversed_1.pricing == before[1].pricing and reversed_1.policy_version == before[1].policy_version
    # the original's decisions are never overwritten; units: only the replacement's 3
    assert ledger.decisions_for("O") == list(before.values())
    assert units_in_use(ledger) == 3 and [c for c, _, _ in ledger.units_used(AUTH)] == ["R"]


def test_void_reverses_and_establishes_nothing(ledger: Ledger) -> None:
    submit(ledger, [drug("O", 1, 2), nursing("O", 2, 2, units="4")])
    assert units_in_use(ledger) == 4
    # per diem is supported by O's drug line while O is in force
    assert summary(submit(ledger, [per_diem("P1")]).decisions)[0][2] == "PAID"
    out = submit(ledger, [correcting(drug("V", 1, 1), "V", "O", "8")])
    assert summary(out.decisions) == [
        ("O", 1, "REVERSED", "0.00", "V", ["197"]),
        ("O", 2, "REVERSED", "-500.00", "V", []),
        ("V", 1, "VOIDED", "0.00", None, []),
    ]
    voided = out.decisions[-1]
    assert voided.pricing is None and voided.ndc11 == "00143985810"
    assert units_in_use(ledger) == 1  # P1's per diem only: O's 4 units are available again
    # O's drug day no longer supports per diem, and the void's drug line supports none
    late = submit(ledger, [per_diem("P2", day="2026-02-02", modifiers=["U1"])])
    assert [a.carc for a in late.decisions[0].adjustments] == ["107"]
    # 6 units: 1 (P1) + 5 now fit again
    assert summary(submit(ledger, [nursing("N", units="5", day="2026-02-03")]).decisions)[0][2] == "PAID"


def test_replacement_of_a_replacement_and_void_of_the_latest(ledger: Ledger) -> None:
    submit(ledger, [nursing("A", units="1")])
    submit(ledger, [correcting(nursing("B", units="2"), "B", "A")])
    out = submit(ledger, [correcting(nursing("C", units="3"), "C", "B", "8")])
    assert summary(out.decisions) == [("B", 1, "REVERSED", "-310.00", "C", ["45"]), ("C", 1, "VOIDED", "0.00", None, [])]
    assert units_in_use(ledger) == 0


# --- the check of the original ---------------------------------------------------------------------


def test_original_not_found_already_replaced_mismatch(ledger: Ledger) -> None:
    submit(ledger, [nursing("A")])
    assert codes(submit(ledger, [correcting(nursing("X1"), "X1", "NOPE")])) == [("X1", 1, "ORIGINAL_NOT_FOUND", "original_claim_id")]
    # rejected at the front end (header mismatch), then named
    submit(ledger, [nursing("RJ", 1, 2), nursing("RJ", 2, 2, units="1", authorization_number=None)])
    assert codes(submit(ledger, [correcting(nursing("X2"), "X2", "RJ")]))[0][2] == "ORIGINAL_NOT_FOUND"
    # still incomplete (not decided)
    submit(ledger, [nursing("OPEN", 1, 2)])
    assert codes(submit(ledger, [correcting(nursing("X3"), "X3", "OPEN")]))[0][2] == "ORIGINAL_NOT_FOUND"
    # another provider, another member
    assert codes(submit(ledger, [correcting(nursing("X4", provider_npi="1987654328"), "X4", "A")]))[0][2] == "ORIGINAL_MISMATCH"
    other = correcting(nursing("X5", member_id="M1001", authorization_number="PA26-1001"), "X5", "A")
    assert codes(submit(ledger, [other]))[0][2] == "ORIGINAL_MISMATCH"
    # replaced once; then it cannot be corrected again, and its replacement can
    assert submit(ledger, [correcting(nursing("B"), "B", "A")]).rejections == []
    two_lines = [correcting(nursing("X6", 1, 2), "X6", "A", "8"), correcting(nursing("X6", 2, 2, day="2026-02-03"), "X6", "A", "8")]
    assert codes(submit(ledger, two_lines)) == [("X6", 1, "ORIGINAL_ALREADY_REPLACED", "original_claim_id"),
                                                ("X6", 2, "ORIGINAL_ALREADY_REPLACED", "original_claim_id")]
    # a void cannot be corrected, and a rejected correction is no original either
    submit(ledger, [correcting(nursing("V"), "V", "B", "8")])
    assert codes(submit(ledger, [correcting(nursing("X7"), "X7", "V")]))[0][2] == "ORIGINAL_NOT_FOUND"
    assert codes(submit(ledger, [correcting(nursing("X8"), "X8", "X1")]))[0][2] == "ORIGINAL_NOT_FOUND"
    assert units_in_use(ledger) == 0


def test_a_rejected_correction_changes_nothing_and_is_answered_again(ledger: Ledger) -> None:
    submit(ledger, [nursing("A")])
    bad = correcting(nursing("X", provider_npi="1987654328"), "X", "A")
    lines = accept(ledger, bad).assembled
    before = snapshot(ledger)
    first = decide(ledger, lines)
    assert codes(first) == [("X", 1, "ORIGINAL_MISMATCH", "original_claim_id")]
    assert first.rejections[0].original == bad
    after = snapshot(ledger)
    assert {t: v for t, v in after.items() if t not in ("claims", "claim_lines", "rejections")} == \
        {t: v for t, v in before.items() if t not in ("claims", "claim_lines", "rejections")}
    # the claim delivered again to the adjudicate stage (a crash before publishing), and the line
    again = decide(ledger, lines, T0 + timedelta(seconds=5))
    assert codes(again) == codes(first) and snapshot(ledger) == after
    assert codes(accept(ledger, bad)) == codes(first)
    assert snapshot(ledger) == after


# --- re-delivery and crashes ------------------------------------------------------------------------------


def test_redelivery_answers_with_the_latest_record_and_changes_nothing(ledger: Ledger) -> None:
    original = nursing("O", units="2")
    submit(ledger, [original])
    replacement = correcting(nursing("R", units="3"), "R", "O")
    lines = accept(ledger, replacement).assembled
    first = decide(ledger, lines)
    state = snapshot(ledger)
    # the replacement claim again at the adjudicate stage: its reversals and decisions again
    again = decide(ledger, lines, T0 + timedelta(seconds=9))
    assert summary(again.decisions) == summary(first.decisions)
    assert all(a.adjudicated_at == T0 + timedelta(seconds=9) for a in again.decisions)
    # either line again at intake: its latest record
    assert summary(accept(ledger, original).decisions) == [("O", 1, "REVERSED", "-310.00", "R", ["45"])]
    assert summary(accept(ledger, replacement).decisions) == [("R", 1, "PAID", "465.00", None, ["45"])]
    # the original claim again at the adjudicate stage (a crash before it was published):
    # its decision and its reversal, so a consumer never misses either
    assert summary(decide(ledger, [ClaimLine.model_validate(original)]).decisions) == [
        ("O", 1, "PAID", "310.00", None, ["45"]), ("O", 1, "REVERSED", "-310.00", "R", ["45"])]
    assert snapshot(ledger) == state


def test_a_crash_inside_the_correction_leaves_nothing_half_done(store: Store) -> None:
    ledger = store.ledger
    submit(ledger, [nursing("O", units="2")])
    before = snapshot(ledger)
    lines = accept(ledger, correcting(nursing("R", units="3"), "R", "O", "8")).assembled
    after_intake = snapshot(ledger)
    work = engine.price(engine.enrich(engine.start(lines, BOOKS, T0), REF, BOOKS), REF)

    def crash(history: engine.History) -> engine.Outcome:
        outcome = engine.finalize(work, history, BOOKS, T0)
        assert outcome.reversals  # the reversal was computed, the transaction dies before commit
        raise KeyboardInterrupt("kill -9")

    with pytest.raises(KeyboardInterrupt):
        ledger.decide(work, crash)
    ledger = store.reopen()
    assert snapshot(ledger) == after_intake != before
    out = decide(ledger, lines)
    assert [d.status for d in out.decisions] == ["REVERSED", "VOIDED"]
    assert units_in_use(ledger) == 0


def test_two_workers_racing_reverse_a_claim_once(store: Store) -> None:
    """Two corrections of one original decided at the same moment by two connections: the
    original's row (PostgreSQL) or the write lock (SQLite) lets one reverse it; the other
    finds it already replaced."""
    ledger = store.ledger
    other = Ledger(store.url)
    try:
        submit(ledger, [nursing("O")])
        works = []
        for claim_id in ("V1", "V2"):
            lines = accept(ledger, correcting(nursing(claim_id), claim_id, "O", "8")).assembled
            works.append(engine.price(engine.enrich(engine.start(lines, BOOKS, T0), REF, BOOKS), REF))
        results: dict[str, Intake] = {}

        def run(led: Ledger, work) -> None:
            def slow(history: engine.History) -> engine.Outcome:
                time.sleep(0.3)  # inside the transaction: the other worker comes in meanwhile
                return engine.finalize(work, history, BOOKS, T0)
            results[work.claim_id] = led.decide(work, slow)

        threads = [threading.Thread(target=run, args=(led, w)) for led, w in zip((ledger, other), works, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(tuple(d.status for d in r.decisions) or tuple(x.reasons[0].code for x in r.rejections)
                          for r in results.values())
        assert statuses == [("ORIGINAL_ALREADY_REPLACED",), ("REVERSED", "VOIDED")]
        assert ledger.count("reversals") == 1
    finally:
        other.close()


def test_decided_messages_stay_under_the_size_limit():
    """A restart's backlog (claims with their reversals) goes on in several messages, each
    under the limit, the claims in order and all of them."""
    claims = [DecidedClaim(claim_id=f"C{i:03d}", decisions=()) for i in range(50)]
    messages = decided_messages(claims, limit=200)
    assert len(messages) > 1 and all(len(m) <= 200 + 13 for m in messages)
    assert [c for m in messages for c in DecidedBatch.model_validate_json(m).claims] == claims
    assert decided_messages(claims) == [DecidedBatch(claims=tuple(claims)).model_dump_json().encode()]


# --- properties -----------------------------------------------------------------------------------------------

TEMPLATES = {
    "n1": lambda c, n, k, day: nursing(c, n, k, units="1", day=day),
    "n3": lambda c, n, k, day: nursing(c, n, k, units="3", day=day),
    "drug": lambda c, n, k, day: drug(c, n, k, day=day),
    "per_diem": lambda c, n, k, day: per_diem(c, n, k, day=day),
}
DAYS = ("2026-02-02", "2026-02-03")
claim_lines = st.lists(st.tuples(st.sampled_from(sorted(TEMPLATES)), st.sampled_from(DAYS)), min_size=1, max_size=3)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("original"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("replace"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("void"), claim_lines, st.integers(0, 20)),
        st.tuples(st.just("redeliver"), st.just([]), st.integers(0, 1000)),
        st.tuples(st.just("replay"), st.just([]), st.integers(0, 1000)),
    ),
    min_size=1, max_size=14,
)


def build(templates: dict[str, Any], claim_id: str, op: str, spec: list[tuple[str, str]], target: int,
          claims: list[str]) -> list[dict[str, Any]]:
    """The lines an operation of a property test sends: claim `claim_id` of `spec`'s (template,
    day) lines, as an original or as a replacement or void of the `target`th of `claims` (of a
    claim never sent where there is none)."""
    objs = [templates[t](claim_id, n, len(spec), day) for n, (t, day) in enumerate(spec, 1)]
    if op == "original":
        return objs
    original = claims[target % len(claims)] if claims and target < 18 else "UNKNOWN"
    return [correcting(o, claim_id, original, "7" if op == "replace" else "8") for o in objs]


def check_sequence(ledger: Ledger, ops: list[tuple[str, list, int]]) -> None:
    sent: list[dict[str, Any]] = []
    claims: list[str] = []
    published: list[AdjudicatedLine] = []
    paid_now: dict[str, tuple[str, int]] = {}  # fingerprints of lines PAID and in force
    # the model: which claims are decided, replaced, voids
    decided: set[str] = set()
    corrected: set[str] = set()
    voids: set[str] = set()
    for index, (op, spec, target) in enumerate(ops):
        if op in ("redeliver", "replay"):
            if not sent:
                continue
            before = snapshot(ledger)
            if op == "redeliver":  # a line again at intake
                out = submit(ledger, [sent[target % len(sent)]], float(index))
            else:  # a whole claim again at the adjudicate stage (a crash before its records were published)
                claim_id = claims[target % len(claims)]
                lines = [ClaimLine.model_validate(o) for o in sent if o["claim_id"] == claim_id]
                out = decide(ledger, lines, T0 + timedelta(seconds=index)) or Intake()
                if claim_id in decided:  # every record it ever had, again: its decision and any reversal
                    mine = {(d.claim_id, d.line_number, d.status) for d in published if d.claim_id == claim_id}
                    assert mine <= {(d.claim_id, d.line_number, d.status) for d in out.decisions}
            assert snapshot(ledger) == before, "a re-delivery changed the ledger"
        else:
            objs = build(TEMPLATES, f"K{index}", op, spec, target, claims)
            original = objs[0].get("original_claim_id")
            expected = None
            if original is not None:
                expected = ("ORIGINAL_NOT_FOUND" if original not in decided or original in voids
                            else "ORIGINAL_ALREADY_REPLACED" if original in corrected else None)
            sent += objs
            out = submit(ledger, objs, float(index))
            claim_id = objs[0]["claim_id"]
            claims.append(claim_id)
            if expected is not None:
                assert {r.reasons[0].code for r in out.rejections} == {expected}
                continue
            assert out.rejections == []
            decided.add(claim_id)
            if original is not None:
                corrected.add(original)
                if op == "void":
                    voids.add(claim_id)
        for d in out.decisions:
            fingerprint = f"{d.member_id}|{d.provider_npi}|{d.service_date}|{d.procedure_code}|" \
                          f"{','.join(sorted(set(d.modifiers)))}|{d.ndc11 or ''}"
            new = (d.claim_id, d.line_number, d.status) not in {(p.claim_id, p.line_number, p.status) for p in published}
            published.append(d)
            if not new:  # a repeat is the stored record: decisions given are not revisited
                continue
            if d.status == "PAID":
                paid_now[fingerprint] = (d.claim_id, d.line_number)
            elif d.status == "REVERSED" and paid_now.get(fingerprint) == (d.claim_id, d.line_number):
                del paid_now[fingerprint]
            elif d.status == "DENIED" and any(a.carc == "18" for a in d.adjustments):
                assert fingerprint in paid_now, "denied as a duplicate of a line that is not paid and in force"

    # each line: one record per status, repeats identical but for the time, adding up to what is owed now
    by_line: dict[tuple[str, int], dict[str, AdjudicatedLine]] = defaultdict(dict)
    for d in published:
        seen = by_line[(d.claim_id, d.line_number)].setdefault(d.status, d)
        assert seen.model_dump(exclude={"adjudicated_at"}) == d.model_dump(exclude={"adjudicated_at"})
    in_force = decided - corrected
    for (claim_id, _), records in by_line.items():
        firsts = set(records) - {"REVERSED"}
        assert len(firsts) == 1
        total = sum((r.allowed_amount for r in records.values()), Decimal(0))
        if claim_id in in_force:
            assert "REVERSED" not in records
            assert total == next(iter(records.values())).allowed_amount
        else:
            assert "REVERSED" in records and total == 0
            decision = records[firsts.pop()]
            assert sum((a.amount for a in decision.adjustments), Decimal(0)) == \
                -sum((a.amount for a in records["REVERSED"].adjustments), Decimal(0))
    # authorized units in use are those of the PAID lines of the claims in force
    units = {(o["claim_id"], o["line_number"]): Decimal(o["units"]) for o in sent}
    owed = sum((units[k] for k, recs in by_line.items() if k[0] in in_force and "PAID" in recs), Decimal(0))
    assert units_in_use(ledger) == owed
    paid_rows = set(ledger.rows("paid_lines", "claim_id", "line_number"))
    assert paid_rows == {k for k, recs in by_line.items() if k[0] in in_force and "PAID" in recs}
    assert set(paid_now.values()) == paid_rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_of_corrections_sqlite(tmp_path_factory: pytest.TempPathFactory, ops) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'ledger.db'}")
    try:
        check_sequence(ledger, ops)
    finally:
        ledger.close()


@pytest.mark.postgres
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_of_corrections_postgresql(postgres_url: str, ops) -> None:
    schema = f"t_corr_{uuid.uuid4().hex[:12]}"  # each example starts from an empty ledger of its own
    ledger = Ledger(pg_schema_url(schema))
    try:
        check_sequence(ledger, ops)
    finally:
        ledger.close()
        drop_pg_schema(schema)
