"""The decision engine, rule by rule (POLICY.md sections 2-7), on claims built in code.

Every rule gets at least one paid and one denied case. CARC/RARC are asserted as literals from
CONTRACT.md, so a rulebook that drifts from the contract fails here.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from rules.engine import History, Outcome, decide, line_fingerprint
from rules.reference import ReferenceData
from rules.rulebook import default_rulebooks
from contract.models import (
    AdjudicatedLine,
    Authorization,
    AwpPrice,
    ClaimLine,
    Drug,
    FeeScheduleRate,
    LineWork,
    Member,
    ProviderContract,
)

BOOKS = default_rulebooks()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DAY = "2026-02-02"

NPI_A = "1245678903"  # contract: AWP - 15%, 100% of fee schedule
NPI_B = "1987654328"  # contract: AWP - 18%, 95% of fee schedule
NPI_C = "1456789019"  # no contract

CEF = "00143985810"  # ceftriaxone 1 g, UN, single-use
CEF2 = "25021010510"  # ceftriaxone 2 g, UN, single-use
DEX = "63323051630"  # dexamethasone, ML, multi-use
F8 = "68516460102"  # factor VIII, F2, single-use
ODD = "11111222233"  # AWP 2.345, for rounding

#: rule id -> (CARC, RARCs) as CONTRACT.md lists them
CODES = {
    "ELIG-MEMBER-UNKNOWN": ("31", []),
    "ELIG-NOT-ELIGIBLE": ("27", []),
    "ELIG-MASSHEALTH-NOT-COVERED": ("204", ["N130"]),
    "AUTH-MISSING": ("197", []),
    "AUTH-NOT-FOUND": ("197", []),
    "AUTH-NOT-APPROVED": ("197", []),
    "AUTH-OTHER-MEMBER": ("197", []),
    "AUTH-CODE-NOT-COVERED": ("197", []),
    "AUTH-DATE-OUTSIDE": ("197", []),
    "AUTH-UNITS-EXHAUSTED": ("198", ["N54"]),
    "DRUG-NDC-MISSING": ("16", ["M119"]),
    "DRUG-NDC-MALFORMED": ("16", ["M119"]),
    "DRUG-NDC-UNKNOWN": ("16", ["M119"]),
    "DRUG-DETAILS-INCOMPLETE": ("16", ["M119"]),
    "DRUG-UNIT-MISMATCH": ("16", ["M119"]),
    "EDIT-PER-DIEM-NO-DRUG": ("107", []),
    "EDIT-PER-DIEM-UNITS": ("16", ["M53"]),
    "EDIT-NURSING-ADDITIONAL-HOUR": ("107", []),
    "EDIT-CONCURRENCY-MISSING": ("4", ["N822"]),
    "EDIT-CONCURRENCY-WRONG": ("4", ["N823"]),
    "EDIT-MULTI-NDC-MISSING": ("4", ["N822"]),
    "EDIT-MULTI-NDC-WRONG": ("4", ["N823"]),
    "EDIT-WASTAGE-NO-ADMINISTERED": ("4", ["N823"]),
    "EDIT-WASTAGE-MULTI-USE": ("4", ["N823"]),
    "EDIT-DUPLICATE": ("18", []),
    "EDIT-JZ-MISSING": ("4", ["N822"]),  # the candidate JZ update (POLICY.md), not in effect
    "EDIT-JZ-WRONG": ("4", ["N823"]),
    "PRICE-NO-AWP": ("16", []),
    "PRICE-NO-FEE": ("16", []),
}

ALL_CODES = [
    "S9500", "S9501", "S9374", "S9490", "S9365", "S9345", "S5498", "B4185", "B4189",
    "J0696", "J1100", "J7192", "J2543", "99601", "99602",
]


# --- reference data -------------------------------------------------------------------------


def reference(
    *,
    awp: list[tuple[str, str, str]] | None = None,
    fees: list[tuple[str, str, str]] | None = None,
    auths: list[dict[str, Any]] | None = None,
    contracts: list[tuple[str, str, str]] | None = None,
) -> ReferenceData:
    ref = ReferenceData()
    ref.load("members", [
        Member(member_id="M1", plan="COMMERCIAL", eligible_from=date(2025, 1, 1)),
        Member(member_id="M2", plan="COMMERCIAL", eligible_from=date(2025, 1, 1)),
        Member(member_id="GIC", plan="GIC_PPO", eligible_from=date(2025, 1, 1)),
        Member(member_id="MH", plan="MASSHEALTH_ACO", eligible_from=date(2025, 1, 1)),
        Member(member_id="WINDOW", plan="COMMERCIAL", eligible_from=date(2026, 2, 1), eligible_to=date(2026, 2, 28)),
    ])
    base_auths = [
        dict(authorization_number="PA1", member_id="M1", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PA2", member_id="M2", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PAGIC", member_id="GIC", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PAMH", member_id="MH", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PAW", member_id="WINDOW", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PA-FEB", member_id="M1", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-02-01", end_date="2026-02-28"),
        dict(authorization_number="PA-NARROW", member_id="M1", status="APPROVED", procedure_codes=["J0696"],
             start_date="2026-01-01", end_date="2026-12-31"),
        dict(authorization_number="PA-UNITS", member_id="M1", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31", approved_units="5"),
        dict(authorization_number="PA-ZERO", member_id="M1", status="APPROVED", procedure_codes=ALL_CODES,
             start_date="2026-01-01", end_date="2026-12-31", approved_units="0"),
        *[
            dict(authorization_number=f"PA-{s}", member_id="M1", status=s, procedure_codes=ALL_CODES,
                 start_date="2026-01-01", end_date="2026-12-31")
            for s in ("DENIED", "PENDING", "VOIDED")
        ],
    ]
    ref.load("authorizations", [Authorization.model_validate(a) for a in (auths if auths is not None else base_auths)])
    ref.load("drugs", [
        Drug(ndc=CEF, description="ceftriaxone 1 g", billing_unit="UN", package_type="SINGLE_USE"),
        Drug(ndc=CEF2, description="ceftriaxone 2 g", billing_unit="UN", package_type="SINGLE_USE"),
        Drug(ndc=DEX, description="dexamethasone", billing_unit="ML", package_type="MULTI_USE"),
        Drug(ndc=F8, description="factor VIII", billing_unit="F2", package_type="SINGLE_USE"),
        Drug(ndc=ODD, description="odd price", billing_unit="UN", package_type="SINGLE_USE"),
    ])
    awp = awp if awp is not None else [
        (CEF, "10.00", "2025-01-01"), (CEF, "12.00", "2026-02-01"), (CEF2, "20.00", "2025-01-01"),
        (DEX, "1.00", "2025-01-01"), (F8, "1.50", "2025-01-01"), (ODD, "2.345", "2025-01-01"),
    ]
    ref.load("awp-prices", [AwpPrice(ndc=n, awp_per_unit=Decimal(p), effective_from=date.fromisoformat(d)) for n, p, d in awp])
    fees = fees if fees is not None else [
        ("S9500", "100.00", "2025-01-01"), ("S9500", "110.00", "2026-02-01"), ("S9501", "90.00", "2025-01-01"),
        ("S9374", "60.00", "2025-01-01"), ("S9490", "80.00", "2025-01-01"), ("S9365", "200.00", "2025-01-01"),
        ("S9345", "150.00", "2025-01-01"), ("S5498", "20.00", "2025-01-01"), ("B4185", "46.35", "2025-01-01"),
        ("B4189", "200.00", "2025-01-01"), ("99601", "150.00", "2025-01-01"), ("99602", "50.00", "2025-01-01"),
    ]
    ref.load("fee-schedule", [FeeScheduleRate(procedure_code=c, rate=Decimal(r), effective_from=date.fromisoformat(d)) for c, r, d in fees])
    contracts = contracts if contracts is not None else [(NPI_A, "15", "100"), (NPI_B, "18", "95")]
    ref.load("provider-contracts", [
        ProviderContract(provider_npi=n, awp_discount_pct=Decimal(a), fee_schedule_pct=Decimal(f)) for n, a, f in contracts
    ])
    return ref


REF = reference()


# --- claim factories ------------------------------------------------------------------------


def drug(ndc: str | None = CEF, qty: Any = "2", unit: str | None = "UN", dosage: str | None = "2 g",
         frequency: str | None = "q24h") -> dict[str, Any]:
    return {"ndc": ndc, "quantity": qty, "unit": unit, "dosage": dosage, "frequency": frequency, "duration_minutes": 30}


def ln(code: str = "S9500", mods: tuple[str, ...] = (), units: Any = "1", charge: Any = "200.00",
       day: str = DAY, drug: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"procedure_code": code, "modifiers": list(mods), "units": units, "charge_amount": charge,
            "service_date": day, "drug": drug, **kw}


def cef(qty: Any = "2", ndc: str = CEF, mods: tuple[str, ...] = (), charge: Any = "60.00", **kw: Any) -> dict[str, Any]:
    return ln("J0696", mods, units="8", charge=charge, drug=drug(ndc, qty), **kw)


def claim(*lines: dict[str, Any], claim_id: str = "C1", member: str = "M1", npi: str = NPI_A,
          auth: str | None = "PA1", form: str = "CMS-1500", dx: tuple[str, ...] = ("M86.171",)) -> list[ClaimLine]:
    header = {"claim_id": claim_id, "line_count": len(lines), "form": form, "member_id": member,
              "provider_npi": npi, "authorization_number": auth, "diagnosis_codes": list(dx)}
    return [ClaimLine.model_validate({**header, "line_number": i, **spec}) for i, spec in enumerate(lines, 1)]


def run(lines: list[ClaimLine], ref: ReferenceData = REF, history: History | None = None) -> Outcome:
    return decide(lines, ref, history or History(), BOOKS, NOW)


def decisions(lines: list[ClaimLine], ref: ReferenceData = REF, history: History | None = None) -> dict[int, AdjudicatedLine]:
    return {d.line_number: d for d in run(lines, ref, history).decisions}


class MemberState:
    """A member's cross-claim state, kept the way the ledger keeps it."""

    def __init__(self, ref: ReferenceData = REF) -> None:
        self.ref = ref
        self.paid: set[str] = set()
        self.days: set[date] = set()
        self.units: dict[str, Decimal] = {}

    def history(self) -> History:
        return History(paid_fingerprints=set(self.paid), drug_days=set(self.days), units_used=dict(self.units))

    def decide(self, lines: list[ClaimLine]) -> dict[int, AdjudicatedLine]:
        out = run(lines, self.ref, self.history())
        self.paid |= {fp for fp, _, _ in out.paid}
        self.days |= out.drug_days
        for auth, _, units in out.units:
            self.units[auth] = self.units.get(auth, Decimal(0)) + units
        return {d.line_number: d for d in out.decisions}


# --- assertions -----------------------------------------------------------------------------


def balanced(d: AdjudicatedLine, charge: Decimal) -> None:
    assert sum((a.amount for a in d.adjustments), Decimal(0)) == charge - d.allowed_amount


def assert_paid(d: AdjudicatedLine, allowed: str, charge: str | None = None) -> None:
    assert d.status == "PAID", [(a.rule, a.message) for a in d.adjustments]
    assert d.allowed_amount == Decimal(allowed)
    assert str(d.allowed_amount.quantize(Decimal("0.01"))) == allowed
    assert d.pricing is not None
    if charge is not None:
        reduction = Decimal(charge) - Decimal(allowed)
        if reduction:
            assert [(a.group, a.carc, a.rarc, a.rule, a.amount) for a in d.adjustments] == [
                ("CO", "45", [], "PRICE-CONTRACT-REDUCTION", reduction)
            ]
        else:
            assert d.adjustments == []
        balanced(d, Decimal(charge))


def assert_denied(d: AdjudicatedLine, *rules: str, charge: str | None = None) -> None:
    """DENIED with exactly `rules` in order; CARC/RARC from the contract; first carries the charge."""
    assert d.status == "DENIED"
    assert d.allowed_amount == 0 and d.pricing is None
    assert [a.rule for a in d.adjustments] == list(rules)
    for a in d.adjustments:
        carc, rarc = CODES[a.rule]
        assert (a.group, a.carc, a.rarc) == ("CO", carc, rarc), a.rule
        assert a.message
    if charge is not None:
        assert d.adjustments[0].amount == Decimal(charge)
        assert str(d.adjustments[0].amount) == str(Decimal(charge).quantize(Decimal("0.01")))
        assert all(a.amount == 0 and str(a.amount) == "0.00" for a in d.adjustments[1:])
        balanced(d, Decimal(charge))


def rules_of(d: AdjudicatedLine) -> list[str]:
    """The denial rules on a line (the CO-45 contract reduction of a paid line is not one)."""
    return [a.rule for a in d.adjustments if a.rule != "PRICE-CONTRACT-REDUCTION"]


# === section 2: eligibility ===================================================================


def test_eligible_member_is_paid() -> None:
    d = decisions(claim(ln(charge="150.00"), cef()))
    assert_paid(d[1], "110.00", "150.00")
    assert_paid(d[2], "20.40", "60.00")  # 2 x 12.00 x 85%
    assert d[1].policy_version == BOOKS.books[0].version


def test_unknown_member_31() -> None:
    d = decisions(claim(ln(charge="150.00"), cef(), member="NOBODY", auth=None))
    assert_denied(d[1], "ELIG-MEMBER-UNKNOWN", "AUTH-MISSING", charge="150.00")
    assert_denied(d[2], "ELIG-MEMBER-UNKNOWN", "AUTH-MISSING", charge="60.00")


@pytest.mark.parametrize(("day", "status"), [
    ("2026-01-31", "DENIED"), ("2026-02-01", "PAID"), ("2026-02-28", "PAID"), ("2026-03-01", "DENIED"),
])
def test_eligibility_window_inclusive(day: str, status: str) -> None:
    d = decisions(claim(ln(day=day), cef(day=day), member="WINDOW", auth="PAW"))
    assert {x.status for x in d.values()} == {status}
    if status == "DENIED":
        assert_denied(d[1], "ELIG-NOT-ELIGIBLE", charge="200.00")


def test_other_plan_names_are_not_restricted() -> None:
    d = decisions(claim(ln(), cef(), member="GIC", auth="PAGIC"))
    assert {x.status for x in d.values()} == {"PAID"}


@pytest.mark.parametrize("dx", ["K50.90", "K5090", "K51.00", "K21.9", "K31.84", "K59.81", "K59.8", "E70.0", "E71.110", "E72.11"])
def test_masshealth_nutrition_with_mandated_condition_paid(dx: str) -> None:
    d = decisions(claim(ln("S9365", charge="250.00"), ln("B4189", charge="250.00"), ln("B4185", units="2", charge="100.00"),
                        member="MH", auth="PAMH", npi=NPI_B, dx=("R63.4", dx)))
    assert_paid(d[1], "190.00", "250.00")  # 200 x 95%
    assert_paid(d[2], "190.00", "250.00")
    assert_paid(d[3], "88.07", "100.00")  # 46.35 x 2 x 95% = 88.065, half-up


@pytest.mark.parametrize("dx", ["E43", "K31.8", "K59.0", "K52.9", "E73.0", "K2", "Z45.2"])
def test_masshealth_without_mandated_condition_204(dx: str) -> None:
    d = decisions(claim(ln("S9365"), ln("B4185"), member="MH", auth="PAMH", dx=(dx,)))
    assert_denied(d[1], "ELIG-MASSHEALTH-NOT-COVERED", charge="200.00")
    assert_denied(d[2], "ELIG-MASSHEALTH-NOT-COVERED", charge="200.00")


def test_masshealth_mandated_condition_but_not_nutrition_204() -> None:
    d = decisions(claim(ln("S9365"), ln("B4185"), ln("99601"), ln("S9500", ("SH",)), cef(),
                        member="MH", auth="PAMH", dx=("K50.90",)))
    assert d[1].status == d[2].status == "PAID"
    for n in (3, 4, 5):
        assert rules_of(d[n])[0] == "ELIG-MASSHEALTH-NOT-COVERED"


def test_masshealth_covered_line_still_needs_authorization() -> None:
    d = decisions(claim(ln("S9365"), ln("B4185"), member="MH", auth=None, dx=("K50.90",)))
    assert_denied(d[1], "AUTH-MISSING", charge="200.00")


# === section 3: prior authorization ===========================================================


@pytest.mark.parametrize(("auth", "member", "code", "day", "rule"), [
    (None, "M1", "J0696", DAY, "AUTH-MISSING"),
    ("", "M1", "J0696", DAY, "AUTH-MISSING"),
    ("PA-NOPE", "M1", "J0696", DAY, "AUTH-NOT-FOUND"),
    ("PA-DENIED", "M1", "J0696", DAY, "AUTH-NOT-APPROVED"),
    ("PA-PENDING", "M1", "J0696", DAY, "AUTH-NOT-APPROVED"),
    ("PA-VOIDED", "M1", "J0696", DAY, "AUTH-NOT-APPROVED"),
    ("PA2", "M1", "J0696", DAY, "AUTH-OTHER-MEMBER"),
    ("PA-NARROW", "M1", "J1100", DAY, "AUTH-CODE-NOT-COVERED"),
    ("PA-FEB", "M1", "J0696", "2026-01-31", "AUTH-DATE-OUTSIDE"),
    ("PA-FEB", "M1", "J0696", "2026-03-01", "AUTH-DATE-OUTSIDE"),
])
def test_authorization_197_causes(auth: str | None, member: str, code: str, day: str, rule: str) -> None:
    spec = ln(code, units="8", charge="60.00", day=day, drug=drug(DEX if code == "J1100" else CEF, unit="ML" if code == "J1100" else "UN"))
    d = decisions(claim(spec, auth=auth, member=member))
    assert_denied(d[1], rule, charge="60.00")
    assert d[1].ndc11 is not None  # the NDC normalizes, whatever the status


@pytest.mark.parametrize("day", ["2026-02-01", "2026-02-14", "2026-02-28"])
def test_authorization_dates_inclusive_and_code_covered(day: str) -> None:
    d = decisions(claim(cef(day=day), auth="PA-FEB"))
    assert d[1].status == "PAID"
    d = decisions(claim(cef(day=day), auth="PA-NARROW"))
    assert d[1].status == "PAID"


def test_not_approved_message_names_status() -> None:
    d = decisions(claim(cef(), auth="PA-PENDING"))
    assert "PENDING" in d[1].adjustments[0].message


def test_approved_units_none_means_no_limit() -> None:
    m = MemberState()
    for i in range(5):
        d = m.decide(claim(ln("99601", units="1", day=f"2026-02-0{i + 1}"), ln("99602", units="40", day=f"2026-02-0{i + 1}"),
                           claim_id=f"C{i}"))
        assert {x.status for x in d.values()} == {"PAID"}


def test_units_consumed_across_claims_until_exhausted() -> None:
    m = MemberState()
    nursing = lambda day, extra, cid: claim(ln("99601", day=day), ln("99602", units=extra, day=day), claim_id=cid, auth="PA-UNITS")  # noqa: E731
    d1 = m.decide(nursing("2026-02-02", "2", "A"))  # 3 of 5
    assert [d1[1].status, d1[2].status] == ["PAID", "PAID"]
    d2 = m.decide(nursing("2026-02-03", "2", "B"))  # 4 of 5, then 2 more would be 6: no partial payment
    assert d2[1].status == "PAID"
    assert_denied(d2[2], "AUTH-UNITS-EXHAUSTED", charge="200.00")
    assert "1 of 5" in d2[2].adjustments[0].message
    d3 = m.decide(nursing("2026-02-04", "1", "C"))  # 5 of 5, then exhausted
    assert d3[1].status == "PAID"
    assert_denied(d3[2], "AUTH-UNITS-EXHAUSTED", charge="200.00")
    assert m.units == {"PA-UNITS": Decimal(5)}


def test_units_exactly_at_the_limit_are_paid_and_zero_approved_denies() -> None:
    d = decisions(claim(ln("99601", units="1"), ln("99602", units="4"), auth="PA-UNITS"))
    assert d[1].status == d[2].status == "PAID"
    d = decisions(claim(ln("99601"), auth="PA-ZERO"))
    assert_denied(d[1], "AUTH-UNITS-EXHAUSTED", charge="200.00")


def test_units_consumed_by_line_number_not_arrival_order() -> None:
    lines = claim(ln("99601", units="1"), ln("99602", units="3"), ln("99602", ("U2",), units="2"), auth="PA-UNITS")
    d = decisions(list(reversed(lines)))
    assert [d[1].status, d[2].status, d[3].status] == ["PAID", "PAID", "DENIED"]
    out = run(list(reversed(lines)))
    assert [(a, n, u) for a, n, u in out.units] == [("PA-UNITS", 1, Decimal(1)), ("PA-UNITS", 2, Decimal(3))]


def test_denied_line_never_consumes_units() -> None:
    m = MemberState()
    # 99602 without 99601 (107) and a per diem without a drug (107): nothing is used
    d = m.decide(claim(ln("99602", units="4"), ln("S9500"), claim_id="A", auth="PA-UNITS"))
    assert rules_of(d[1]) == ["EDIT-NURSING-ADDITIONAL-HOUR"] and rules_of(d[2]) == ["EDIT-PER-DIEM-NO-DRUG"]
    assert m.units == {}
    # an earlier line of the same claim denied for another reason leaves the units to the next:
    # 3 (denied) + 1 + 4 would exceed 5; 1 + 4 does not
    d = m.decide(claim(ln("S9500", units="3", day="2026-02-03"), ln("B4189", units="1", day="2026-02-03"),
                       ln("99601", units="4", day="2026-02-03"), claim_id="B", auth="PA-UNITS"))
    assert_denied(d[1], "EDIT-PER-DIEM-UNITS", charge="200.00")
    assert d[2].status == "PAID" and d[3].status == "PAID"
    assert m.units == {"PA-UNITS": Decimal(5)}


def test_units_of_a_drug_line_count_under_the_authorization() -> None:
    # approved_units limits the units of every line PAID under the authorization
    d = decisions(claim(cef(), auth="PA-UNITS"))  # J0696 units 8 > 5
    assert_denied(d[1], "AUTH-UNITS-EXHAUSTED", charge="60.00")


def test_duplicate_denial_does_not_consume_units() -> None:
    m = MemberState()
    m.decide(claim(ln("99601", units="1"), claim_id="A", auth="PA-UNITS"))
    d = m.decide(claim(ln("99601", units="1"), ln("99601", ("U1",), units="4"), claim_id="B", auth="PA-UNITS"))
    assert_denied(d[1], "EDIT-DUPLICATE", charge="200.00")
    assert d[2].status == "PAID"
    assert m.units == {"PA-UNITS": Decimal(5)}


# === section 4: drug data ===================================================================


def test_j_code_without_drug_details_16_m119() -> None:
    d = decisions(claim(ln("J0696", units="8", charge="60.00")))
    assert_denied(d[1], "DRUG-NDC-MISSING", charge="60.00")
    assert d[1].ndc11 is None


@pytest.mark.parametrize("ndc", [None, "", "   "])
def test_drug_details_without_ndc_16_m119(ndc: str | None) -> None:
    d = decisions(claim(ln("J0696", charge="60.00", drug=drug(ndc))))
    assert_denied(d[1], "DRUG-NDC-MISSING", charge="60.00")


@pytest.mark.parametrize("ndc", ["0143985810", "143-9858-10", "00143-9858-1O", "0143 9858 10"])
def test_malformed_ndc_16_m119(ndc: str) -> None:
    d = decisions(claim(ln("J0696", charge="60.00", drug=drug(ndc))))
    assert_denied(d[1], "DRUG-NDC-MALFORMED", charge="60.00")
    assert d[1].ndc11 is None


def test_ndc_not_in_catalog_keeps_ndc11() -> None:
    d = decisions(claim(ln("J0696", charge="60.00", drug=drug("12345-6789-1"))))
    assert_denied(d[1], "DRUG-NDC-UNKNOWN", charge="60.00")
    assert d[1].ndc11 == "12345678901"


@pytest.mark.parametrize("printed", ["0143-9858-10", "00143-9858-10", "00143985810"])
def test_every_printed_shape_finds_the_catalog_entry(printed: str) -> None:
    d = decisions(claim(cef(ndc=printed)))
    assert d[1].ndc11 == CEF
    assert_paid(d[1], "20.40", "60.00")


@pytest.mark.parametrize("missing", ["quantity", "unit", "dosage", "frequency"])
def test_incomplete_drug_details_16_m119(missing: str) -> None:
    details = drug()
    details[missing] = None
    d = decisions(claim(ln("J0696", charge="60.00", drug=details)))
    assert_denied(d[1], "DRUG-DETAILS-INCOMPLETE", charge="60.00")
    assert missing in d[1].adjustments[0].message
    assert d[1].ndc11 == CEF


@pytest.mark.parametrize(("ndc", "unit"), [(CEF, "ML"), (DEX, "UN"), (F8, "UN"), (F8, "ML")])
def test_unit_other_than_billing_unit_16_m119(ndc: str, unit: str) -> None:
    d = decisions(claim(ln("J0696", charge="60.00", drug=drug(ndc, unit=unit))))
    assert_denied(d[1], "DRUG-UNIT-MISMATCH", charge="60.00")


@pytest.mark.parametrize(("ndc", "unit"), [(DEX, "ML"), (DEX, "ml"), (F8, "F2")])
def test_billing_unit_matches(ndc: str, unit: str) -> None:
    d = decisions(claim(ln("J1100", charge="5000.00", drug=drug(ndc, qty="3", unit=unit))))
    assert d[1].status == "PAID"


def test_b_codes_without_drug_details_priced_on_fee_schedule() -> None:
    d = decisions(claim(ln("S9365", charge="250.00"), ln("B4185", units="2", charge="100.00")))
    assert_paid(d[2], "92.70", "100.00")
    assert d[2].pricing.method == "FEE_SCHEDULE"


def test_any_line_with_drug_details_is_priced_on_awp() -> None:
    d = decisions(claim(ln("S9500", drug=drug(CEF, qty="1"), charge="100.00")))
    assert d[1].pricing.method == "AWP"
    assert_paid(d[1], "10.20", "100.00")


# === section 5: claim-day edits ===============================================================


def test_per_diem_with_drug_on_same_claim_paid() -> None:
    d = decisions(claim(ln("S9500"), ln("S5498", charge="20.00"), cef()))
    assert_paid(d[1], "110.00", "200.00")
    assert_paid(d[2], "20.00", "20.00")


def test_per_diem_without_drug_107() -> None:
    d = decisions(claim(ln("S9500"), ln("S5498", charge="25.00"), ln("99601")))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="200.00")
    assert_denied(d[2], "EDIT-PER-DIEM-NO-DRUG", charge="25.00")
    assert d[3].status == "PAID"


def test_per_diem_with_drug_only_on_another_date_107() -> None:
    d = decisions(claim(ln("S9500"), cef(day="2026-02-03")))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="200.00")


def test_per_diem_with_drug_on_earlier_claim_of_member_paid() -> None:
    m = MemberState()
    m.decide(claim(cef(), claim_id="A"))
    d = m.decide(claim(ln("S9500"), claim_id="B"))
    assert d[1].status == "PAID"
    # a later claim's drug line does not reach back
    m2 = MemberState()
    d = m2.decide(claim(ln("S9500", day="2026-02-05"), claim_id="A"))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="200.00")


def test_per_diem_supported_by_a_denied_drug_line() -> None:
    m = MemberState()
    d = m.decide(claim(ln("S9500"), ln("J0696", charge="60.00", drug=drug("99999-9999-99")), claim_id="A"))
    assert d[1].status == "PAID" and rules_of(d[2]) == ["DRUG-NDC-UNKNOWN"]
    d = m.decide(claim(ln("J0696", units="8", day="2026-02-03", charge="60.00"), claim_id="B"))
    d = m.decide(claim(ln("S9500", day="2026-02-03"), claim_id="C"))
    assert d[1].status == "PAID"


def test_per_diem_with_only_jw_drug_107() -> None:
    d = decisions(claim(ln("S9500"), cef("0.5", mods=("JW",))))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="200.00")
    assert_denied(d[2], "EDIT-WASTAGE-NO-ADMINISTERED", charge="60.00")
    out = run(claim(ln("S9500"), cef("0.5", mods=("JW",))))
    assert out.drug_days == set()
    # and a JW line on an earlier claim does not count either
    m = MemberState()
    m.decide(claim(cef("0.5", mods=("JW",)), claim_id="A"))
    d = m.decide(claim(ln("S9500"), claim_id="B"))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="200.00")


def test_per_diem_with_b_code_drug_paid() -> None:
    d = decisions(claim(ln("S9365"), ln("B4189")))
    assert d[1].status == "PAID"


def test_drug_days_recorded_for_drug_lines_whatever_their_outcome() -> None:
    out = run(claim(cef(), ln("J0696", units="8", day="2026-02-03"), ln("B4185", day="2026-02-04"), ln("99601", day="2026-02-05")))
    assert out.drug_days == {date(2026, 2, 2), date(2026, 2, 3), date(2026, 2, 4)}


@pytest.mark.parametrize(("code", "units"), [("S9500", "2"), ("S9500", "0.5"), ("S9500", "7"), ("S5498", "2"), ("S9365", "3")])
def test_per_diem_units_other_than_one_16_m53(code: str, units: str) -> None:
    d = decisions(claim(ln(code, units=units), cef(), ln("B4189")))
    assert_denied(d[1], "EDIT-PER-DIEM-UNITS", charge="200.00")
    assert units in d[1].adjustments[0].message


@pytest.mark.parametrize("units", ["1", "1.0", "1.0000", 1, 1.0])
def test_per_diem_units_one_paid(units: Any) -> None:
    d = decisions(claim(ln("S9500", units=units), cef()))
    assert d[1].status == "PAID"


def test_per_diem_units_and_no_drug_both_listed() -> None:
    d = decisions(claim(ln("S9500", units="3")))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", "EDIT-PER-DIEM-UNITS", charge="200.00")


def test_nursing_additional_hour_with_first_visit_paid() -> None:
    d = decisions(claim(ln("99602", units="2", charge="100.00"), ln("99601", charge="150.00")))
    assert_paid(d[1], "100.00", "100.00")
    assert_paid(d[2], "150.00", "150.00")


def test_nursing_additional_hour_without_first_visit_107() -> None:
    d = decisions(claim(ln("99602", units="2", charge="100.00"), ln("99601", day="2026-02-03")))
    assert_denied(d[1], "EDIT-NURSING-ADDITIONAL-HOUR", charge="100.00")
    assert d[2].status == "PAID"


def test_nursing_first_visit_on_an_earlier_claim_does_not_count() -> None:
    m = MemberState()
    m.decide(claim(ln("99601"), claim_id="A"))
    d = m.decide(claim(ln("99602", charge="50.00"), claim_id="B"))
    assert_denied(d[1], "EDIT-NURSING-ADDITIONAL-HOUR", charge="50.00")


# --- concurrency (SH/SJ) ---------------------------------------------------------------------

THERAPY = ["S9500", "S9374", "S9490", "S9501"]


def therapies(*mods: tuple[str, ...], day: str = DAY) -> list[dict[str, Any]]:
    return [ln(THERAPY[i], m, day=day) for i, m in enumerate(mods)]


def concurrency(*mods: tuple[str, ...]) -> list[list[str]]:
    d = decisions(claim(*therapies(*mods), cef()))
    return [rules_of(d[i + 1]) for i in range(len(mods))]


@pytest.mark.parametrize(("mods", "expected"), [
    # one therapy per diem: neither SH nor SJ
    ([()], [[]]),
    ([("SH",)], [["EDIT-CONCURRENCY-WRONG"]]),
    ([("SJ",)], [["EDIT-CONCURRENCY-WRONG"]]),
    # two or more: the first without SH/SJ is the primary
    ([(), ()], [[], ["EDIT-CONCURRENCY-MISSING"]]),
    ([(), ("SH",)], [[], []]),
    ([("SH",), ()], [[], []]),  # the primary need not be line 1
    ([(), ("SH",), ("SJ",)], [[], [], []]),
    ([(), ("SJ",), ("SH",)], [[], [], []]),  # SJ is right when an SH line exists, wherever it is
    ([(), ("SH",), ("SJ",), ("SJ",)], [[], [], [], []]),
    ([(), ("SH",), ("SH",)], [[], [], ["EDIT-CONCURRENCY-WRONG"]]),
    ([(), ("SJ",)], [[], ["EDIT-CONCURRENCY-WRONG"]]),
    ([(), ("SJ",), ("SJ",)], [[], ["EDIT-CONCURRENCY-WRONG"], ["EDIT-CONCURRENCY-WRONG"]]),
    ([(), ("SH", "SJ")], [[], ["EDIT-CONCURRENCY-WRONG"]]),
    ([(), (), ("SH",)], [[], ["EDIT-CONCURRENCY-MISSING"], []]),
    # no primary: the first line is wrong; the rest are judged on their own modifiers
    ([("SH",), ("SJ",)], [["EDIT-CONCURRENCY-WRONG"], []]),
    ([("SH",), ("SH",)], [["EDIT-CONCURRENCY-WRONG"], ["EDIT-CONCURRENCY-WRONG"]]),
    ([("SJ",), ("SH",)], [["EDIT-CONCURRENCY-WRONG"], []]),
    ([("SJ",), ("SJ",)], [["EDIT-CONCURRENCY-WRONG"], ["EDIT-CONCURRENCY-WRONG"]]),
    ([("SH", "SJ"), ("SH",)], [["EDIT-CONCURRENCY-WRONG"], []]),
])
def test_concurrency(mods: list[tuple[str, ...]], expected: list[list[str]]) -> None:
    assert concurrency(*mods) == expected


def test_concurrency_codes_and_amounts() -> None:
    d = decisions(claim(*therapies((), (), ("SH",), ("SH",)), cef()))
    assert_denied(d[2], "EDIT-CONCURRENCY-MISSING", charge="200.00")  # 4 / N822
    assert_denied(d[4], "EDIT-CONCURRENCY-WRONG", charge="200.00")  # 4 / N823
    assert d[1].status == d[3].status == "PAID"


def test_concurrency_is_per_date_and_by_line_number() -> None:
    lines = claim(ln("S9500", ("SH",)), ln("S9374"), ln("S9500", day="2026-02-03"), cef(), cef(day="2026-02-03"))
    d = decisions(list(reversed(lines)))
    assert [d[1].status, d[2].status, d[3].status] == ["PAID", "PAID", "PAID"]


def test_catheter_care_is_not_a_concurrent_therapy() -> None:
    d = decisions(claim(ln("S9500"), ln("S5498"), ln("S5501"), cef()))
    assert all("EDIT-CONCURRENCY" not in r for x in d.values() for r in rules_of(x))
    assert d[1].status == d[2].status == "PAID"


# --- multiple NDCs (KP/KQ) -----------------------------------------------------------------


def test_multi_ndc_kp_kq_right_paid() -> None:
    d = decisions(claim(cef("1", mods=("KP",), charge="30.00"), cef("1", CEF2, ("KQ",), charge="40.00"), ln("S9500")))
    assert_paid(d[1], "10.20", "30.00")
    assert_paid(d[2], "17.00", "40.00")


@pytest.mark.parametrize(("m1", "m2", "r1", "r2"), [
    ((), (), "EDIT-MULTI-NDC-MISSING", "EDIT-MULTI-NDC-MISSING"),
    (("KP",), (), None, "EDIT-MULTI-NDC-MISSING"),
    ((), ("KQ",), "EDIT-MULTI-NDC-MISSING", None),
    (("KQ",), ("KP",), "EDIT-MULTI-NDC-WRONG", "EDIT-MULTI-NDC-WRONG"),
    (("KP",), ("KP",), None, "EDIT-MULTI-NDC-WRONG"),
    (("KQ",), ("KQ",), "EDIT-MULTI-NDC-WRONG", None),
])
def test_multi_ndc_missing_or_misplaced_4(m1, m2, r1, r2) -> None:
    d = decisions(claim(cef("1", mods=m1), cef("1", CEF2, m2)))
    for n, rule in ((1, r1), (2, r2)):
        if rule is None:
            assert d[n].status == "PAID"
        else:
            assert_denied(d[n], rule, charge="60.00")


def test_multi_ndc_three_lines_lowest_numbered_is_kp() -> None:
    lines = claim(cef("1", mods=("KQ",)), cef("1", CEF2, ("KP",)), cef("1", F8, ("KQ",)))
    d = decisions(list(reversed(lines)))
    assert rules_of(d[1]) == ["EDIT-MULTI-NDC-WRONG"]
    assert rules_of(d[2]) == ["EDIT-MULTI-NDC-WRONG"]
    assert "DRUG-UNIT-MISMATCH" in rules_of(d[3]) and "EDIT-MULTI-NDC-WRONG" not in rules_of(d[3])


@pytest.mark.parametrize("mod", ["KP", "KQ"])
def test_kp_kq_outside_a_formulation_4_n823(mod: str) -> None:
    d = decisions(claim(cef(mods=(mod,)), ln("99601", (mod,)), ln("S9500")))
    assert_denied(d[1], "EDIT-MULTI-NDC-WRONG", charge="60.00")
    assert_denied(d[2], "EDIT-MULTI-NDC-WRONG", charge="200.00")


def test_not_a_formulation_different_codes_or_dates() -> None:
    d = decisions(claim(cef("1"), ln("J2543", units="3", drug=drug(CEF2, "1")), cef("1", CEF2, day="2026-02-03")))
    assert all(not any(r.startswith("EDIT-MULTI-NDC") for r in rules_of(x)) for x in d.values())


def test_jw_line_is_not_part_of_the_formulation() -> None:
    d = decisions(claim(cef("1"), cef("0.5", CEF2, ("JW",))))
    assert rules_of(d[1]) == []
    assert rules_of(d[2]) == ["EDIT-WASTAGE-NO-ADMINISTERED"]
    d = decisions(claim(cef("1", mods=("KP",)), cef("1", CEF2, ("KQ",)), cef("0.5", CEF2, ("JW",))))
    assert {x.status for x in d.values()} == {"PAID"}


@pytest.mark.parametrize(("m1", "m2"), [((), ()), (("KQ",), ("KP",)), (("KP",), ())])
def test_837p_not_checked_for_kp_kq(m1, m2) -> None:
    d = decisions(claim(cef("1", mods=m1), cef("1", CEF2, m2), form="837P"))
    assert d[1].status == d[2].status == "PAID"
    d = decisions(claim(cef("1", mods=("KP",)), ln("99601", ("KQ",)), form="837P"))
    assert d[1].status == d[2].status == "PAID"


# --- wastage (JW) ----------------------------------------------------------------------------


def test_jw_single_use_with_administered_line_priced_on_wasted_quantity() -> None:
    d = decisions(claim(cef("1.5", charge="50.00"), cef("0.5", mods=("JW",), charge="20.00")))
    assert_paid(d[1], "15.30", "50.00")  # 1.5 x 12.00 x 85%
    assert_paid(d[2], "5.10", "20.00")  # 0.5 x 12.00 x 85%
    assert d[2].pricing.quantity == Decimal("0.5")


def test_jw_without_administered_line_4() -> None:
    # nothing administered; administered on another date; another NDC; another code
    for spec in ([], [cef(day="2026-02-03")], [cef(ndc=CEF2)], [ln("J2543", units="3", drug=drug(CEF))]):
        d = decisions(claim(cef("0.5", mods=("JW",)), *spec))
        assert_denied(d[1], "EDIT-WASTAGE-NO-ADMINISTERED", charge="60.00")


def test_jw_administered_line_without_quantity_does_not_count() -> None:
    d = decisions(claim(ln("J0696", charge="60.00", drug=drug(qty=None)), cef("0.5", mods=("JW",))))
    assert rules_of(d[1]) == ["DRUG-DETAILS-INCOMPLETE"]
    assert rules_of(d[2]) == ["EDIT-WASTAGE-NO-ADMINISTERED"]


def test_jw_on_multi_use_vial_4() -> None:
    dex = lambda qty, mods=(): ln("J1100", mods, units="10", charge="30.00", drug=drug(DEX, qty, "ML"))  # noqa: E731
    d = decisions(claim(dex("2.5"), dex("1", ("JW",))))
    assert d[1].status == "PAID"
    assert_denied(d[2], "EDIT-WASTAGE-MULTI-USE", charge="30.00")
    d = decisions(claim(dex("1", ("JW",))))
    assert_denied(d[1], "EDIT-WASTAGE-NO-ADMINISTERED", "EDIT-WASTAGE-MULTI-USE", charge="30.00")


# --- duplicates ----------------------------------------------------------------------------------


def test_duplicate_of_line_paid_on_another_claim_18() -> None:
    m = MemberState()
    first = m.decide(claim(ln("S9500"), cef(), claim_id="A"))
    assert {x.status for x in first.values()} == {"PAID"}
    # same line, NDC printed differently, on an 837P from the same provider
    d = m.decide(claim(cef(ndc="0143-9858-10", qty="3", charge="90.00"), claim_id="B", form="837P"))
    assert_denied(d[1], "EDIT-DUPLICATE", charge="90.00")


@pytest.mark.parametrize("change", [
    {"day": "2026-02-03"}, {"ndc": CEF2}, {"mods": ("U1",)}, {"npi": NPI_B}, {"member": "M2"},
])
def test_not_a_duplicate_when_anything_differs(change: dict[str, Any]) -> None:
    m = MemberState()
    m.decide(claim(cef(), claim_id="A"))
    change = dict(change)
    npi, member = change.pop("npi", NPI_A), change.pop("member", "M1")
    d = m.decide(claim(cef(**change), claim_id="B", npi=npi, member=member, auth="PA2" if member == "M2" else "PA1"))
    assert d[1].status == "PAID"


def test_duplicate_compares_the_modifier_set() -> None:
    d = decisions(claim(ln("99601", ("U1", "U2")), ln("99601", ("U2", "U1"))))
    assert d[1].status == "PAID"
    assert_denied(d[2], "EDIT-DUPLICATE", charge="200.00")


def test_duplicate_earlier_on_same_claim_only_when_paid() -> None:
    d = decisions(claim(ln("99601"), ln("99601")))
    assert d[1].status == "PAID"
    assert_denied(d[2], "EDIT-DUPLICATE", charge="200.00")
    # the first copy denied (units exhausted): the second is not a duplicate of a paid line
    d = decisions(claim(ln("99601", units="6"), ln("99601", units="1"), auth="PA-UNITS"))
    assert rules_of(d[1]) == ["AUTH-UNITS-EXHAUSTED"]
    assert d[2].status == "PAID"


def test_denied_line_on_another_claim_is_not_a_duplicate_source() -> None:
    m = MemberState()
    m.decide(claim(cef(), claim_id="A", auth="PA-DENIED"))
    d = m.decide(claim(cef(), claim_id="B"))
    assert d[1].status == "PAID"


def test_redelivery_is_not_a_duplicate() -> None:
    lines = claim(ln("S9500"), cef())
    first = run(lines)
    history = History(decided={d.line_number: d for d in first.decisions},
                      paid_fingerprints={fp for fp, _, _ in first.paid}, drug_days=set(first.drug_days))
    again = run(lines, history=history)
    assert [d.status for d in again.decisions] == ["PAID", "PAID"]


# === section 6: pricing =====================================================================


@pytest.mark.parametrize(("price", "qty", "npi", "charge", "allowed"), [
    ("2.345", "3", NPI_A, "100.00", "5.98"),  # 5.97975; rounding the unit price first would give 5.99
    ("2.345", "1", NPI_C, "100.00", "2.35"),  # .xx5 rounds up (banker's rounding would give 2.34)
    ("0.125", "1", NPI_C, "100.00", "0.13"),
    ("0.005", "1", NPI_C, "100.00", "0.01"),
    ("0.0049", "1", NPI_C, "100.00", "0.00"),
    ("2.345", "3", NPI_B, "100.00", "5.77"),  # 5.7687
    ("1.01", "0.5", NPI_A, "100.00", "0.43"),  # 0.42925
    ("0.3", "0.1", NPI_C, "100.00", "0.03"),  # exact decimal arithmetic, no float noise
    ("2.345", "3", NPI_A, "5.97", "5.97"),  # the charge is less: allowed = charge, no CO-45
    # more digits than the default 28-digit context: still exact until the one rounding
    ("0.0049999999999999999999999999999999", "1", NPI_C, "100.00", "0.00"),
    ("1.00499999999999999999999999999999", "1", NPI_C, "100.00", "1.00"),
])
def test_awp_rounding_half_up_once(price: str, qty: str, npi: str, charge: str, allowed: str) -> None:
    ref = reference(awp=[(ODD, price, "2025-01-01")])
    d = decisions(claim(ln("J0696", charge=charge, drug=drug(ODD, qty)), npi=npi), ref)
    assert_paid(d[1], allowed, charge)
    assert d[1].pricing.unit_price == Decimal(price)


@pytest.mark.parametrize(("rate", "units", "npi", "allowed"), [
    ("46.35", "2", NPI_B, "88.07"),  # 88.065
    ("33.30", "1", NPI_B, "31.64"),  # 31.635
    ("10.01", "1.5", NPI_B, "14.26"),  # 14.26425
    ("72.50", "2", NPI_C, "145.00"),
])
def test_fee_schedule_rounding_half_up_once(rate: str, units: str, npi: str, allowed: str) -> None:
    ref = reference(fees=[("99602", rate, "2025-01-01"), ("99601", "1.00", "2025-01-01")])
    d = decisions(claim(ln("99602", units=units, charge="500.00"), ln("99601"), npi=npi), ref)
    assert_paid(d[1], allowed, "500.00")


@pytest.mark.parametrize(("day", "unit_price", "effective"), [
    ("2025-01-01", "10.00", "2025-01-01"),
    ("2026-01-31", "10.00", "2025-01-01"),
    ("2026-02-01", "12.00", "2026-02-01"),
    ("2026-12-31", "12.00", "2026-02-01"),
])
def test_awp_effective_dating(day: str, unit_price: str, effective: str) -> None:
    d = decisions(claim(cef(day=day)), reference(auths=[dict(authorization_number="PA1", member_id="M1", status="APPROVED",
                                                              procedure_codes=["J0696"], start_date="2025-01-01", end_date="2026-12-31")]))
    assert d[1].pricing.unit_price == Decimal(unit_price)
    assert d[1].pricing.effective_from == date.fromisoformat(effective)


def test_awp_before_any_price_16() -> None:
    ref = reference(awp=[(CEF, "10.00", "2026-02-03")])
    d = decisions(claim(cef()), ref)
    assert_denied(d[1], "PRICE-NO-AWP", charge="60.00")
    d = decisions(claim(cef(day="2026-02-03")), ref)
    assert d[1].status == "PAID"


def test_drug_in_catalog_without_any_price_16() -> None:
    d = decisions(claim(cef()), reference(awp=[]))
    assert_denied(d[1], "PRICE-NO-AWP", charge="60.00")


@pytest.mark.parametrize(("day", "allowed"), [("2026-01-31", "100.00"), ("2026-02-01", "110.00")])
def test_fee_schedule_effective_dating(day: str, allowed: str) -> None:
    d = decisions(claim(ln(day=day), cef(day=day)))
    assert_paid(d[1], allowed, "200.00")


def test_fee_schedule_before_any_rate_or_no_rate_16() -> None:
    ref = reference(fees=[("S9500", "100.00", "2026-03-01")])
    d = decisions(claim(ln(), cef(), ln("99601")), ref)
    assert_denied(d[1], "PRICE-NO-FEE", charge="200.00")
    assert_denied(d[3], "PRICE-NO-FEE", charge="200.00")


def test_no_price_is_not_raised_when_another_denial_applies() -> None:
    d = decisions(claim(cef(), auth=None), reference(awp=[]))
    assert_denied(d[1], "AUTH-MISSING", charge="60.00")


@pytest.mark.parametrize(("npi", "awp_pct", "fee_pct", "drug_allowed", "fee_allowed"), [
    (NPI_A, "85", "100", "20.40", "110.00"),
    (NPI_B, "82", "95", "19.68", "104.50"),
    (NPI_C, "100", "100", "24.00", "110.00"),  # no contract: AWP - 0%, 100% of fee schedule
])
def test_contract_percentages(npi, awp_pct, fee_pct, drug_allowed, fee_allowed) -> None:
    d = decisions(claim(cef(), ln(), npi=npi))
    assert_paid(d[1], drug_allowed, "60.00")
    assert d[1].pricing.method == "AWP" and d[1].pricing.contract_pct == Decimal(awp_pct)
    assert d[1].pricing.quantity == Decimal(2)
    assert_paid(d[2], fee_allowed, "200.00")
    assert d[2].pricing.method == "FEE_SCHEDULE" and d[2].pricing.contract_pct == Decimal(fee_pct)


def test_contract_defaults_and_above_100_pct() -> None:
    ref = reference(contracts=[(NPI_A, "0", "120")])
    d = decisions(claim(cef(), ln(charge="500.00"), ln("99601", charge="100.00")), ref)
    assert_paid(d[1], "24.00", "60.00")
    assert_paid(d[2], "132.00", "500.00")
    assert_paid(d[3], "100.00", "100.00")  # 180.00 priced, capped at the charge


def test_lesser_of_charge_and_allowed() -> None:
    d = decisions(claim(ln(charge="99.99"), cef(charge="20.40"), ln("99601", charge="0.00")))
    assert_paid(d[1], "99.99", "99.99")
    assert_paid(d[2], "20.40", "20.40")
    assert_paid(d[3], "0.00", "0.00")


def test_charge_as_number_and_unquantized_string() -> None:
    d = decisions(claim(ln(charge=150), cef(charge="60"), ln("99601", charge=12.5)))
    assert_paid(d[1], "110.00", "150")
    assert str(d[1].adjustments[0].amount) == "40.00"
    assert_paid(d[3], "12.50", "12.5")
    d = decisions(claim(ln(charge=150)))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="150")


# === denials: amounts and balance ===============================================================


def test_denied_line_carries_the_charge_on_the_first_adjustment_only() -> None:
    d = decisions(claim(ln("S9500", ("SJ",), units="2", charge="321.45"), member="NOBODY", auth="PA-NOPE"))
    assert_denied(d[1], "ELIG-MEMBER-UNKNOWN", "AUTH-NOT-FOUND", "EDIT-PER-DIEM-NO-DRUG", "EDIT-PER-DIEM-UNITS",
                  "EDIT-CONCURRENCY-WRONG", charge="321.45")
    assert [str(a.amount) for a in d[1].adjustments] == ["321.45", "0.00", "0.00", "0.00", "0.00"]


def test_denied_zero_charge_line() -> None:
    d = decisions(claim(ln("S9500", charge="0.00")))
    assert_denied(d[1], "EDIT-PER-DIEM-NO-DRUG", charge="0.00")


def test_messages_name_the_policy_section() -> None:
    d = decisions(claim(ln("S9500", charge="150.00"), cef(), ln("99602")))
    assert "[policy section 6]" in d[1].adjustments[0].message
    assert "[policy section 5]" in d[3].adjustments[0].message


# === section 7 / re-decision ==================================================================


def test_redeciding_returns_stored_decisions_and_changes_nothing() -> None:
    lines = claim(ln("S9500"), cef(), ln("99601"), ln("99602", units="2"), auth="PA-UNITS")
    first = run(lines)
    assert first.changes_state and first.units and first.paid and first.drug_days
    stored = {d.line_number: d for d in first.decisions}
    later = datetime(2026, 4, 1, tzinfo=timezone.utc)
    again = decide(lines, REF, History(decided=stored), BOOKS, later)
    assert not again.changes_state
    assert again.new_decisions == [] and again.paid == [] and again.units == [] and again.drug_days == set()
    for a, b in zip(first.decisions, again.decisions, strict=True):
        assert a.model_dump(exclude={"adjudicated_at"}) == b.model_dump(exclude={"adjudicated_at"})
        assert b.adjudicated_at == later


def test_outcome_records_what_the_ledger_must_store() -> None:
    lines = claim(ln("99601"), ln("99602", units="5"), ln("S9500"), auth="PA-UNITS")
    out = run(lines)
    assert [n for _, n, _ in out.paid] == [1]
    assert out.units == [("PA-UNITS", 1, Decimal(1))]
    assert [d.line_number for d in out.new_decisions] == [1, 2, 3]
    fingerprints = {fp for fp, _, _ in out.paid}
    assert fingerprints == {line_fingerprint(LineWork(line=lines[0]))}
