"""Writes the synthetic sample data of this folder: `python streams/sample_data/generate.py`.

Everything here is made up (members, authorizations, NPIs, prices); nothing comes from a real
person, provider or price list. The output is deterministic: running it again rewrites the
same bytes. The comments say what each claim is there to show; the decisions themselves are in
tests/golden/sample_decisions.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Provider NPIs (valid Luhn check digits with the 80840 prefix).
BAYSTATE = "1245678903"  # contract: AWP - 15%, 100% of fee schedule
PIONEER = "1987654328"  # contract: AWP - 18%, 95% of fee schedule
NORTHSHORE = "1456789019"  # no contract: AWP - 0%, 100% of fee schedule
BAD_NPI = "1245678904"  # check digit wrong

# NDCs as the catalog holds them (11 digits) and as providers print them.
CEFTRIAXONE_1G = "00143985810"  # printed 0143-9858-10 (4-4-2)
CEFTRIAXONE_2G = "25021010510"  # printed 25021-105-10 (5-3-2)
PIP_TAZO = "60505077304"  # printed 60505-0773-4 (5-4-1)
FACTOR8_1000 = "68516460102"  # printed 68516-4601-2 (5-4-1)
FACTOR8_2000 = "00944294110"  # printed as 11 plain digits
DEXAMETHASONE = "63323051630"  # printed 63323-516-30 (5-3-2), multiple-dose vial
VANCOMYCIN = "00409650901"  # printed 00409-6509-01 (5-4-2)
HEPARIN_FLUSH = "63323054705"
NOC_ANTINEOPLASTIC = "99999010001"  # labeler 99999 is no real labeler: a made-up NOC drug

REFERENCE: dict[str, list[dict]] = {
    "members": [
        {"member_id": "M1001", "plan": "COMMERCIAL", "eligible_from": "2025-01-01", "eligible_to": None},
        {"member_id": "M1002", "plan": "COMMERCIAL", "eligible_from": "2024-06-01", "eligible_to": None},
        {"member_id": "M1003", "plan": "COMMERCIAL", "eligible_from": "2025-09-01", "eligible_to": None},
        {"member_id": "M1004", "plan": "COMMERCIAL", "eligible_from": "2026-01-01", "eligible_to": "2026-12-31"},
        {"member_id": "M1005", "plan": "COMMERCIAL", "eligible_from": "2025-01-01", "eligible_to": None},
        {"member_id": "M1006", "plan": "GIC_PPO", "eligible_from": "2025-07-01", "eligible_to": None},
        {"member_id": "M2001", "plan": "MASSHEALTH_ACO", "eligible_from": "2025-01-01", "eligible_to": None},
        # coverage ended on 2026-01-31
        {"member_id": "M3001", "plan": "COMMERCIAL", "eligible_from": "2024-01-01", "eligible_to": "2026-01-31"},
        # M9999 is deliberately absent (unknown member)
    ],
    "authorizations": [
        {"authorization_number": "PA26-1001", "member_id": "M1001", "status": "APPROVED",
         "procedure_codes": ["S9500", "S9501", "J0696", "J2543", "J1100", "99601", "99602", "S5498"],
         "start_date": "2026-01-01", "end_date": "2026-06-30", "approved_units": None},
        {"authorization_number": "PA26-1002", "member_id": "M1002", "status": "APPROVED",
         "procedure_codes": ["S9365", "B4185", "B4189", "99601"],
         "start_date": "2026-01-01", "end_date": "2026-12-31", "approved_units": None},
        {"authorization_number": "PA26-1003", "member_id": "M1003", "status": "APPROVED",
         "procedure_codes": ["J7192", "S9345", "99601", "99602"],
         "start_date": "2026-01-01", "end_date": "2026-06-30", "approved_units": None},
        {"authorization_number": "PA26-1004", "member_id": "M1004", "status": "APPROVED",
         "procedure_codes": ["99601", "99602", "S5498"],
         "start_date": "2026-01-01", "end_date": "2026-03-31", "approved_units": "6"},
        {"authorization_number": "PA26-1005", "member_id": "M1005", "status": "APPROVED",
         "procedure_codes": ["S9500", "S9374", "S9490", "J0696", "J1100", "99601"],
         "start_date": "2026-01-01", "end_date": "2026-06-30", "approved_units": None},
        {"authorization_number": "PA26-1006", "member_id": "M1006", "status": "APPROVED",
         "procedure_codes": ["S9502", "J3370", "J1642"],
         "start_date": "2026-01-01", "end_date": "2026-12-31", "approved_units": "100"},
        # a not-otherwise-classified drug (J9999) the plan reviews before paying (NOC_REVIEW)
        {"authorization_number": "PA26-1007", "member_id": "M1006", "status": "APPROVED",
         "procedure_codes": ["J9999"],
         "start_date": "2026-05-01", "end_date": "2026-10-31", "approved_units": "8"},
        {"authorization_number": "PA26-2001", "member_id": "M2001", "status": "APPROVED",
         "procedure_codes": ["S9365", "B4185", "B4189", "99601"],
         "start_date": "2026-01-01", "end_date": "2026-12-31", "approved_units": None},
        {"authorization_number": "PA26-3001", "member_id": "M3001", "status": "APPROVED",
         "procedure_codes": ["S9500", "J0696"],
         "start_date": "2026-01-01", "end_date": "2026-12-31", "approved_units": None},
        {"authorization_number": "PA26-5001", "member_id": "M1001", "status": "DENIED",
         "procedure_codes": ["S9500", "J0696"], "start_date": "2026-02-01", "end_date": "2026-03-31", "approved_units": None},
        {"authorization_number": "PA26-5002", "member_id": "M1001", "status": "PENDING",
         "procedure_codes": ["S9500", "J0696"], "start_date": "2026-02-01", "end_date": "2026-03-31", "approved_units": "14"},
        {"authorization_number": "PA26-5003", "member_id": "M1001", "status": "VOIDED",
         "procedure_codes": ["S9500", "J0696"], "start_date": "2026-02-01", "end_date": "2026-03-31", "approved_units": None},
    ],
    "drugs": [
        {"ndc": CEFTRIAXONE_1G, "description": "Ceftriaxone for injection 1 g single-dose vial", "billing_unit": "UN", "package_type": "SINGLE_USE"},
        {"ndc": CEFTRIAXONE_2G, "description": "Ceftriaxone for injection 2 g single-dose vial", "billing_unit": "UN", "package_type": "SINGLE_USE"},
        {"ndc": PIP_TAZO, "description": "Piperacillin and tazobactam for injection 3.375 g single-dose vial", "billing_unit": "UN", "package_type": "SINGLE_USE"},
        {"ndc": FACTOR8_1000, "description": "Antihemophilic factor (recombinant) 1000 IU kit", "billing_unit": "F2", "package_type": "SINGLE_USE"},
        {"ndc": FACTOR8_2000, "description": "Antihemophilic factor (recombinant) 2000 IU kit", "billing_unit": "F2", "package_type": "SINGLE_USE"},
        {"ndc": DEXAMETHASONE, "description": "Dexamethasone sodium phosphate 4 mg/mL, 30 mL multiple-dose vial", "billing_unit": "ML", "package_type": "MULTI_USE"},
        {"ndc": VANCOMYCIN, "description": "Vancomycin hydrochloride for injection 1 g single-dose vial", "billing_unit": "UN", "package_type": "SINGLE_USE"},
        {"ndc": HEPARIN_FLUSH, "description": "Heparin lock flush 100 USP units/mL, 5 mL", "billing_unit": "ML", "package_type": "SINGLE_USE"},
        {"ndc": NOC_ANTINEOPLASTIC, "description": "Antineoplastic, not otherwise classified (made up), 100 mg single-dose vial", "billing_unit": "UN", "package_type": "SINGLE_USE"},
    ],
    "awp-prices": [
        {"ndc": CEFTRIAXONE_1G, "awp_per_unit": "12.50", "effective_from": "2025-07-01"},
        {"ndc": CEFTRIAXONE_1G, "awp_per_unit": "13.75", "effective_from": "2026-03-01"},
        {"ndc": CEFTRIAXONE_2G, "awp_per_unit": "22.40", "effective_from": "2025-07-01"},
        {"ndc": PIP_TAZO, "awp_per_unit": "14.85", "effective_from": "2025-07-01"},
        {"ndc": FACTOR8_1000, "awp_per_unit": "1.635", "effective_from": "2025-10-01"},
        {"ndc": FACTOR8_2000, "awp_per_unit": "1.59", "effective_from": "2025-10-01"},
        {"ndc": DEXAMETHASONE, "awp_per_unit": "0.86", "effective_from": "2025-07-01"},
        # vancomycin has no price before 2026-04-01
        {"ndc": VANCOMYCIN, "awp_per_unit": "9.80", "effective_from": "2026-04-01"},
        {"ndc": HEPARIN_FLUSH, "awp_per_unit": "0.42", "effective_from": "2025-01-01"},
        {"ndc": NOC_ANTINEOPLASTIC, "awp_per_unit": "412.50", "effective_from": "2025-07-01"},
    ],
    "fee-schedule": [
        {"procedure_code": "S9500", "rate": "115.00", "effective_from": "2025-01-01"},
        {"procedure_code": "S9500", "rate": "121.50", "effective_from": "2026-04-01"},
        {"procedure_code": "S9501", "rate": "98.00", "effective_from": "2025-01-01"},
        # S9502 has no rate before 2026-05-01
        {"procedure_code": "S9502", "rate": "131.00", "effective_from": "2026-05-01"},
        {"procedure_code": "S9374", "rate": "64.25", "effective_from": "2025-01-01"},
        {"procedure_code": "S9490", "rate": "88.40", "effective_from": "2025-01-01"},
        {"procedure_code": "S9365", "rate": "245.00", "effective_from": "2025-01-01"},
        {"procedure_code": "S9345", "rate": "165.00", "effective_from": "2025-01-01"},
        {"procedure_code": "B4185", "rate": "46.35", "effective_from": "2025-01-01"},
        {"procedure_code": "B4189", "rate": "212.80", "effective_from": "2025-01-01"},
        {"procedure_code": "99601", "rate": "155.00", "effective_from": "2025-01-01"},
        {"procedure_code": "99602", "rate": "72.50", "effective_from": "2025-01-01"},
        {"procedure_code": "S5498", "rate": "18.75", "effective_from": "2025-01-01"},
    ],
    "provider-contracts": [
        {"provider_npi": BAYSTATE, "awp_discount_pct": "15", "fee_schedule_pct": "100"},
        {"provider_npi": PIONEER, "awp_discount_pct": "18", "fee_schedule_pct": "95"},
        # NORTHSHORE has no contract
    ],
}


# --- claims --------------------------------------------------------------------------------


def drug(ndc, quantity, unit, dosage="", frequency="", minutes=None):
    d = {"ndc": ndc, "quantity": quantity, "unit": unit}
    if dosage:
        d["dosage"] = dosage
    if frequency:
        d["frequency"] = frequency
    if minutes is not None:
        d["duration_minutes"] = minutes
    return d


CEF1 = lambda qty="2", ndc="0143-9858-10": drug(ndc, qty, "UN", f"{int(qty)} g" if qty.isdigit() else qty, "q24h", 30)  # noqa: E731


def claim(claim_id, member, npi, auth, dx, lines, form="CMS-1500", numbers=False):
    """Lines as (date, code, modifiers, units, charge, drug-or-None[, extra fields]).
    `numbers`: units and charge travel as JSON numbers (inputs accept both)."""
    out = []
    for number, spec in enumerate(lines, 1):
        day, code, mods, units, charge, drg, *extra = spec
        line = {
            "claim_id": claim_id, "line_number": number, "line_count": len(lines), "form": form,
            "member_id": member, "provider_npi": npi, "authorization_number": auth,
            "service_date": day, "procedure_code": code, "modifiers": mods, "units": units,
            "charge_amount": charge, "diagnosis_codes": dx, "drug": drg,
        }
        if form == "837P":  # fields the contract does not know: ignored by the pipeline
            line["place_of_service"] = "12"
            line["line_item_control_number"] = f"{claim_id}-{number:03d}"
        if numbers:
            line["units"], line["charge_amount"] = _number(units), _number(charge)
        for patch in extra:
            line.update(patch)
        out.append(line)
    return out


def _number(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)


OPAT = ["M86.171"]  # osteomyelitis, right ankle and foot
M = "M1001"
A = "PA26-1001"

C = {}  # claim id -> list of lines (line_number order)

# What each line is expected to end as, written by hand from POLICY.md and docs/rulebook.md
# (prices from REFERENCE above), not taken from the engine: tests/test_golden_anchor.py checks
# tests/golden/sample_decisions.jsonl against it. Per line number: "PAID <allowed> [CARCs]",
# "DENIED <CARCs>", "PENDED <pend reason> <suggested amount>" (allowed 0.00, no adjustments),
# "VOIDED 0.00", "REJECTED <codes>", or None for a line never sent. Every
# message sent is answered once (so a line sent twice has two such records); the REVERSED
# records a correction causes are expected next to it (expect_reversal).
EXPECTED: dict[str, list[str | None]] = {}  # claim id -> outcome by line number (1 first)
EXPECTED_REVERSALS: dict[str, list[str]] = {}  # claim id -> its lines' REVERSED records


def expect(claim_id: str, *outcomes: str | None) -> None:
    EXPECTED[claim_id] = list(outcomes)


def expect_reversal(claim_id: str, *records: str) -> None:
    EXPECTED_REVERSALS[claim_id] = list(records)


# Classic OPAT day: ceftriaxone with per diem, nursing 99601 + 99602, catheter care. All PAID;
# 99602 is paid in full (no adjustment), the others carry CO-45.
C["C26-0001"] = claim("C26-0001", M, BAYSTATE, A, OPAT, [
    ("2026-01-05", "S9500", [], "1", "150.00", None),
    ("2026-01-05", "J0696", [], "8", "60.00", CEF1()),
    ("2026-01-05", "99601", [], "1", "180.00", None),
    ("2026-01-05", "99602", [], "1", "72.50", None),
    ("2026-01-05", "S5498", [], "1", "25.00", None),
])
expect("C26-0001",
       "PAID 115.00 45",
       "PAID 21.25 45",
       "PAID 155.00 45",
       "PAID 72.50",
       "PAID 18.75 45",
       "REJECTED CLAIM_CLOSED",
)
# 837P: two NDCs of one drug code without KP/KQ are fine electronically.
C["C26-0002"] = claim("C26-0002", M, BAYSTATE, A, OPAT, [
    ("2026-01-06", "S9500", [], "1", "150.00", None),
    ("2026-01-06", "J0696", [], "8", "60.00", CEF1(ndc=CEFTRIAXONE_1G)),
    ("2026-01-06", "J0696", [], "8", "40.00", drug("25021-105-10", "1", "UN", "2 g", "q24h", 30)),
], form="837P")
expect("C26-0002", "PAID 115.00 45", "PAID 21.25 45", "PAID 19.04 45")
# CMS-1500 multiple-NDC formulation billed right: KP first, KQ after. 10.625 rounds to 10.63.
C["C26-0003"] = claim("C26-0003", M, BAYSTATE, A, OPAT, [
    ("2026-01-07", "S9500", [], "1", "150.00", None),
    ("2026-01-07", "J0696", ["KP"], "4", "30.00", CEF1("1")),
    ("2026-01-07", "J0696", ["KQ"], "8", "40.00", drug("25021-105-10", "1", "UN", "2 g", "q24h", 30)),
])
expect("C26-0003", "PAID 115.00 45", "PAID 10.63 45", "PAID 19.04 45")
# KP/KQ wrong: missing KP, KP where KQ belongs, KQ on a single-NDC line.
C["C26-0004"] = claim("C26-0004", M, BAYSTATE, A, OPAT, [
    ("2026-01-08", "S9500", [], "1", "150.00", None),
    ("2026-01-08", "J0696", [], "4", "30.00", CEF1("1")),
    ("2026-01-08", "J0696", ["KP"], "8", "40.00", drug("25021-105-10", "1", "UN", "2 g", "q24h", 30)),
    ("2026-01-08", "J2543", ["KQ"], "3", "35.00", drug("60505-0773-4", "1", "UN", "3.375 g", "q6h", 30)),
])
expect("C26-0004", "PAID 115.00 45", "DENIED 4", "DENIED 4", "DENIED 4")
# Drug data: J-code without drug details, a 10-digit NDC, an NDC not in the catalog. The per
# diem is still paid: a drug line counts whatever its own outcome.
C["C26-0005"] = claim("C26-0005", M, BAYSTATE, A, OPAT, [
    ("2026-01-09", "S9500", [], "1", "150.00", None),
    ("2026-01-09", "J0696", [], "8", "60.00", None),
    ("2026-01-09", "J2543", [], "3", "35.00", drug("6050507734", "1", "UN", "3.375 g", "q6h", 30)),
    ("2026-01-09", "J1100", [], "10", "12.00", drug("12345-6789-01", "2.5", "ML", "10 mg", "daily", 15)),
])
expect("C26-0005", "PAID 115.00 45", "DENIED 16", "DENIED 16", "DENIED 16")
# Drug details incomplete (no dosage, no frequency); unit UN for a drug billed in ML.
C["C26-0006"] = claim("C26-0006", M, BAYSTATE, A, OPAT, [
    ("2026-01-12", "S9500", [], "1", "150.00", None),
    ("2026-01-12", "J0696", [], "8", "60.00", drug("0143-9858-10", "2", "UN")),
    ("2026-01-12", "J1100", [], "10", "12.00", drug("63323-516-30", "2.5", "UN", "10 mg", "daily", 15)),
])
expect("C26-0006", "PAID 115.00 45", "DENIED 16", "DENIED 16")
# Per diem billed for 3 days on one line (16/M53); 99602 without 99601 (107).
C["C26-0007"] = claim("C26-0007", M, BAYSTATE, A, OPAT, [
    ("2026-01-13", "S9500", [], "3", "450.00", None),
    ("2026-01-13", "J0696", [], "8", "60.00", CEF1()),
    ("2026-01-13", "99602", [], "2", "145.00", None),
])
expect("C26-0007", "DENIED 16", "PAID 21.25 45", "DENIED 107")
# Per diem and catheter care without any drug that day (107 on both).
C["C26-0008"] = claim("C26-0008", M, BAYSTATE, A, OPAT, [
    ("2026-01-14", "S9500", [], "1", "150.00", None),
    ("2026-01-14", "S5498", [], "1", "25.00", None),
])
expect("C26-0008", "DENIED 107", "DENIED 107")
# The only drug line of the day is wastage (JW): it does not support the per diem, and it has
# no administered line.
C["C26-0009"] = claim("C26-0009", M, BAYSTATE, A, OPAT, [
    ("2026-01-15", "S9500", [], "1", "150.00", None),
    ("2026-01-15", "J2543", ["JW"], "1", "12.00", drug("60505-0773-4", "0.5", "UN", "1.6875 g", "q6h")),
])
expect("C26-0009", "DENIED 107", "DENIED 4")
# 837P, valid wastage: single-dose vial, administered line present; JW priced on the wasted
# quantity.
C["C26-0010"] = claim("C26-0010", M, BAYSTATE, A, OPAT, [
    ("2026-01-16", "S9500", [], "1", "150.00", None),
    ("2026-01-16", "J2543", [], "7.5", "48.00", drug(PIP_TAZO, "2.5", "UN", "8.4375 g", "q6h", 30)),
    ("2026-01-16", "J2543", ["JW"], "1", "12.00", drug(PIP_TAZO, "0.5", "UN", "1.6875 g", "q6h")),
], form="837P")
expect("C26-0010", "PAID 115.00 45", "PAID 31.56 45", "PAID 6.31 45")

# M1005: corticosteroid, hydration and antibiotic therapies (concurrency).
CX = "PA26-1005"
CDX = ["J44.1", "E86.0"]
C["C26-0011"] = claim("C26-0011", "M1005", BAYSTATE, CX, CDX, [
    ("2026-01-20", "J1100", [], "10", "14.00", drug("63323-516-30", "2.5", "ML", "10 mg", "daily", 15)),
    ("2026-01-20", "J1100", ["JW"], "4", "6.00", drug("63323-516-30", "1", "ML", "4 mg", "daily")),
    ("2026-01-20", "S9490", [], "1", "95.00", None),
])
expect("C26-0011", "PAID 1.83 45", "DENIED 4", "PAID 88.40 45")
# A week-style claim over two dates: one therapy with SH (wrong); two therapies, the second
# without SH/SJ (missing).
C["C26-0012"] = claim("C26-0012", "M1005", BAYSTATE, CX, CDX, [
    ("2026-02-02", "S9500", ["SH"], "1", "150.00", None),
    ("2026-02-02", "J0696", [], "8", "60.00", CEF1()),
    ("2026-02-03", "S9500", [], "1", "150.00", None),
    ("2026-02-03", "S9374", [], "1", "70.00", None),
    ("2026-02-03", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0012", "DENIED 4", "PAID 21.25 45", "PAID 115.00 45", "DENIED 4", "PAID 21.25 45")
# 837P: primary, SH, SJ: all right.
C["C26-0013"] = claim("C26-0013", "M1005", BAYSTATE, CX, CDX, [
    ("2026-02-04", "S9500", [], "1", "150.00", None),
    ("2026-02-04", "S9374", ["SH"], "1", "70.00", None),
    ("2026-02-04", "S9490", ["SJ"], "1", "95.00", None),
    ("2026-02-04", "J0696", [], "8", "60.00", CEF1(ndc="00143-9858-10")),
    ("2026-02-04", "J1100", [], "10", "14.00", drug(DEXAMETHASONE, "2.5", "ML", "10 mg", "daily", 15)),
], form="837P")
expect("C26-0013", "PAID 115.00 45", "PAID 64.25 45", "PAID 88.40 45", "PAID 21.25 45", "PAID 1.83 45")
# Primary, SH, and a second SH (should be SJ).
C["C26-0014"] = claim("C26-0014", "M1005", BAYSTATE, CX, CDX, [
    ("2026-02-05", "S9500", [], "1", "150.00", None),
    ("2026-02-05", "S9374", ["SH"], "1", "70.00", None),
    ("2026-02-05", "S9490", ["SH"], "1", "95.00", None),
    ("2026-02-05", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0014", "PAID 115.00 45", "PAID 64.25 45", "DENIED 4", "PAID 21.25 45")
# Two dates: SJ without any SH; then no primary at all (SH on the first line, SJ after it).
C["C26-0015"] = claim("C26-0015", "M1005", BAYSTATE, CX, CDX, [
    ("2026-02-06", "S9500", [], "1", "150.00", None),
    ("2026-02-06", "S9374", ["SJ"], "1", "70.00", None),
    ("2026-02-06", "J0696", [], "8", "60.00", CEF1()),
    ("2026-02-09", "S9500", ["SH"], "1", "150.00", None),
    ("2026-02-09", "S9374", ["SJ"], "1", "70.00", None),
    ("2026-02-09", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0015", "PAID 115.00 45", "DENIED 4", "PAID 21.25 45", "DENIED 4", "PAID 64.25 45", "PAID 21.25 45")

# MassHealth ACO member with Crohn's disease: TPN is covered (with authorization); nursing is
# not (204). B4185 x 2 at 95% of 46.35 = 88.065 -> 88.07.
C["C26-0020"] = claim("C26-0020", "M2001", PIONEER, "PA26-2001", ["K50.90", "R63.4"], [
    ("2026-02-10", "S9365", [], "1", "300.00", None),
    ("2026-02-10", "B4189", [], "1", "250.00", None),
    ("2026-02-10", "B4185", [], "2", "110.00", None),
    ("2026-02-10", "99601", [], "1", "175.00", None),
], form="837P")
expect("C26-0020", "PAID 232.75 45", "PAID 202.16 45", "PAID 88.07 45", "DENIED 204")
# Same member, same therapy, no state-mandated condition on the claim: not covered.
C["C26-0021"] = claim("C26-0021", "M2001", PIONEER, "PA26-2001", ["E43"], [
    ("2026-02-11", "S9365", [], "1", "300.00", None),
    ("2026-02-11", "B4185", [], "1", "55.00", None),
])
expect("C26-0021", "DENIED 204", "DENIED 204")

# M1002, commercial TPN (B-codes without drug details, priced on the fee schedule).
TPN = ["K91.2", "E43"]
C["C26-0030"] = claim("C26-0030", "M1002", PIONEER, "PA26-1002", TPN, [
    ("2026-01-20", "S9365", [], "1", "300.00", None),
    ("2026-01-20", "B4189", [], "1", "250.00", None),
    ("2026-01-20", "B4185", [], "1", "55.00", None),
], form="837P", numbers=True)
expect("C26-0030", "PAID 232.75 45", "PAID 202.16 45", "PAID 44.03 45")
# The formula is billed on one claim, the per diem for the same date on a later one: paid.
C["C26-0031"] = claim("C26-0031", "M1002", PIONEER, "PA26-1002", TPN, [
    ("2026-01-21", "B4189", [], "1", "250.00", None),
], form="837P", numbers=True)
expect("C26-0031", "PAID 202.16 45")
C["C26-0032"] = claim("C26-0032", "M1002", PIONEER, "PA26-1002", TPN, [
    ("2026-01-21", "S9365", [], "1", "300.00", None),
], form="837P", numbers=True)
expect("C26-0032", "PAID 232.75 45")

# M1003, hemophilia A: factor VIII from two kits (KP/KQ), per diem, nursing.
HEMO = ["D66"]
H = "PA26-1003"
C["C26-0040"] = claim("C26-0040", "M1003", PIONEER, H, HEMO, [
    ("2026-02-02", "S9345", [], "1", "200.00", None),
    ("2026-02-02", "J7192", ["KP"], "1000", "1800.00", drug("68516-4601-2", "1000", "F2", "3000 IU", "every 48 hours", 10)),
    ("2026-02-02", "J7192", ["KQ"], "2000", "3500.00", drug(FACTOR8_2000, "2000", "F2", "3000 IU", "every 48 hours", 10)),
    ("2026-02-02", "99601", [], "1", "175.00", None),
    ("2026-02-02", "99602", [], "2", "150.00", None),
])
expect("C26-0040", "PAID 156.75 45", "PAID 1340.70 45", "PAID 2607.60 45", "PAID 147.25 45", "PAID 137.75 45")
# The first factor VIII line billed again electronically on a new claim: exact duplicate (18).
C["C26-0041"] = claim("C26-0041", "M1003", PIONEER, H, HEMO, [
    ("2026-02-02", "J7192", ["KP"], "1000", "1800.00", drug("68516-4601-2", "1000", "F2", "3000 IU", "every 48 hours", 10)),
], form="837P")
expect("C26-0041", "DENIED 18")
# Two identical nursing visits on one claim: the second is a duplicate of the first.
# Factor VIII billed in UN instead of F2.
C["C26-0042"] = claim("C26-0042", "M1003", PIONEER, H, HEMO, [
    ("2026-02-23", "J7192", [], "1000", "1800.00", drug("68516-4601-2", "1000", "F2", "1000 IU", "every 48 hours", 10)),
    ("2026-02-23", "S9345", [], "1", "200.00", None),
    ("2026-02-23", "99601", [], "1", "175.00", None),
    ("2026-02-23", "99601", [], "1", "175.00", None),
    ("2026-02-25", "J7192", [], "1000", "1800.00", drug(FACTOR8_1000, "1000", "UN", "1000 IU", "every 48 hours", 10)),
])
expect("C26-0042", "PAID 1340.70 45", "PAID 156.75 45", "PAID 147.25 45", "DENIED 18", "DENIED 16")

# M1004: nursing under an authorization of 6 units, no provider contract (100% of fee
# schedule). Units: C26-0050 uses 3, C26-0051 one more (its catheter care line is denied and
# uses none), C26-0052 one more then 2 would exceed (198, no partial payment), C26-0053 uses
# the last one and the next line is denied (198).
NURSE = ["Z45.2", "D69.6"]
U = "PA26-1004"
C["C26-0050"] = claim("C26-0050", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-01-12", "99601", [], "1", "160.00", None),
    ("2026-01-12", "99602", [], "2", "145.00", None),
])
expect("C26-0050", "PAID 155.00 45", "PAID 145.00")
C["C26-0051"] = claim("C26-0051", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-01-19", "99601", [], "1", "160.00", None),
    ("2026-01-19", "S5498", [], "1", "25.00", None),
])
expect("C26-0051", "PAID 155.00 45", "DENIED 107")
C["C26-0052"] = claim("C26-0052", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-01-26", "99601", [], "1", "160.00", None),
    ("2026-01-26", "99602", [], "2", "145.00", None),
], form="837P", numbers=True)
expect("C26-0052", "PAID 155.00 45", "DENIED 198")
C["C26-0053"] = claim("C26-0053", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-02-02", "99601", [], "1", "160.00", None),
    ("2026-02-02", "99602", [], "1", "72.50", None),
])
expect("C26-0053", "PAID 155.00 45", "DENIED 198")

# Eligibility: M3001's coverage ended on 2026-01-31.
SEPSIS = ["A41.9"]
C["C26-0060"] = claim("C26-0060", "M3001", BAYSTATE, "PA26-3001", SEPSIS, [
    ("2026-01-20", "S9500", [], "1", "150.00", None),
    ("2026-01-20", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0060", "PAID 115.00 45", "PAID 21.25 45")
C["C26-0061"] = claim("C26-0061", "M3001", BAYSTATE, "PA26-3001", SEPSIS, [
    ("2026-02-10", "S9500", [], "1", "150.00", None),
    ("2026-02-10", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0061", "DENIED 27", "DENIED 27")
# Unknown member with an unknown authorization: 31 takes the charge, 197 follows at 0.00.
C["C26-0062"] = claim("C26-0062", "M9999", BAYSTATE, "PA26-9999", SEPSIS, [
    ("2026-02-10", "S9500", [], "1", "150.00", None),
    ("2026-02-10", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0062", "DENIED 31 197", "DENIED 31 197")

# Prior authorization, one cause per claim (M1001).
C["C26-0070"] = claim("C26-0070", M, BAYSTATE, "PA26-5001", OPAT, [
    ("2026-02-16", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0070", "DENIED 197")
C["C26-0071"] = claim("C26-0071", M, BAYSTATE, "PA26-5002", OPAT, [
    ("2026-02-17", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0071", "DENIED 197")
C["C26-0072"] = claim("C26-0072", M, BAYSTATE, "PA26-5003", OPAT, [
    ("2026-02-18", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0072", "DENIED 197")
C["C26-0073"] = claim("C26-0073", M, BAYSTATE, None, OPAT, [
    ("2026-02-19", "S9500", [], "1", "150.00", None),
    ("2026-02-19", "J0696", [], "8", "60.00", CEF1()),
], form="837P")
expect("C26-0073", "DENIED 197", "DENIED 197")
C["C26-0074"] = claim("C26-0074", M, BAYSTATE, "PA26-0000", OPAT, [
    ("2026-02-20", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0074", "DENIED 197")
# Another member's authorization.
C["C26-0075"] = claim("C26-0075", "M1005", BAYSTATE, A, CDX, [
    ("2026-02-20", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0075", "DENIED 197")
# A code the authorization does not cover (vancomycin), next to one it does.
C["C26-0076"] = claim("C26-0076", M, BAYSTATE, A, OPAT, [
    ("2026-02-23", "J3370", [], "4", "45.00", drug("00409-6509-01", "2", "UN", "2 g", "q12h", 120)),
    ("2026-02-23", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0076", "DENIED 197", "PAID 21.25 45")
# After the authorization's end date.
C["C26-0077"] = claim("C26-0077", M, BAYSTATE, A, OPAT, [
    ("2026-07-06", "S9500", [], "1", "150.00", None),
    ("2026-07-06", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0077", "DENIED 197", "DENIED 197")
# Effective dating: in March the new ceftriaxone AWP (13.75: 2 x 13.75 x 85% = 23.375 ->
# 23.38) and the old S9500 rate; in April the new S9500 rate (121.50).
C["C26-0078"] = claim("C26-0078", M, BAYSTATE, A, OPAT, [
    ("2026-03-02", "S9500", [], "1", "150.00", None),
    ("2026-03-02", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0078", "PAID 115.00 45", "PAID 23.38 45")
C["C26-0079"] = claim("C26-0079", M, BAYSTATE, A, OPAT, [
    ("2026-04-06", "S9500", [], "1", "150.00", None),
    ("2026-04-06", "J0696", [], "8", "60.00", CEF1()),
], form="837P")
expect("C26-0079", "PAID 121.50 45", "PAID 23.38 45")

# M1006 (another plan), provider without a contract: no price in effect yet (16) in March;
# paid at 100% of the fee schedule and AWP - 0% in May.
VANC = ["T84.50XA"]
C["C26-0080"] = claim("C26-0080", "M1006", NORTHSHORE, "PA26-1006", VANC, [
    ("2026-03-09", "S9502", [], "1", "140.00", None),
    ("2026-03-09", "J3370", [], "4", "45.00", drug("00409-6509-01", "2", "UN", "2 g", "q12h", 120)),
])
expect("C26-0080", "DENIED 16", "DENIED 16")
C["C26-0081"] = claim("C26-0081", "M1006", NORTHSHORE, "PA26-1006", VANC, [
    ("2026-05-11", "S9502", [], "1", "131.00", None),
    ("2026-05-11", "J3370", [], "4", "45.00", drug("00409-6509-01", "2", "UN", "2 g", "q12h", 120)),
    ("2026-05-11", "J1642", [], "5", "4.00", drug(HEPARIN_FLUSH, "5", "ML", "500 units", "after each dose")),
])
expect("C26-0081", "PAID 131.00", "PAID 19.60 45", "PAID 2.10 45")

# Manual review (POLICY.md *Manual review*): lines the rules would pay, pended for a person
# (PENDED, 0.00 allowed, the amount the rules computed suggested). Factor VIII 9000 IU at
# AWP 1.635 - 18 % = 12,066.30, allowed the 12,000.00 charged: at least the 10,000.00
# threshold (HIGH_DOLLAR, the PAYMENT_INTEGRITY queue). The pended drug line still supports
# the day's per diem (95 % of 165.00). `claims-pipeline demo` pays it through the review API.
C["C26-0111"] = claim("C26-0111", "M1003", PIONEER, H, HEMO, [
    ("2026-03-16", "J7192", [], "9000", "12000.00", drug(FACTOR8_1000, "9000", "F2", "9000 IU", "once", 20)),
    ("2026-03-16", "S9345", [], "1", "200.00", None),
], form="837P")
expect("C26-0111", "PENDED HIGH_DOLLAR 12000.00", "PAID 156.75 45")
# J9999, an antineoplastic not otherwise classified, priced by its NDC (2 x 412.50 at AWP - 0 %,
# no contract): the plan reviews NOC codes whatever the amount (NOC_REVIEW, the CLINICAL queue).
C["C26-0110"] = claim("C26-0110", "M1006", NORTHSHORE, "PA26-1007", ["C49.9"], [
    ("2026-05-18", "J9999", [], "2", "900.00", drug(NOC_ANTINEOPLASTIC, "2", "UN", "200 mg", "every 21 days", 60)),
])
expect("C26-0110", "PENDED NOC_REVIEW 825.00")

# Front-end cases (M1001 on March dates).
FE = lambda cid, lines, **kw: claim(cid, M, BAYSTATE, A, OPAT, lines, **kw)  # noqa: E731
# One of two lines breaks the schema (units 0): both lines are rejected.
C["C26-0090"] = FE("C26-0090", [
    ("2026-03-03", "S9500", [], "1", "150.00", None),
    ("2026-03-03", "J0696", [], "0", "60.00", CEF1()),
])
expect("C26-0090", "REJECTED CLAIM_REJECTED", "REJECTED SCHEMA")
C["C26-0091"] = FE("C26-0091", [("2026-03-04", "S9500", [], "1", "150.00", None, {"form": "UB-04"})])
expect("C26-0091", "REJECTED FORM")
# A week on one line (RD8 range): rejected; the claim's other line goes with it.
C["C26-0092"] = FE("C26-0092", [
    ("2026-03-05", "S9500", [], "1", "150.00", None),
    ("2026-03-05", "J0696", [], "56", "420.00", CEF1(), {"service_date_to": "2026-03-11"}),
])
expect("C26-0092", "REJECTED CLAIM_REJECTED", "REJECTED MULTI_DATE")
C["C26-0093"] = FE("C26-0093", [("2026-03-06", "J0696", [], "8", "60.00", CEF1(), {"provider_npi": BAD_NPI})])
expect("C26-0093", "REJECTED NPI")
# Line number 3 on a claim of 2 lines.
C["C26-0094"] = FE("C26-0094", [
    ("2026-03-09", "S9500", [], "1", "150.00", None),
    ("2026-03-09", "J0696", [], "8", "60.00", CEF1(), {"line_number": 3}),
])
expect("C26-0094", "REJECTED CLAIM_REJECTED", "REJECTED CLAIM_REJECTED", "REJECTED LINE_NUMBER")
# ... and the real line 2 arrives after the claim was rejected: rejected with the claim's reason.
C26_0094_LINE2 = dict(C["C26-0094"][1], line_number=2)
# Diagnosis codes differ between lines: every line is rejected, and so is a late third line
# (with the claim's reason).
C["C26-0095"] = FE("C26-0095", [
    ("2026-03-10", "S9500", [], "1", "150.00", None),
    ("2026-03-10", "J0696", [], "8", "60.00", CEF1(), {"diagnosis_codes": ["M86.171", "E11.9"]}),
    ("2026-03-10", "99601", [], "1", "180.00", None),
])
expect("C26-0095", "REJECTED HEADER_MISMATCH", "REJECTED HEADER_MISMATCH", "REJECTED HEADER_MISMATCH")
# Line 1 twice with different content, then line 2.
C["C26-0096"] = FE("C26-0096", [
    ("2026-03-11", "S9500", [], "1", "150.00", None),
    ("2026-03-11", "J0696", [], "8", "60.00", CEF1()),
])
expect("C26-0096", "REJECTED DUPLICATE_LINE_NUMBER", "REJECTED DUPLICATE_LINE_NUMBER")
C26_0096_LINE1_AGAIN = dict(C["C26-0096"][0], charge_amount="175.00")
# Line 1 sent twice identically before the claim completes: both are answered (twice the same
# decision) once the claim is decided (CONTRACT.md: every input message is answered).
C["C26-0097"] = FE("C26-0097", [
    ("2026-03-12", "S9500", [], "1", "150.00", None),
    ("2026-03-12", "J0696", [], "8", "60.00", CEF1()),
], form="837P")
expect("C26-0097", "PAID 115.00 45", "PAID 23.38 45")
# Lines 1 and 2 of 3 arrive; line 3 never does.
C["C26-0098"] = FE("C26-0098", [
    ("2026-03-13", "S9500", [], "1", "150.00", None),
    ("2026-03-13", "J0696", [], "8", "60.00", CEF1()),
    ("2026-03-13", "99601", [], "1", "180.00", None),
])
expect("C26-0098", "REJECTED INCOMPLETE", "REJECTED INCOMPLETE", None)
# Corrections and voids (claim frequency 7 and 8; CONTRACT.md *Corrections and voids*).
def corrects(lines, frequency, original):
    """The lines of a replacement (7) or void (8) naming `original`."""
    return [dict(ln, claim_frequency=frequency, original_claim_id=original) for ln in lines]


# C26-0008's per diem and catheter care were denied (107: no drug that day); the provider
# replaces the claim with the drug line added: C26-0008 is reversed (0.00 for its denied
# lines) and the replacement is paid.
C["C26-0100"] = corrects(claim("C26-0100", M, BAYSTATE, A, OPAT, [
    ("2026-01-14", "S9500", [], "1", "150.00", None),
    ("2026-01-14", "S5498", [], "1", "25.00", None),
    ("2026-01-14", "J0696", [], "8", "60.00", CEF1()),
]), "7", "C26-0008")
expect("C26-0100", "PAID 115.00 45", "PAID 18.75 45", "PAID 21.25 45")
expect_reversal("C26-0008", "REVERSED 0.00 107", "REVERSED 0.00 107")
# M1004's first nursing claim (3 units) is voided: reversed, the void's line VOIDED, and the 3
# units are free again, so a later claim for 3 units is paid in full (6 of 6).
C["C26-0101"] = corrects(claim("C26-0101", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-01-12", "99601", [], "1", "160.00", None),
]), "8", "C26-0050")
expect("C26-0101", "VOIDED 0.00")
expect_reversal("C26-0050", "REVERSED -155.00 45", "REVERSED -145.00")
C["C26-0102"] = claim("C26-0102", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-02-09", "99601", [], "1", "160.00", None),
    ("2026-02-09", "99602", [], "2", "145.00", None),
])
expect("C26-0102", "PAID 155.00 45", "PAID 145.00")
# Corrections that fail their check, every line rejected: C26-0050 was already voided; no
# claim C26-0999; C26-0002 was billed by another provider.
C["C26-0103"] = corrects(claim("C26-0103", "M1004", NORTHSHORE, U, NURSE, [
    ("2026-01-12", "99601", [], "1", "160.00", None),
]), "8", "C26-0050")
expect("C26-0103", "REJECTED ORIGINAL_ALREADY_REPLACED")
C["C26-0104"] = corrects(claim("C26-0104", M, BAYSTATE, A, OPAT, [
    ("2026-01-22", "S9500", [], "1", "150.00", None),
]), "7", "C26-0999")
expect("C26-0104", "REJECTED ORIGINAL_NOT_FOUND")
C["C26-0105"] = corrects(claim("C26-0105", M, PIONEER, A, OPAT, [
    ("2026-01-06", "S9500", [], "1", "150.00", None),
]), "7", "C26-0002")
expect("C26-0105", "REJECTED ORIGINAL_MISMATCH")
# Front end: a replacement that names no original; a frequency the contract does not know.
C["C26-0106"] = claim("C26-0106", M, BAYSTATE, A, OPAT, [
    ("2026-01-23", "S9500", [], "1", "150.00", None, {"claim_frequency": "7"}),
])
expect("C26-0106", "REJECTED ORIGINAL_CLAIM_ID")
C["C26-0107"] = claim("C26-0107", M, BAYSTATE, A, OPAT, [
    ("2026-01-23", "S9500", [], "1", "150.00", None, {"claim_frequency": "5"}),
])
expect("C26-0107", "REJECTED CLAIM_FREQUENCY")

# A sixth line for C26-0001 after it was decided (the provider raised line_count): closed.
C26_0001_LATE = dict(C["C26-0001"][4], line_number=6, line_count=6, procedure_code="S5501")


def L(cid, *numbers):  # noqa: N802
    return [C[cid][n - 1] for n in numbers]


def raw(text: str) -> str:
    """A submitted message that is not a JSON object (it goes to the DLQ)."""
    return text


def arrival() -> list:
    """Submission order: mostly claim by claim, some interleaved, some lines out of order."""
    order: list = []
    add = order.extend
    add(L("C26-0001", 1, 2, 3, 4, 5))
    add(L("C26-0002", 2, 1, 3))
    add(L("C26-0050", 1, 2))
    add(L("C26-0003", 1, 2, 3))
    add(L("C26-0004", 1, 2, 3, 4))
    order.append(raw("this is not JSON: ISA*00*          *00*          *ZZ*SUBMITTER~"))
    add(L("C26-0005", 1, 2, 3, 4))
    add(L("C26-0006", 1, 2, 3))
    # C26-0007 and C26-0008 interleaved
    add(L("C26-0007", 1) + L("C26-0008", 1) + L("C26-0007", 2) + L("C26-0008", 2) + L("C26-0007", 3))
    add(L("C26-0009", 1, 2))
    add(L("C26-0010", 1, 2, 3))
    add(L("C26-0051", 2, 1))
    # retry of an already decided line: answered with the stored decision, units not re-used
    add(L("C26-0050", 1))
    add(L("C26-0030", 1, 2, 3))
    add(L("C26-0031", 1))
    add(L("C26-0032", 1))
    add(L("C26-0060", 1, 2))
    add(L("C26-0011", 1, 2, 3))
    # C26-0052 interleaved with the eligibility claim
    add(L("C26-0052", 1) + L("C26-0061", 1) + L("C26-0052", 2) + L("C26-0061", 2))
    add(L("C26-0012", 1, 2, 3, 4, 5))
    add(L("C26-0040", 1, 2, 3))
    add(L("C26-0013", 1, 2, 3, 4, 5))
    add(L("C26-0040", 4, 5))
    add(L("C26-0041", 1))
    add(L("C26-0053", 1, 2))
    add(L("C26-0014", 4, 3, 2, 1))
    add(L("C26-0015", 1, 2, 3, 4, 5, 6))
    order.append(raw('["C26-0016", 1, "S9500"]'))
    add(L("C26-0020", 1, 2, 3, 4))
    add(L("C26-0021", 1, 2))
    add(L("C26-0062", 1, 2))
    add(L("C26-0070", 1))
    add(L("C26-0071", 1))
    add(L("C26-0072", 1))
    add(L("C26-0073", 1, 2))
    add(L("C26-0074", 1))
    add(L("C26-0075", 1))
    add(L("C26-0042", 1, 2, 3, 4, 5))
    add(L("C26-0076", 1, 2))
    add(L("C26-0077", 1, 2))
    add(L("C26-0078", 1, 2))
    add(L("C26-0079", 1, 2))
    add(L("C26-0080", 1, 2))
    # front end
    add(L("C26-0090", 1, 2))
    add(L("C26-0091", 1))
    add(L("C26-0092", 1, 2))
    add(L("C26-0093", 1))
    add(L("C26-0093", 1))  # the rejected line again: the stored rejection is repeated
    add(L("C26-0094", 1, 2) + [C26_0094_LINE2])
    add(L("C26-0095", 1, 2, 3))
    add(L("C26-0096", 1) + [C26_0096_LINE1_AGAIN] + L("C26-0096", 2))
    add(L("C26-0097", 1, 1, 2))
    add(L("C26-0098", 1, 2))
    order.append(C26_0001_LATE)
    order.append(raw('{"claim_id": "C26-0099", "line_number": 1, "line_count": 1, "form": "837P"'))
    add(L("C26-0081", 3, 1, 2))
    # manual review: pended lines
    add(L("C26-0110", 1))
    add(L("C26-0111", 2, 1))
    # corrections and voids
    add(L("C26-0100", 1, 2, 3))
    add(L("C26-0101", 1))
    add(L("C26-0102", 1, 2))
    add(L("C26-0103", 1))
    add(L("C26-0104", 1))
    add(L("C26-0105", 1))
    add(L("C26-0106", 1))
    add(L("C26-0107", 1))
    return order


def dumps(obj) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, separators=(", ", ": "))


def main() -> None:
    ref = HERE / "reference"
    ref.mkdir(exist_ok=True)
    for table, records in REFERENCE.items():
        (ref / f"{table}.jsonl").write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    lines = arrival()
    (HERE / "claims.jsonl").write_text("".join(dumps(r) + "\n" for r in lines), encoding="utf-8")
    claims = {r["claim_id"] for r in lines if isinstance(r, dict)}
    print(f"{len(lines)} lines, {len(claims)} claims")


if __name__ == "__main__":
    main()
