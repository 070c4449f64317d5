"""The ledger on both backends: SQLite (a temporary file) and PostgreSQL (a schema per test).

PostgreSQL is the test session's own throwaway server (tests/pgserver.py), or the one
$CLAIMS_TEST_POSTGRES names; an empty $CLAIMS_TEST_POSTGRES skips those cases
(fails them in CI).
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rules import engine
from streams.tools.demo import timeless
from streams.ledger.store import Intake, Ledger
from contract.models import ClaimLine
from streams.pipeline.batch import run_batch
from tests.ledger_harness import BOOKS, REF, ROOT, SAMPLE, T0, Store, accept, accept_all, at, decide, line, rejection_codes, same_but_time, snapshot

# --- assembly ---------------------------------------------------------------------------------


def test_assembly_across_interleaved_lines(ledger: Ledger) -> None:
    a = [line("A", n, 3, service_date="2026-01-05") for n in (1, 2, 3)]
    a[2].update(procedure_code="99601", charge_amount="180.00")
    b = [line("B", n, 2, service_date="2026-01-06") for n in (1, 2)]
    assert accept(ledger, a[2]).assembled is None
    assert accept(ledger, b[1]).assembled is None
    assert accept(ledger, a[0]).assembled is None
    done_b = accept(ledger, b[0])
    assert [ln.key for ln in done_b.assembled] == [("B", 1), ("B", 2)]
    assert ledger.open_claims() == 1
    done_a = accept(ledger, a[1])
    assert [ln.key for ln in done_a.assembled] == [("A", 1), ("A", 2), ("A", 3)]
    assert done_a.decisions == [] and done_a.rejections == []
    assert ledger.open_claims() == 0
    decided = decide(ledger, done_a.assembled)
    assert [d.status for d in decided] == ["PAID", "PAID", "PAID"]
    assert [d.line_number for d in ledger.decisions_for("A")] == [1, 2, 3]


def test_one_line_claim_assembles_at_once(ledger: Ledger) -> None:
    intake = accept(ledger, line("S", 1, 1))
    assert [ln.key for ln in intake.assembled] == [("S", 1)]


def test_identical_repeat_is_answered_when_its_claim_is_decided(ledger: Ledger) -> None:
    """CONTRACT.md: a line sent twice while its claim is assembled is answered twice."""
    first = line("R", 1, 2)
    assert accept(ledger, first) == Intake()
    assert accept(ledger, dict(first)) == Intake()
    assert accept(ledger, json.loads(json.dumps(first))) == Intake()
    assert ledger.open_claims() == 1
    done = accept(ledger, line("R", 2, 2))
    assert [ln.key for ln in done.assembled] == [("R", 1), ("R", 2)]
    decisions = decide(ledger, done.assembled)
    assert [(d.claim_id, d.line_number) for d in decisions] == [("R", 1)] * 3 + [("R", 2)]
    assert decisions[0] == decisions[1] == decisions[2]


def test_a_redelivered_message_is_not_a_repeat(ledger: Ledger) -> None:
    """The same input message (partition, offset) read again after a crash is answered once."""
    first = line("Q", 1, 2)
    for _ in range(2):
        assert ledger.accept(ClaimLine.model_validate(first), first, at(0), 0, 10) == Intake()
    assert ledger.accept(ClaimLine.model_validate(first), first, at(0), 0, 11) == Intake()  # a new message: a repeat
    done = ledger.accept(ClaimLine.model_validate(line("Q", 2, 2)), line("Q", 2, 2), at(1), 0, 12)
    assert [(d.line_number) for d in decide(ledger, done.assembled)] == [1, 1, 2]


def test_redelivered_last_line_after_assembly_reforwards_the_claim(ledger: Ledger) -> None:
    """A crash after the claim was assembled but before it was forwarded: its last line comes
    again (same offset) and forwards it again; deciding it again changes nothing."""
    ledger.accept(ClaimLine.model_validate(line("F", 1, 2)), line("F", 1, 2), at(0), 0, 20)
    done = ledger.accept(ClaimLine.model_validate(line("F", 2, 2)), line("F", 2, 2), at(0), 0, 21)
    again = ledger.accept(ClaimLine.model_validate(line("F", 2, 2)), line("F", 2, 2), at(0), 0, 21)
    assert again.assembled == done.assembled and again.rejections == []
    first = decide(ledger, done.assembled)
    before = snapshot(ledger)
    second = decide(ledger, again.assembled, T0 + timedelta(seconds=1))
    assert all(same_but_time(a, b) for a, b in zip(first, second, strict=True))
    assert snapshot(ledger) == before


def test_a_decided_claim_is_answered_again_only_by_the_message_that_decided_it(ledger: Ledger) -> None:
    """Issue 12: a copy of a decided claim forwarded again by an earlier stage's replay (another
    message) gets nothing; the deciding message's own re-delivery gets the decisions again."""
    done = ledger.accept(ClaimLine.model_validate(line("H", 1, 1)), line("H", 1, 1), at(0), 0, 30)
    first = decide(ledger, done.assembled, source=(2, 7))
    assert [d.line_number for d in decide(ledger, done.assembled, source=(2, 9))] == []
    assert all(same_but_time(a, b) for a, b in zip(first, decide(ledger, done.assembled, source=(2, 7)), strict=True))


def test_redelivery_of_the_message_that_rejected_a_claim_answers_its_other_lines_again(ledger: Ledger) -> None:
    """A line of another member (another partition) waits; the next line rejects the claim and
    answers for both. A crash before that was published re-delivers only the rejecting
    message: it must answer for the waiting line too (it was lost once, issue 12)."""
    other = line("M", 3, 3, member_id="SOMEONE-ELSE")
    ledger.accept(ClaimLine.model_validate(other), other, at(0), 1, 5)
    first = ledger.accept(ClaimLine.model_validate(line("M", 1, 3)), line("M", 1, 3), at(0), 0, 40)
    again = ledger.accept(ClaimLine.model_validate(line("M", 1, 3)), line("M", 1, 3), at(1), 0, 40)
    resent = ledger.accept(ClaimLine.model_validate(line("M", 1, 3)), line("M", 1, 3), at(1), 0, 41)
    assert sorted(r.line_number for r in first.rejections) == sorted(r.line_number for r in again.rejections) == [1, 3]
    assert [r.line_number for r in resent.rejections] == [1]


def test_redelivery_of_a_waiting_line_of_a_rejected_claim_answers_nothing(ledger: Ledger) -> None:
    """After a crash both messages come again: the waiting line's own message and the one that
    rejected the claim. The rejecting message answers for the waiting line; the waiting line's
    message must not answer it a second time (a repeat exactly_once let through, issue 12)."""
    other = line("W", 3, 3, member_id="SOMEONE-ELSE")
    assert ledger.accept(ClaimLine.model_validate(other), other, at(0), 1, 5) == Intake()
    first = ledger.accept(ClaimLine.model_validate(line("W", 1, 3)), line("W", 1, 3), at(0), 0, 40)
    assert sorted(r.line_number for r in first.rejections) == [1, 3]
    assert ledger.accept(ClaimLine.model_validate(other), other, at(1), 1, 5) == Intake()
    again = ledger.accept(ClaimLine.model_validate(line("W", 1, 3)), line("W", 1, 3), at(1), 0, 40)
    assert sorted(r.line_number for r in again.rejections) == [1, 3]
    resent = ledger.accept(ClaimLine.model_validate(other), other, at(1), 1, 6)  # the client sends it again
    assert [r.line_number for r in resent.rejections] == [3]


def test_redelivery_of_the_rejecting_message_does_not_answer_lines_that_came_later(ledger: Ledger) -> None:
    """An invalid first line rejects the claim; the other lines come later, each answered by its
    own message. A crash re-delivers all of them (same partition, in order): the rejecting
    message answers its own line again, each later message its own line, once each (CI found
    the later lines answered twice under exactly_once)."""
    from rules.frontend import known_key, validate

    bad = line("L", 1, 3, provider_npi="1245678904")
    first = ledger.reject_invalid(known_key(bad), bad, validate(bad), at(0), (0, 40))
    later = [ledger.accept(ClaimLine.model_validate(line("L", n, 3)), line("L", n, 3), at(0), 0, 40 + n) for n in (2, 3)]
    assert [r.line_number for r in first.rejections] == [1]
    assert [[r.line_number for r in out.rejections] for out in later] == [[2], [3]]
    again = ledger.reject_invalid(known_key(bad), bad, validate(bad), at(1), (0, 40))
    later_again = [ledger.accept(ClaimLine.model_validate(line("L", n, 3)), line("L", n, 3), at(1), 0, 40 + n) for n in (2, 3)]
    assert [r.line_number for r in again.rejections] == [1]
    assert [[r.line_number for r in out.rejections] for out in later_again] == [[2], [3]]


def test_redelivery_of_the_rejecting_message_answers_repeats_as_often_as_before(ledger: Ledger) -> None:
    """A waiting line sent twice is answered twice by the message that rejects the claim, and
    twice again by that message's re-delivery."""
    ledger.accept(ClaimLine.model_validate(line("R", 1, 3)), line("R", 1, 3), at(0), 0, 1)
    ledger.accept(ClaimLine.model_validate(line("R", 1, 3)), line("R", 1, 3), at(0), 0, 2)
    other = line("R", 2, 3, member_id="SOMEONE-ELSE")
    first = ledger.accept(ClaimLine.model_validate(other), other, at(0), 0, 3)
    again = ledger.accept(ClaimLine.model_validate(other), other, at(1), 0, 3)
    assert [r.line_number for r in first.rejections] == [r.line_number for r in again.rejections] == [1, 1, 2]


def test_repeat_after_assembly_is_answered_once_not_the_whole_claim(ledger: Ledger) -> None:
    """A line sent again while its claim is assembled but not yet decided (the stream): one
    more answer for that line when the claim is decided, not its whole claim forwarded again."""
    accept(ledger, line("G", 1, 2))
    done = accept(ledger, line("G", 2, 2))
    assert accept(ledger, line("G", 2, 2)) == Intake()
    assert [d.line_number for d in decide(ledger, done.assembled)] == [1, 2, 2]


def test_repeats_of_a_rejected_claim_are_rejected_too(ledger: Ledger) -> None:
    accept(ledger, line("H", 1, 3))
    accept(ledger, line("H", 1, 3))
    out = accept(ledger, line("H", 2, 3, member_id="M1002"))
    assert [(r.line_number, r.reasons[0].code) for r in out.rejections] == [
        (1, "HEADER_MISMATCH"), (1, "HEADER_MISMATCH"), (2, "HEADER_MISMATCH")]


def test_repeat_with_unknown_fields_only_is_identical(ledger: Ledger) -> None:
    accept(ledger, line("U", 1, 2))
    assert accept(ledger, line("U", 1, 2, place_of_service="12")) == Intake()


def test_different_content_same_line_number_rejects_the_claim(ledger: Ledger) -> None:
    accept(ledger, line("D", 1, 3))
    accept(ledger, line("D", 3, 3, procedure_code="99601"))
    out = accept(ledger, line("D", 1, 3, charge_amount="175.00"))
    assert rejection_codes(out) == [
        ("D", 1, "DUPLICATE_LINE_NUMBER", "line_number"),
        ("D", 3, "DUPLICATE_LINE_NUMBER", "line_number"),
        ("D", 1, "DUPLICATE_LINE_NUMBER", "line_number"),
    ]
    assert out.rejections[2].original["charge_amount"] == "175.00"
    assert out.assembled is None and ledger.open_claims() == 0
    # a late line of the rejected claim is rejected too, with the claim's reason
    late = accept(ledger, line("D", 2, 3))
    assert rejection_codes(late) == [("D", 2, "DUPLICATE_LINE_NUMBER", "line_number")]


def test_header_mismatch_rejects_every_line(ledger: Ledger) -> None:
    accept(ledger, line("H", 1, 3))
    accept(ledger, line("H", 2, 3))
    out = accept(ledger, line("H", 3, 3, procedure_code="99601", diagnosis_codes=["M86.171", "E11.9"],
                              authorization_number="PA26-9999"))
    got = rejection_codes(out)
    assert [(c, n, code) for c, n, code, _ in got] == [("H", 1, "HEADER_MISMATCH"), ("H", 2, "HEADER_MISMATCH"),
                                                        ("H", 3, "HEADER_MISMATCH")]
    assert set(got[0][3].split(",")) == {"authorization_number", "diagnosis_codes"}
    assert "diagnosis_codes" in out.rejections[0].reasons[0].message
    assert [r.original["line_number"] for r in out.rejections] == [1, 2, 3]
    assert ledger.decisions_for("H") == []
    # the waiting lines are gone: a re-delivery is answered with its stored rejection
    again = accept(ledger, line("H", 1, 3))
    assert rejection_codes(again) == [("H", 1, "HEADER_MISMATCH", got[0][3])]
    assert again.rejections[0].rejected_at == T0
    # a late line (here a fourth, announced by a new line_count) is rejected with the claim's reason
    late = accept(ledger, line("H", 4, 4))
    assert rejection_codes(late) == [("H", 4, "HEADER_MISMATCH", got[0][3])]
    assert ledger.open_claims() == 0

@pytest.mark.parametrize(("field", "value"), [
    ("form", "837P"), ("member_id", "M1003"), ("provider_npi", "1987654328"), ("line_count", 3), ("authorization_number", None),
])
def test_each_header_field_is_compared(ledger: Ledger, field: str, value: Any) -> None:
    accept(ledger, line("HF", 1, 2))
    obj = line("HF", 2, 2, **{field: value})
    out = accept(ledger, obj)
    assert [(n, code, fld) for _, n, code, fld in rejection_codes(out)] == [(1, "HEADER_MISMATCH", field), (2, "HEADER_MISMATCH", field)]


# --- decisions and re-delivery ------------------------------------------------------------------


def test_redelivery_after_decision_returns_stored_decision_without_state_change(store: Store) -> None:
    ledger = store.ledger
    decisions = accept_all(ledger, [line("RD", 1, 2), line("RD", 2, 2)])
    before = snapshot(ledger)
    later = T0 + timedelta(hours=5)
    again = ledger.accept(ClaimLine.model_validate(line("RD", 2, 2)), line("RD", 2, 2), later)
    assert again.assembled is None and again.rejections == []
    assert len(again.decisions) == 1 and same_but_time(again.decisions[0], decisions[1])
    assert again.decisions[0].adjudicated_at == later
    # a re-delivery with changed content is still the stored decision (keyed by claim and line)
    changed = accept(ledger, line("RD", 1, 2, charge_amount="1.00"))
    assert same_but_time(changed.decisions[0], decisions[0])
    # and so is re-deciding the claim (a replayed assembled message)
    lines = [ClaimLine.model_validate(line("RD", n, 2)) for n in (1, 2)]
    replay = decide(ledger, lines, later)
    assert all(same_but_time(a, b) for a, b in zip(replay, decisions, strict=True))
    assert snapshot(ledger) == before
    # also after a restart
    ledger = store.reopen()
    assert same_but_time(accept(ledger, line("RD", 1, 2)).decisions[0], decisions[0])
    assert snapshot(ledger) == before


def test_units_never_counted_twice(store: Store) -> None:
    ledger = store.ledger
    nurse = lambda cid, n, count, code, units, day: line(  # noqa: E731
        cid, n, count, member_id="M1004", provider_npi="1456789019", authorization_number="PA26-1004",
        diagnosis_codes=["Z45.2"], procedure_code=code, units=units, charge_amount="145.00", service_date=day, drug=None)
    first = [nurse("N1", 1, 2, "99601", "1", "2026-01-12"), nurse("N1", 2, 2, "99602", "2", "2026-01-12")]
    accept_all(ledger, first)
    assert sum(u for _, _, u in ledger.units_used("PA26-1004")) == 3
    # re-delivered lines, a replayed decision, a restart: still 3
    accept_all(ledger, first + first)
    decide(ledger, [ClaimLine.model_validate(o) for o in first])
    ledger = store.reopen()
    accept_all(ledger, first)
    assert ledger.units_used("PA26-1004") == [("N1", 1, Decimal(1)), ("N1", 2, Decimal(2))]
    # the next claims consume what is left (6 approved), then 198
    d2 = accept_all(ledger, [nurse("N2", 1, 2, "99601", "1", "2026-01-19"), nurse("N2", 2, 2, "99602", "2", "2026-01-19")])
    assert [d.status for d in d2] == ["PAID", "PAID"]
    d3 = accept_all(ledger, [nurse("N3", 1, 2, "99601", "1", "2026-01-26"), nurse("N3", 2, 2, "99602", "1", "2026-01-26")])
    assert [d.status for d in d3] == ["DENIED", "DENIED"]
    assert {a.carc for d in d3 for a in d.adjustments} == {"198"}
    assert sum(u for _, _, u in ledger.units_used("PA26-1004")) == 6


def test_cross_claim_state_duplicates_and_drug_days(ledger: Ledger) -> None:
    # a drug line on one claim supports the per diem on a later claim of the member
    d1 = accept_all(ledger, [line("X1", 1, 1, procedure_code="J0696", units="8", charge_amount="60.00",
                                  drug={"ndc": "00143985810", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"})])
    assert d1[0].status == "PAID"
    d2 = accept_all(ledger, [line("X2", 1, 1)])
    assert d2[0].status == "PAID"
    # the same drug line on a new claim is an exact duplicate
    d3 = accept_all(ledger, [line("X3", 1, 1, form="837P", procedure_code="J0696", units="8", charge_amount="60.00",
                                  drug={"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"})])
    assert [a.carc for a in d3[0].adjustments] == ["18"]


def test_a_changed_line_after_assembly_gets_the_claims_decisions(ledger: Ledger) -> None:
    """A complete claim is closed to changes, decided or not yet: a line number it has is
    answered with that line's decision (as batch mode, where it is already decided), once."""
    accept(ledger, line("Z", 1, 2))
    done = accept(ledger, line("Z", 2, 2))
    out = accept(ledger, line("Z", 1, 2, charge_amount="1.00"))
    assert out == Intake()
    decided = decide(ledger, done.assembled)
    assert decided is not None and [d.line_number for d in decided] == [1, 1, 2]
    again = accept(ledger, line("Z", 1, 2, charge_amount="1.00"))
    assert again.rejections == [] and same_but_time(again.decisions[0], decided[0])


def test_decide_returns_none_for_a_claim_rejected_before_it_is_decided(ledger: Ledger) -> None:
    from rules.frontend import known_key

    accept(ledger, line("Z2", 1, 2))
    done = accept(ledger, line("Z2", 2, 2))
    with ledger.transaction() as q:  # another worker rejected the claim meanwhile
        q("UPDATE claims SET status = 'REJECTED' WHERE claim_id = ?", "Z2")
    assert known_key(line("Z2", 1, 2)) == ("Z2", 1)
    assert decide(ledger, done.assembled) is None
    assert ledger.decisions_for("Z2") == []


def test_a_claim_rejected_while_it_is_being_decided_is_not_also_decided(store: Store) -> None:
    """A conflicting line arriving (on another worker) during the decision waits for it."""
    import threading

    ledger = store.ledger
    other = Ledger(store.url)
    try:
        accept(ledger, line("RC", 1, 2))
        done = accept(ledger, line("RC", 2, 2))
        results: list[Intake] = []

        def conflicting_line() -> None:
            results.append(accept(other, line("RC", 1, 2, charge_amount="1.00")))

        thread = threading.Thread(target=conflicting_line)
        work = engine.price(engine.enrich(engine.start(done.assembled, BOOKS, T0), REF, BOOKS), REF)

        def run(history: engine.History) -> engine.Outcome:
            thread.start()
            thread.join(0.5)  # it must wait for this transaction (claim row / write lock)
            return engine.finalize(work, history, BOOKS, T0)

        decided = ledger.decide(work, run).decisions
        thread.join(30)
        assert not thread.is_alive()
        assert decided is not None and len(decided) == 2
        # the late line is answered with the stored decision; nothing was rejected
        assert results[0].rejections == [] and same_but_time(results[0].decisions[0], decided[0])
        assert [r for r in ledger.rows("rejections", "claim_id") if r[0] == "RC"] == []
    finally:
        other.close()


# --- rejections -------------------------------------------------------------------------------------


def test_invalid_line_rejects_its_claim(ledger: Ledger) -> None:
    from rules.frontend import known_key, validate

    accept(ledger, line("I", 1, 3))
    accept(ledger, line("I", 3, 3, procedure_code="99601"))
    bad = line("I", 2, 3, provider_npi="1245678904")
    reasons = validate(bad)
    out = ledger.reject_invalid(known_key(bad), bad, reasons, T0)
    assert rejection_codes(out) == [("I", 1, "CLAIM_REJECTED", "line_number"), ("I", 3, "CLAIM_REJECTED", "line_number"),
                                    ("I", 2, "NPI", "provider_npi")]
    # re-delivery of the invalid line: its stored rejection; a late valid line: CLAIM_REJECTED
    again = ledger.reject_invalid(known_key(bad), bad, reasons, T0 + timedelta(minutes=1))
    assert rejection_codes(again) == [("I", 2, "NPI", "provider_npi")]
    assert rejection_codes(accept(ledger, line("I", 2, 3))) == [("I", 2, "NPI", "provider_npi")]
    assert rejection_codes(accept(ledger, line("I", 1, 3))) == [("I", 1, "CLAIM_REJECTED", "line_number")]
    # a line the claim never had before is rejected with the claim's reason
    late = accept(ledger, line("I", 4, 4))
    assert rejection_codes(late) == [("I", 4, "CLAIM_REJECTED", "line_number")]
    assert "line 2" in late.rejections[0].reasons[0].message


def test_invalid_line_without_claim_id_touches_nothing(ledger: Ledger) -> None:
    accept(ledger, line("K", 1, 2))
    out = ledger.reject_invalid((None, None), {"what": "ever"}, [], T0)
    assert len(out.rejections) == 1 and out.rejections[0].claim_id is None
    assert ledger.open_claims() == 1


def test_invalid_line_for_a_decided_claim_leaves_it_decided(ledger: Ledger) -> None:
    decisions = accept_all(ledger, [line("V", 1, 2), line("V", 2, 2)])
    out = ledger.reject_invalid(("V", 3), line("V", 3, 2), [], T0)
    assert [(r.claim_id, r.line_number) for r in out.rejections] == [("V", 3)]
    assert all(same_but_time(a, b) for a, b in zip(ledger.decisions_for("V"), decisions, strict=True))


def test_late_line_for_decided_claim_is_closed(ledger: Ledger) -> None:
    accept_all(ledger, [line("LD", 1, 2), line("LD", 2, 2)])
    out = accept(ledger, line("LD", 3, 3, procedure_code="S5498", charge_amount="25.00"))
    assert rejection_codes(out) == [("LD", 3, "CLAIM_CLOSED", "claim_id")]
    assert len(ledger.decisions_for("LD")) == 2


def test_new_line_for_an_assembled_claim_is_closed(ledger: Ledger) -> None:
    accept(ledger, line("AS", 1, 2))
    accept(ledger, line("AS", 2, 2))
    out = accept(ledger, line("AS", 3, 3))
    assert rejection_codes(out) == [("AS", 3, "CLAIM_CLOSED", "claim_id")]


def test_expiry_rejects_incomplete_claims_line_by_line(store: Store) -> None:
    ledger = store.ledger
    accept(ledger, line("E1", 1, 3), 100.0)
    accept(ledger, line("E1", 3, 3, procedure_code="99601"), 150.0)
    accept(ledger, line("E2", 1, 2), 200.0)  # newer than the cutoff
    accept_all(ledger, [line("E3", 1, 1, service_date="2026-01-07")])  # complete and decided
    cutoff = at(180.0).timestamp()
    out = ledger.expire(cutoff=cutoff, now=T0)
    assert [(r.claim_id, r.line_number, r.reasons[0].code, r.reasons[0].field) for r in out] == [
        ("E1", 1, "INCOMPLETE", "line_count"), ("E1", 3, "INCOMPLETE", "line_count")]
    assert "2 of 3" in out[0].reasons[0].message
    assert out[0].original == line("E1", 1, 3)
    assert ledger.open_claims() == 1
    assert ledger.expire(cutoff=cutoff, now=T0) == []  # once only
    # no input message stands behind these: they wait in the outbox until published
    assert [(r.claim_id, r.line_number) for r in ledger.outbox()] == [("E1", 1), ("E1", 3)]
    ledger.outbox_sent(ledger.outbox())
    assert ledger.outbox() == []
    ledger = store.reopen()
    late = accept(ledger, line("E1", 2, 3))
    assert rejection_codes(late) == [("E1", 2, "INCOMPLETE", "line_count")]
    assert rejection_codes(accept(ledger, line("E1", 1, 3))) == [("E1", 1, "INCOMPLETE", "line_count")]
    rest = ledger.expire(cutoff=float("inf"), now=T0)
    assert [(r.claim_id, r.line_number) for r in rest] == [("E2", 1)]
    assert len(ledger.decisions_for("E3")) == 1


def test_batch_over_sample_data_matches_golden(ledger: Ledger) -> None:
    """Both backends give the reviewed decisions for the whole sample, line for line."""
    raw = [ln for ln in (SAMPLE / "claims.jsonl").read_bytes().splitlines() if ln.strip()]
    records = [timeless(r) for r in run_batch(raw, REF, BOOKS, ledger)]
    golden = [json.loads(x) for x in (ROOT / "tests" / "golden" / "sample_decisions.jsonl").read_text().splitlines()]
    assert records == golden


def _open_ledger(url: str, answers: Any) -> None:
    try:
        Ledger(url).close()
        answers.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        answers.put(str(exc))


def test_workers_opening_a_new_sqlite_file_at_once_all_start(tmp_path: Path) -> None:
    """Two workers started together on a new ledger file both switch it to WAL; without the
    writers' turn SQLite answered one of them "database is locked" at once (about 1 start in
    40 with three processes), and that worker died at start."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(40):
        answers = ctx.Queue()
        url = f"sqlite:///{tmp_path / f'ledger-{attempt}.db'}"
        procs = [ctx.Process(target=_open_ledger, args=(url, answers)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        assert [answers.get(timeout=5) for _ in procs] == ["ok"] * 3, f"attempt {attempt}"
