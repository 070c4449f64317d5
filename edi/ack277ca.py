"""The 277CA claim acknowledgement (005010X214), once the front end has ruled on a claim.

Written by hand: neither library writes a 277CA (pyx12 validates one, x12sdk does not
support X214 at all). The tests validate every 277CA written here with pyx12's X214 map.

A claim is *accepted* when all of its lines entered the pipeline (STC*A2:20, "accepted for
processing", with REF*1K naming the claim id the payer tracks it by), *rejected* when the
front end rejected any of them (STC*A3 "returned as unprocessable", with a claim status code
per rejection reason, and the rejected lines in loop 2220D). The claim id travels in TRN*2
(CLM01) and REF*1K.

Hierarchy: 2000A payer (information source) > 2000B submitter (information receiver, with
the accepted/rejected counts and amounts) > 2000C billing provider > 2000D patient/claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from edi.parse837 import Claim
from edi.x12 import Delimiters, Party, Writer, envelope, x12_date, x12_decimal
from contract.models import CORRECTION_REJECTIONS

VERSION = "005010X214"
ADJUDICATED = "claims.lines.adjudicated"
REJECTED = "claims.lines.rejected"

#: front-end rejection code -> (claim status code, entity identifier code or None)
STATUS_BY_REJECTION: dict[str, tuple[str, str | None]] = {
    "MULTI_DATE": ("187", None),  # date(s) of service
    "NPI": ("562", "85"),  # entity's NPI, billing provider
    "FORM": ("21", None),  # missing or invalid information
    "SCHEMA": ("21", None),
    "LINE_NUMBER": ("21", None),
    "DUPLICATE_LINE_NUMBER": ("21", None),
    "HEADER_MISMATCH": ("21", None),
    "INCOMPLETE": ("21", None),
    "CLAIM_CLOSED": ("21", None),
    "CLAIM_REJECTED": ("21", None),
}
#: a SCHEMA rejection about one of these fields has a more precise claim status code
STATUS_BY_FIELD: dict[str, tuple[str, str | None]] = {
    "service_date": ("187", None),
    "service_date_to": ("187", None),
    "procedure_code": ("454", None),  # procedure code for services rendered
    "provider_npi": ("562", "85"),
    "member_id": ("33", "IL"),  # subscriber and subscriber id mismatch / missing
}


@dataclass(frozen=True)
class Reason:
    code: str
    field: str | None = None
    message: str = ""

    def status(self) -> tuple[str, str | None]:
        if self.code == "SCHEMA" and self.field:
            top = self.field.split(".")[0]
            if top in STATUS_BY_FIELD:
                return STATUS_BY_FIELD[top]
        return STATUS_BY_REJECTION.get(self.code, ("21", None))


@dataclass(frozen=True)
class ClaimStatus:
    """The front end's ruling on one claim: accepted into the pipeline, or rejected."""

    claim: Claim
    accepted: bool
    reasons: tuple[Reason, ...] = ()
    line_reasons: Mapping[int, tuple[Reason, ...]] = field(default_factory=dict)


def status_from_records(claim: Claim, records: Iterable[Mapping[str, Any]]) -> ClaimStatus | None:
    """The claim's status from the records the pipeline published (each with its `topic`,
    as batch mode prints them), or None while some of its lines have no answer yet."""
    numbers = {int(line["line_number"]) for line in claim.lines}
    decided: set[int] = set()
    rejected: dict[int | None, list[Reason]] = {}
    for rec in records:
        if rec.get("claim_id") != claim.claim_id:
            continue
        if rec.get("topic") == ADJUDICATED:
            decided.add(int(rec["line_number"]))
        elif rec.get("topic") == REJECTED:
            reasons = [Reason(str(r.get("code", "")), r.get("field"), str(r.get("message", "")))
                       for r in rec.get("reasons", [])]
            if reasons and all(r.code in CORRECTION_REJECTIONS for r in reasons):
                # a replacement or void is accepted like any claim; the check of the claim it
                # corrects comes later, when it is adjudicated (its outcome, not the front end's)
                decided.add(int(rec["line_number"]))
                continue
            rejected.setdefault(rec.get("line_number"), []).extend(reasons)
    if rejected:
        every = tuple(dict.fromkeys(r for rs in rejected.values() for r in rs))
        by_line = {n: tuple(dict.fromkeys(rs)) for n, rs in rejected.items() if n is not None}
        return ClaimStatus(claim, accepted=False, reasons=every, line_reasons=by_line)
    if numbers <= decided:
        return ClaimStatus(claim, accepted=True)
    return None


@dataclass(frozen=True)
class Source:
    """The payer sending the 277CA (loop 2000A)."""

    name: str = "SYNTHETIC HEALTH PLAN"
    id: str = "SYNPLAN01"
    interchange_id: Party = Party("ZZ", "SYNPLAN01")


def build(
    claims_status: Iterable[ClaimStatus] | ClaimStatus,
    *,
    source: Source = Source(),
    receiver: Party | None = None,
    batch_reference: str | None = None,
    received: datetime | None = None,
    control_number: int,
    usage: str = "P",
    now: datetime | None = None,
) -> str:
    """One 277CA transaction set covering the given claims (call it per claim for one each).
    `control_number` (ISA13, GS06, TRN02 of loop 2000A) comes from the sender's sequence in
    the ledger; `usage` is ISA15, the 837's (`T` for a test interchange)."""
    statuses = [claims_status] if isinstance(claims_status, ClaimStatus) else list(claims_status)
    if not statuses:
        raise ValueError("a 277CA needs at least one claim")
    now = now or datetime.now(timezone.utc)
    received = received or now
    d = Delimiters()
    w = Writer(d)
    today = now.strftime("%Y%m%d")
    first = statuses[0].claim
    batch = batch_reference or first.batch_reference or f"{first.transaction_set or control_number}"
    w.add("BHT", "0085", "08", batch, today, now.strftime("%H%M"), "TH")
    hl = 1
    w.add("HL", "1", "", "20", "1")
    w.add("NM1", "PR", "2", source.name, "", "", "", "", "PI", source.id)
    w.add("TRN", "1", f"{control_number:09d}")
    w.add("DTP", "050", "D8", received.strftime("%Y%m%d"))
    w.add("DTP", "009", "D8", today)
    hl += 1
    receiver_hl = hl
    w.add("HL", str(hl), "1", "21", "1")
    w.add("NM1", "41", "2", first.submitter_name or "SUBMITTER", "", "", "", "", "46",
          first.submitter_id or (receiver.id if receiver else "SUBMITTER"))
    w.add("TRN", "2", batch)
    total = sum((Decimal(s.claim.total_charge or "0") for s in statuses), Decimal(0))
    accepted = [s for s in statuses if s.accepted]
    rejected = [s for s in statuses if not s.accepted]
    w.add("STC", ("A1", "20"), today, "WQ", _amount(total))
    if accepted:
        w.add("QTY", "90", len(accepted))
    if rejected:
        w.add("QTY", "AA", len(rejected))
    if accepted:
        w.add("AMT", "YU", _amount(sum((Decimal(s.claim.total_charge or "0") for s in accepted), Decimal(0))))
    if rejected:
        w.add("AMT", "YY", _amount(sum((Decimal(s.claim.total_charge or "0") for s in rejected), Decimal(0))))
    by_provider: dict[str, list[ClaimStatus]] = {}
    for s in statuses:
        by_provider.setdefault(s.claim.provider_npi or "", []).append(s)
    for npi, group in by_provider.items():
        hl += 1
        provider_hl = hl
        w.add("HL", str(hl), str(receiver_hl), "19", "1")
        w.add("NM1", "85", "2", group[0].claim.billing_provider_name or "BILLING PROVIDER", "", "", "", "",
              "XX", npi or "0000000000")
        w.add("TRN", "1", "0")
        ok = [s for s in group if s.accepted]
        bad = [s for s in group if not s.accepted]
        w.add("STC", ("A1", "20"), "", "WQ",
              _amount(sum((Decimal(s.claim.total_charge or "0") for s in group), Decimal(0))))
        if ok:
            w.add("QTY", "QA", len(ok))
        if bad:
            w.add("QTY", "QC", len(bad))
        if ok:
            w.add("AMT", "YU", _amount(sum((Decimal(s.claim.total_charge or "0") for s in ok), Decimal(0))))
        if bad:
            w.add("AMT", "YY", _amount(sum((Decimal(s.claim.total_charge or "0") for s in bad), Decimal(0))))
        for s in group:
            hl += 1
            _claim(w, s, hl, provider_hl, today)
    transaction = w.transaction(("277", VERSION), "0001")
    to = receiver or Party("ZZ", first.submitter_id or "SUBMITTER")
    return envelope([transaction], functional_id="HN", version=VERSION, sender=source.interchange_id,
                    receiver=to, control_number=control_number, now=now, d=d, usage=usage)


def _claim(w: Writer, s: ClaimStatus, hl: int, parent: int, today: str) -> None:
    c = s.claim
    last, first = c.patient_name
    w.add("HL", str(hl), str(parent), "PT")
    w.add("NM1", "QC", "1", last or "PATIENT", first or "", "", "", "", "MI", c.member_id or "UNKNOWN")
    w.add("TRN", "2", c.claim_id)
    charge = _amount(Decimal(c.total_charge or "0"))
    if s.accepted:
        w.add("STC", ("A2", "20"), today, "WQ", charge)
    else:
        codes = list(dict.fromkeys(r.status() for r in s.reasons)) or [("21", None)]
        composites = [("A3", code, entity or "") for code, entity in codes[:3]]
        message = "; ".join(dict.fromkeys(f"{r.code}: {r.message}" if r.message else r.code for r in s.reasons))
        w.add("STC", composites[0], today, "U", charge, "", "", "", "", "",
              composites[1] if len(composites) > 1 else "", composites[2] if len(composites) > 2 else "",
              message[:264])
    if s.accepted:
        w.add("REF", "1K", c.claim_id)
    start, end = _claim_dates(c)
    if start:
        if end and end != start:
            w.add("DTP", "472", "RD8", f"{start}-{end}")
        else:
            w.add("DTP", "472", "D8", start)
    if s.accepted:
        return
    for line in c.lines:
        reasons = s.line_reasons.get(int(line["line_number"]))
        if not reasons:
            continue
        code, entity = reasons[0].status()
        w.add("SVC", ("HC", line["procedure_code"], *line.get("modifiers", [])[:4]),
              _amount(Decimal(str(line["charge_amount"] or "0"))), "", "", "", "", x12_decimal(line.get("units")))
        w.add("STC", ("A3", code, entity or ""), today, "U")
        w.add("REF", "FJ", f"{c.claim_id}-{int(line['line_number']):03d}"[-50:])
        start = x12_date(line.get("service_date") or "")
        end = x12_date(line.get("service_date_to") or "")
        if end and end != start:
            w.add("DTP", "472", "RD8", f"{start}-{end}")
        elif start:
            w.add("DTP", "472", "D8", start)


def _claim_dates(c: Claim) -> tuple[str | None, str | None]:
    dates = sorted({x12_date(d) for line in c.lines for d in (line.get("service_date"), line.get("service_date_to"))
                    if d})
    if not dates:
        return None, None
    return dates[0], dates[-1]


def _amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))

