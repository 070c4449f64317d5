"""The ledger tests' harness: a ledger and how to reopen it, the sample reference data and
rulebooks, a claim line to vary, and accepting and deciding lines as the pipeline's steps do."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from contract.models import AdjudicatedLine, ClaimLine
from rules import engine
from rules.rulebook import default_rulebooks
from streams.ledger.store import Intake, Ledger
from streams.pipeline.batch import load_reference_dir

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "streams" / "sample_data"
REF = load_reference_dir(SAMPLE / "reference")
BOOKS = default_rulebooks()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Store:
    """A ledger and how to reopen it (a restart)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ledger = Ledger(url)

    def reopen(self) -> Ledger:
        self.ledger.close()
        self.ledger = Ledger(self.url)
        return self.ledger


def line(claim_id: str = "L1", number: int = 1, count: int = 2, **kw: Any) -> dict[str, Any]:
    obj = {
        "claim_id": claim_id, "line_number": number, "line_count": count, "form": "CMS-1500",
        "member_id": "M1001", "provider_npi": "1245678903", "authorization_number": "PA26-1001",
        "service_date": "2026-01-05", "procedure_code": "S9500", "modifiers": [], "units": "1",
        "charge_amount": "150.00", "diagnosis_codes": ["M86.171"], "drug": None,
    }
    if number == 2 and "procedure_code" not in kw:
        obj.update(procedure_code="J0696", units="8", charge_amount="60.00",
                   drug={"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h"})
    obj.update(kw)
    return obj


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def accept(ledger: Ledger, obj: dict[str, Any], seconds: float = 0.0) -> Intake:
    """Accept a line first seen `seconds` after T0 (the assembly clock starts there)."""
    return ledger.accept(ClaimLine.model_validate(obj), obj, at(seconds))


def decide(ledger: Ledger, lines: list[ClaimLine], now: datetime = T0,
           source: tuple[int, int] | None = None) -> list[AdjudicatedLine] | None:
    work = engine.price(engine.enrich(engine.start(lines, BOOKS, now), REF, BOOKS), REF)
    decided = ledger.decide(work, lambda history: engine.finalize(work, history, BOOKS, now), source)
    return None if decided is None else decided.decisions


def accept_all(ledger: Ledger, objs: list[dict[str, Any]]) -> list[AdjudicatedLine]:
    """Accept lines in order, deciding each claim when it completes; all decisions made."""
    out: list[AdjudicatedLine] = []
    for i, obj in enumerate(objs):
        intake = accept(ledger, obj, float(i))
        out += intake.decisions
        if intake.assembled:
            out += decide(ledger, intake.assembled) or []
    return out


def rejection_codes(intake: Intake) -> list[tuple[str, int | None, str, str | None]]:
    return [(r.claim_id, r.line_number, r.reasons[0].code, r.reasons[0].field) for r in intake.rejections]


def snapshot(ledger: Ledger) -> dict[str, list[tuple]]:
    """Every row of every table, for 'nothing changed' checks."""
    tables = ["claims", "claim_lines", "decisions", "rejections", "paid_lines", "unit_usage", "claim_drug_days",
              "reversals", "corrections"]
    return {t: sorted(tuple(map(str, r)) for r in ledger.rows(t)) for t in tables}


def same_but_time(a: AdjudicatedLine, b: AdjudicatedLine) -> bool:
    return a.model_dump(exclude={"adjudicated_at"}) == b.model_dump(exclude={"adjudicated_at"})
