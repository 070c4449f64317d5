"""A deterministic synthetic workload: reference data and a realistic claim mix.

Claims of 1-8 lines over many members exercise every rule (per diem with its drug,
concurrency, KP/KQ, JW, nursing, duplicates, authorized units, MassHealth, bad NDCs,
front-end rejections, DLQ bytes). Used by the benchmark and the scale tests; the data is
synthetic, not PHI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import orjson

from contract.models import _npi_check_digit_ok

DRUGS = [  # (ndc11, printed, hcpcs, billing unit, package type, awp per unit)
    ("00409495001", "0409-4950-01", "J0696", "ML", "SINGLE_USE", "2.35"),
    ("63323038710", "63323-387-10", "J1100", "ML", "MULTI_USE", "0.81"),
    ("00338055318", "00338-0553-18", "J7050", "ML", "SINGLE_USE", "0.02"),
    ("00944293010", "00944-2930-10", "J7192", "F2", "SINGLE_USE", "1.42"),
    ("25021019310", "25021-0193-1", "J2543", "GR", "SINGLE_USE", "7.40"),
    ("00069305001", "00069-3050-01", "J0878", "GR", "SINGLE_USE", "1.95"),
]
PER_DIEM = ["S9500", "S9501", "S9502", "S9338", "S9336"]
NUTRITION = [("S9365", "B4185")]


def _npi(seed: int) -> str:
    base = f"1{seed:08d}"
    for check in range(10):
        if _npi_check_digit_ok(base + str(check)):
            return base + str(check)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Workload:
    reference: dict[str, list[dict[str, Any]]]
    lines: list[bytes]


def generate(n_lines: int, members: int = 500, seed: int = 7, corrections: float = 0.0) -> Workload:
    """About `n_lines` submitted lines (whole claims) and the reference data they need.

    With `corrections` > 0, about that share of claims is followed by a replacement or void
    of an earlier claim of the same member (sometimes one already corrected, unknown, or of
    another provider), and by a re-delivery of an earlier line; the claims themselves are
    the same as without (corrections draw from a random generator of their own)."""
    rng = random.Random(seed)
    npis = [_npi(i) for i in range(1, 21)]
    fix = _Corrections(random.Random(seed + 1), corrections, npis)
    day0 = date(2026, 3, 2)
    ref: dict[str, list[dict[str, Any]]] = {t: [] for t in
                                            ("members", "authorizations", "drugs", "awp-prices", "fee-schedule", "provider-contracts")}
    for ndc, _, _, unit, pkg, awp in DRUGS:
        ref["drugs"].append({"ndc": ndc, "description": f"drug {ndc}", "billing_unit": unit, "package_type": pkg})
        ref["awp-prices"].append({"ndc": ndc, "awp_per_unit": awp, "effective_from": "2026-01-01"})
        ref["awp-prices"].append({"ndc": ndc, "awp_per_unit": str(Decimal(awp) * Decimal("1.05")), "effective_from": "2026-06-01"})
    for code, rate in [*((c, "95.00") for c in PER_DIEM), ("S9365", "180.00"), ("B4185", "12.50"),
                       ("99601", "140.00"), ("99602", "60.00"), ("S5498", "18.00")]:
        ref["fee-schedule"].append({"procedure_code": code, "rate": rate, "effective_from": "2026-01-01"})
    for i, npi in enumerate(npis[:15]):
        ref["provider-contracts"].append({"provider_npi": npi, "awp_discount_pct": str(10 + i % 8), "fee_schedule_pct": str(90 + i % 15)})
    codes = [*PER_DIEM, "S9365", "B4185", "99601", "99602", "S5498", *(d[2] for d in DRUGS)]
    for m in range(members):
        mid = f"SYN{m:06d}"
        plan = "MASSHEALTH_ACO" if m % 17 == 0 else "COMMERCIAL"
        ref["members"].append({"member_id": mid, "plan": plan, "eligible_from": "2025-01-01",
                               "eligible_to": "2026-02-28" if m % 41 == 0 else None})
        status = "APPROVED" if m % 23 else "PENDING"
        units = None if m % 3 else "40"
        ref["authorizations"].append({"authorization_number": f"PA{m:06d}", "member_id": mid, "status": status,
                                      "procedure_codes": codes, "start_date": "2026-01-01", "end_date": "2026-12-31",
                                      "approved_units": units})

    lines: list[bytes] = []
    claim_no = 0
    while len(lines) < n_lines:
        claim_no += 1
        m = rng.randrange(members)
        claim = _claim(rng, f"SYN-{claim_no:07d}", m, npis[rng.randrange(len(npis))], day0 + timedelta(days=rng.randrange(200)))
        lines += [orjson.dumps(ln) for ln in claim]
        lines += [orjson.dumps(ln) for ln in fix.after(claim)]
        if rng.random() < 0.01:
            lines.append(b"\x00garbage-not-json")
    return Workload(reference=ref, lines=lines)


class _Corrections:
    """Replacements, voids and re-deliveries after the claims `generate` makes."""

    def __init__(self, rng: random.Random, share: float, npis: list[str]):
        self.rng, self.share, self.npis = rng, share, npis
        self.by_member: dict[str, list[list[dict[str, Any]]]] = {}
        self.sent: list[dict[str, Any]] = []

    def after(self, claim: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.share:
            return []
        member = claim[0]["member_id"]
        earlier = self.by_member.setdefault(member, [])
        out: list[dict[str, Any]] = []
        rng = self.rng
        if earlier and rng.random() < self.share:
            target = rng.choice(earlier)
            claim_id = f"{claim[0]['claim_id']}-C"
            original = target[0]["claim_id"] if rng.random() > 0.05 else "SYN-UNKNOWN"
            npi = target[0]["provider_npi"] if rng.random() > 0.05 else rng.choice(self.npis)
            if rng.random() < 0.65:  # a replacement: the lines again, some charges corrected
                body = [{**ln, "charge_amount": str(Decimal(ln["charge_amount"]) + rng.choice([0, 5]))} for ln in target]
                frequency = "7"
            else:  # a void: its first line
                body, frequency = [{**target[0], "line_count": 1}], "8"
            out = [{**ln, "claim_id": claim_id, "provider_npi": npi, "line_count": len(body),
                    "claim_frequency": frequency, "original_claim_id": original} for ln in body]
            earlier.append(out)
        earlier.append(claim)
        self.sent += claim + out
        if rng.random() < self.share / 2:
            out.append(rng.choice(self.sent))  # a re-delivery of any earlier line
        return out


def _claim(rng: random.Random, claim_id: str, m: int, npi: str, day: date) -> list[dict[str, Any]]:
    mid = f"SYN{m:06d}"
    dx = ["K50.90"] if m % 17 == 0 and rng.random() < 0.5 else ["A41.9"]
    form = "837P" if rng.random() < 0.3 else "CMS-1500"
    scenario = rng.random()
    body: list[dict[str, Any]] = []

    def drug_line(ndc_i: int, qty: str, mods: list[str] | None = None, printed: str | None = None) -> dict[str, Any]:
        ndc, shown, code, unit, _, _ = DRUGS[ndc_i]
        return {"procedure_code": code, "units": "1", "modifiers": mods or [], "charge_amount": str(Decimal(qty) * 4),
                "drug": {"ndc": printed or shown, "quantity": qty, "unit": unit, "dosage": "1 g", "frequency": "q24h",
                         "duration_minutes": 30}}

    ndc_i = rng.randrange(len(DRUGS))
    if scenario < 0.45:  # per diem with its drug, sometimes nursing
        body.append({"procedure_code": rng.choice(PER_DIEM), "units": "1", "charge_amount": "150.00"})
        body.append(drug_line(ndc_i, str(rng.choice([5, 10, 20]))))
        if rng.random() < 0.4:
            body.append({"procedure_code": "99601", "units": "1", "charge_amount": "180.00"})
            if rng.random() < 0.6:
                body.append({"procedure_code": "99602", "units": str(rng.randint(1, 3)), "charge_amount": "90.00"})
    elif scenario < 0.55:  # concurrency
        body.append({"procedure_code": "S9500", "units": "1", "charge_amount": "150.00"})
        body.append({"procedure_code": "S9338", "units": "1", "modifiers": [rng.choice(["SH", "SH", "SJ", ""])] if rng.random() < 0.9 else [], "charge_amount": "150.00"})
        body.append(drug_line(ndc_i, "10"))
    elif scenario < 0.63:  # multi-NDC formulation
        body.append(drug_line(0, "10", ["KP"] if rng.random() < 0.8 else []))
        body.append({**drug_line(0, "5", ["KQ"]), "drug": {**drug_line(2, "5")["drug"], "unit": "ML"}})
    elif scenario < 0.71:  # wastage
        i = rng.choice([0, 1, 2])
        body.append(drug_line(i, "8"))
        body.append(drug_line(i, "2", ["JW"]))
    elif scenario < 0.78:  # nutrition
        body.append({"procedure_code": "S9365", "units": "1", "charge_amount": "250.00"})
        body.append({"procedure_code": "B4185", "units": str(rng.randint(1, 4)), "charge_amount": "60.00"})
    elif scenario < 0.85:  # bad drug data
        bad = rng.choice([{"ndc": "1234567890"}, {"ndc": "99999-9999-99", "quantity": "1", "unit": "ML", "dosage": "x", "frequency": "y"}, None])
        line = drug_line(ndc_i, "3")
        line["drug"] = bad
        body.append(line)
    elif scenario < 0.92:  # plain drug lines, often repeated across claims (duplicates)
        body.append(drug_line(ndc_i, str(rng.choice([1, 2, 3]))))
    else:  # catheter care and supplies of a longer claim
        for k in range(rng.randint(3, 8)):
            body.append({"procedure_code": rng.choice(["S5498", "S9500", "J0696"]) if k else "S9500", "units": "1", "charge_amount": "40.00",
                         **({"drug": drug_line(0, "1")["drug"]} if k % 3 == 2 else {})})
    lines = []
    for n, spec in enumerate(body, 1):
        lines.append({
            "claim_id": claim_id, "line_number": n, "line_count": len(body), "form": form, "member_id": mid,
            "provider_npi": npi, "authorization_number": f"PA{m:06d}", "service_date": day.isoformat(),
            "diagnosis_codes": dx, "modifiers": [], **spec,
        })
        lines[-1]["modifiers"] = [x for x in lines[-1]["modifiers"] if x]
    if rng.random() < 0.01 and len(lines) > 1:
        lines[-1]["member_id"] = mid + "X"  # header mismatch: the whole claim is rejected
    if rng.random() < 0.01:
        lines[0]["form"] = "UB-04"
    return lines


def write(workload: Workload, directory) -> None:
    """Write the workload as batch-mode files: `reference/<table>.jsonl` and `claims.jsonl`."""
    from pathlib import Path

    directory = Path(directory)
    (directory / "reference").mkdir(parents=True, exist_ok=True)
    for table, rows in workload.reference.items():
        (directory / "reference" / f"{table}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    (directory / "claims.jsonl").write_bytes(b"".join(ln + b"\n" for ln in workload.lines))
