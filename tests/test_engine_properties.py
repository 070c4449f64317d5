"""Properties of the decision engine over generated claims (hypothesis).

The claims are drawn against the sample reference data, so they hit known and unknown
members, every authorization status, contracts and no contract, catalog NDCs in every printed
shape, malformed and unknown NDCs, and the modifiers the claim-day edits look at.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine import History, Outcome, decide
from rules.rulebook import default_rulebooks
from contract.models import AdjudicatedLine, ClaimLine
from streams.pipeline.batch import load_reference_dir

ROOT = Path(__file__).resolve().parents[1]
REF = load_reference_dir(ROOT / "streams" / "sample_data" / "reference")
BOOKS = default_rulebooks()
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
LATER = datetime(2026, 7, 1, tzinfo=timezone.utc)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DAYS = [date(2026, 2, 2), date(2026, 2, 3), date(2026, 3, 2)]
CODES = ["S9500", "S9374", "S9490", "S9365", "S5498", "99601", "99602", "J0696", "J1100", "J7192",
         "J2543", "B4185", "B4189", "S9502"]
MODIFIERS = ["SH", "SJ", "KP", "KQ", "JW", "U1"]
NDCS = ["0143-9858-10", "00143985810", "25021-105-10", "60505-0773-4", "68516-4601-2", "00944294110",
        "63323-516-30", "00409-6509-01", "12345-6789-01", "1234567890", "", None]
MEMBERS_AUTHS = [("M1001", "PA26-1001"), ("M1003", "PA26-1003"), ("M1004", "PA26-1004"), ("M2001", "PA26-2001"),
                 ("M1005", "PA26-1005"), ("M1001", "PA26-5002"), ("M1001", None), ("M9999", "PA26-1001"),
                 ("M3001", "PA26-3001"), ("M1006", "PA26-1006")]
NPIS = ["1245678903", "1987654328", "1456789019"]
DX = [["M86.171"], ["K50.90"], ["E43"], ["D66", "K21.9"]]

money = st.decimals(min_value=Decimal("0"), max_value=Decimal("5000"), places=2, allow_nan=False, allow_infinity=False)
units = st.sampled_from(["1", "2", "0.5", "1.0", "3", "1000", "7.5"])
quantity = st.sampled_from(["1", "2", "0.5", "2.5", "1000", "0.125", "3.333"])
# strategies built once (building them inside a composite on every draw is slow)
ndc_s = st.sampled_from(NDCS)
maybe_quantity = st.one_of(st.none(), quantity)
unit_s = st.sampled_from(["UN", "ML", "F2", "GR", None])
dosage_s = st.sampled_from(["2 g", None])
frequency_s = st.sampled_from(["q24h", None])
member_auth_s = st.sampled_from(MEMBERS_AUTHS)
form_s = st.sampled_from(["CMS-1500", "837P"])
npi_s = st.sampled_from(NPIS)
dx_s = st.sampled_from(DX)
count_s = st.integers(1, 6)
day_s = st.sampled_from(DAYS)
code_s = st.sampled_from(CODES)
mods_s = st.lists(st.sampled_from(MODIFIERS), max_size=2, unique=True)
used_s = st.dictionaries(st.sampled_from(["PA26-1001", "PA26-1004", "PA26-1006"]),
                         st.sampled_from([Decimal(0), Decimal(3), Decimal(6), Decimal(99)]), max_size=2)
days_s = st.lists(day_s, max_size=2)


@st.composite
def drugs(draw) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    return {"ndc": draw(ndc_s), "quantity": draw(maybe_quantity), "unit": draw(unit_s),
            "dosage": draw(dosage_s), "frequency": draw(frequency_s)}


@st.composite
def claims(draw, claim_id: str = "P1") -> list[ClaimLine]:
    member, auth = draw(member_auth_s)
    header = {
        "claim_id": claim_id, "form": draw(form_s), "member_id": member,
        "provider_npi": draw(npi_s), "authorization_number": auth, "diagnosis_codes": draw(dx_s),
    }
    count = draw(count_s)
    header["line_count"] = count
    lines = []
    for number in range(1, count + 1):
        lines.append(ClaimLine.model_validate({
            **header,
            "line_number": number,
            "service_date": draw(day_s).isoformat(),
            "procedure_code": draw(code_s),
            "modifiers": draw(mods_s),
            "units": draw(units),
            "charge_amount": str(draw(money)),
            "drug": draw(drugs()),
        }))
    return lines


@st.composite
def histories(draw) -> History:
    """Cross-claim state as if earlier claims of the member were decided."""
    return History(units_used=draw(used_s), drug_days=set(draw(days_s)))


def run(lines: list[ClaimLine], history: History, now: datetime = NOW) -> Outcome:
    return decide(lines, REF, history, BOOKS, now)


def comparable(d: AdjudicatedLine) -> dict[str, Any]:
    return d.model_dump(mode="json", exclude={"adjudicated_at"})


def state(out: Outcome) -> tuple:
    return (sorted(out.paid), sorted(out.units), sorted(out.drug_days))


@SETTINGS
@given(claims(), histories(), st.randoms(use_true_random=False))
def test_decisions_do_not_depend_on_line_arrival_order(lines: list[ClaimLine], history: History, rnd: random.Random) -> None:
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    a, b = run(lines, history), run(shuffled, history)
    assert [comparable(d) for d in a.decisions] == [comparable(d) for d in b.decisions]
    assert state(a) == state(b)
    assert [d.line_number for d in a.decisions] == sorted(ln.line_number for ln in lines)


@SETTINGS
@given(claims(), histories())
def test_redeciding_changes_nothing(lines: list[ClaimLine], history: History) -> None:
    first = run(lines, history)
    stored = {d.line_number: d for d in first.decisions}
    for h in (History(decided=stored),
              History(decided=stored, paid_fingerprints={fp for fp, _, _ in first.paid},
                      drug_days=history.drug_days | first.drug_days, units_used={"PA26-1001": Decimal(10_000)})):
        again = run(list(reversed(lines)), h, LATER)
        assert not again.changes_state
        assert (again.new_decisions, again.paid, again.units, again.drug_days) == ([], [], [], set())
        assert [comparable(d) for d in again.decisions] == [comparable(d) for d in first.decisions]
        assert all(d.adjudicated_at == LATER for d in again.decisions)


@SETTINGS
@given(claims(), histories())
def test_amount_invariants(lines: list[ClaimLine], history: History) -> None:
    out = run(lines, history)
    charges = {ln.line_number: ln.charge_amount for ln in lines}
    cent = Decimal("0.01")
    for d in out.decisions:
        charge = charges[d.line_number]
        assert Decimal(0) <= d.allowed_amount <= charge
        assert d.allowed_amount == d.allowed_amount.quantize(cent)
        total = sum((a.amount for a in d.adjustments), Decimal(0))
        assert total == charge - d.allowed_amount  # adjustments balance
        assert all(a.amount == a.amount.quantize(cent) for a in d.adjustments)
        if d.status == "DENIED":
            assert d.allowed_amount == 0 and d.pricing is None
            assert d.adjustments, "a denied line carries at least one adjustment"
            assert d.adjustments[0].amount == charge
            assert all(a.amount == 0 for a in d.adjustments[1:])
            assert all(a.rule != "PRICE-CONTRACT-REDUCTION" for a in d.adjustments)
        else:
            assert d.pricing is not None
            if d.allowed_amount < charge:
                assert [(a.group, a.carc, a.rule) for a in d.adjustments] == [("CO", "45", "PRICE-CONTRACT-REDUCTION")]
            else:
                assert d.adjustments == []


@SETTINGS
@given(claims(), histories())
def test_units_and_paid_state_follow_the_decisions(lines: list[ClaimLine], history: History) -> None:
    out = run(lines, history)
    paid = {d.line_number for d in out.decisions if d.status == "PAID"}
    assert {n for _, n, _ in out.paid} == paid
    assert {n for _, n, _ in out.units} <= paid  # only PAID lines consume units
    by_line = {ln.line_number: ln for ln in lines}
    for auth, number, used in out.units:
        approved = REF.authorizations[auth].approved_units
        assert approved is not None and used == by_line[number].units
    for auth in {a for a, _, _ in out.units}:
        total = history.units_used.get(auth, Decimal(0)) + sum(u for a, _, u in out.units if a == auth)
        assert total <= REF.authorizations[auth].approved_units


@SETTINGS
@given(claims("P1"), claims("P2"))
def test_sequence_of_claims_never_exceeds_approved_units(a: list[ClaimLine], b: list[ClaimLine]) -> None:
    history = History()
    for lines in (a, b):
        out = run(lines, history)
        history.paid_fingerprints |= {fp for fp, _, _ in out.paid}
        history.drug_days |= out.drug_days
        for auth, _, used in out.units:
            history.units_used[auth] = history.units_used.get(auth, Decimal(0)) + used
    for auth, used in history.units_used.items():
        assert used <= REF.authorizations[auth].approved_units
