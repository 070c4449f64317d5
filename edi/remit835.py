"""The 835 remittance advice (005010X221A1) for decided claims.

Written by hand: pyx12 has no 835 writer, and x12sdk's `generate_835` makes synthetic test
data (a denial with CLP02 = 1 and no LQ*HE), not a remittance for given decisions. Every
835 written here is validated in the tests by pyx12's 835 X221A1 map and checked to balance.

One transaction set per claim, all of a call's claims in one interchange:

* BPR (payment `I`/CHK, or notification only `H`/NON when nothing is paid) and TRN*1,
* N1*PR (payer, with N3/N4 and PER*BL) and N1*PE (payee: the billing NPI),
* CLP: claim id, status 1 (processed) or 4 (denied: every line denied), total charge,
  paid, patient responsibility (the PR adjustments), claim filing indicator (the 837's
  SBR09), the claim id as the payer claim control number; NM1*QC with the patient's name
  from the 837 and the member id,
* per line SVC (HC:code:modifiers, charge, paid, units; SVC06 = the submitted procedure
  with the SV101-7 description when the 837 sent one, since SVC01-7 is not used in 835s),
  DTM*472, CAS per adjustment group (CARC and amount; one triplet per CARC, amounts of a
  repeated CARC added up), REF*6R (the line item control number the 837 sent in loop 2400
  REF*6R, else `<claim_id>-<line number, 3 digits>`), AMT*B6 (allowed), LQ*HE per RARC,
* no PLB, except PLB*FB forwarding the negative net of a reversal. All adjustments are at
  line level, so at claim level charge = paid + the line CAS.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from edi.x12 import Delimiters, Party, Writer, envelope, x12_date, x12_decimal
from contract.models import AdjudicatedLine

VERSION = "005010X221A1"
CENT = Decimal("0.01")


class RemittanceError(ValueError):
    """The decisions cannot be written as a balanced 835 (missing lines, amounts that do
    not add up, an identifier X12 cannot carry)."""


@dataclass(frozen=True)
class Payer:
    """Who pays: the 835's N1*PR loop and TRN03 ('1' + the payer's 9-digit tax id)."""

    name: str = "SYNTHETIC HEALTH PLAN"
    tax_id: str = "041234567"
    address: str = "1 PLAN WAY"
    city: str = "BOSTON"
    state: str = "MA"
    zip: str = "021100000"
    contact: str = "EDI SUPPORT"
    phone: str = "6175550199"
    interchange_id: Party = Party("ZZ", "SYNPLAN01")
    claim_filing_indicator: str = "12"


#: CLP06 codes (835 claim filing indicator). The 837's SBR09 uses the same codes and a few
#: the 835 does not have: those map to the nearest 835 code, or to the payer's default.
CLP06_CODES = frozenset({"12", "13", "14", "15", "16", "17", "AM", "CH", "DS", "HM", "LM", "MA", "MB", "MC", "OF",
                         "TV", "VA", "WC", "ZZ"})
SBR09_TO_CLP06 = {"FI": "OF"}  # federal employees program: other federal program


def claim_filing_indicator(sbr09: str | None, payer: Payer) -> str:
    """CLP06 from the 837's SBR09 (claim filing indicator); the payer's default when the
    claim came as JSON or SBR09 has no 835 equivalent (CI commercial, BL, 11)."""
    code = SBR09_TO_CLP06.get(sbr09 or "", sbr09)
    return code if code in CLP06_CODES else payer.claim_filing_indicator


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def build(
    claim_lines: Iterable[Mapping[str, Any]] | None,
    decisions: Iterable[AdjudicatedLine | Mapping[str, Any]],
    *,
    payer: Payer = Payer(),
    payee_names: Mapping[str, str] | None = None,
    receiver: Party | None = None,
    control_number: int,
    facts: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> str:
    """An 835 interchange with one transaction set per claim that has decisions.

    `control_number` is ISA13 (and GS06, and the first 9 digits of each TRN02): the caller
    takes it from the ledger's sequence, so no two 835s of a sender share one. The submitted
    lines may carry what the 837 said (see `streams.ledger.remittance.REMITTANCE_FIELDS`):
    REF*6R, the SV101-7 description, the patient's name, SBR09 (CLP06) and ISA15; with
    `claim_lines=None`, `facts` gives them by (claim id, line number).

    `claim_lines` are the submitted lines (contract dicts; they give the charges and units),
    `decisions` the AdjudicatedLine records (models, or dicts as published). Raises
    `RemittanceError` if a decided claim has an undecided or unknown line, or its amounts
    do not balance. With `claim_lines=None` (the ledger keeps no submitted lines once a
    claim is decided) each charge is the allowed amount plus the adjustments, as the
    contract guarantees, and SVC05 (units) is left out.
    """
    now = now or datetime.now(timezone.utc)
    claims = _group(claim_lines, decisions, facts or {})
    if not claims:
        raise RemittanceError("no decided claim to remit")
    d = Delimiters()
    transactions = []
    npis = set()
    for n, (reference, payments) in enumerate(_payments(claims).items(), start=1):
        transactions.append(_transaction(reference, payments, payer, payee_names or {}, now, f"{n:04d}", f"{control_number:09d}{n:04d}", d))
        npis.add(next(iter(payments[0][2].values())).provider_npi)
    to = receiver or Party("ZZ", npis.pop() if len(npis) == 1 else "PROVIDERS")
    return envelope(transactions, functional_id="HP", version=VERSION, sender=payer.interchange_id,
                    receiver=to, control_number=control_number, now=now, d=d, usage=_usage(claims))


def _usage(claims: Mapping[tuple[str, bool], tuple[dict[int, Mapping[str, Any]], dict]]) -> str:
    """ISA15: `T` when the 837 of any remitted claim was a test interchange, else `P`."""
    said = {line.get("interchange_usage") for lines, _ in claims.values() for line in lines.values()}
    return "T" if "T" in said else "P"


def _group(claim_lines: Iterable[Mapping[str, Any]] | None,
           decisions: Iterable[AdjudicatedLine | Mapping[str, Any]],
           facts: Mapping[tuple[str, int], Mapping[str, Any]],
           ) -> "OrderedDict[tuple[str, bool], tuple[dict[int, Mapping[str, Any]], dict[int, AdjudicatedLine]]]":
    """{(claim id, whether a reversal): (its submitted lines, its decisions by line)}, in
    first-seen order. A reversal's charges are its own (negated) amounts; a void's lines
    are not remitted (its reversal is its effect)."""
    submitted: dict[tuple[str, bool], dict[int, Mapping[str, Any]]] = {}
    decided = [raw if isinstance(raw, AdjudicatedLine) else AdjudicatedLine.model_validate(
        {k: v for k, v in raw.items() if k != "topic"}) for raw in decisions]
    decided = [dec for dec in decided if dec.status != "VOIDED"]
    for dec in decided:
        if claim_lines is None or dec.status == "REVERSED":  # the charge from the decision
            charge = dec.allowed_amount + sum((a.amount for a in dec.adjustments), Decimal(0))
            submitted.setdefault((dec.claim_id, dec.status == "REVERSED"), {})[dec.line_number] = {
                **facts.get((dec.claim_id, dec.line_number), {}),
                "claim_id": dec.claim_id, "line_number": dec.line_number, "charge_amount": str(charge)}
    for line in claim_lines or ():
        submitted.setdefault((str(line["claim_id"]), False), {})[int(line["line_number"])] = line
    out: OrderedDict[tuple[str, bool], tuple[dict[int, Mapping[str, Any]], dict[int, AdjudicatedLine]]] = OrderedDict()
    for decision in decided:
        key = (decision.claim_id, decision.status == "REVERSED")
        lines = submitted.get(key)
        if lines is None:
            raise RemittanceError(f"claim {decision.claim_id}: no submitted lines for its decisions")
        entry = out.setdefault(key, (lines, {}))
        entry[1][decision.line_number] = decision  # a repeat (retry/replay) is the same decision
    for (claim_id, _), (lines, decided_lines) in out.items():
        missing = sorted(set(lines) - set(decided_lines))
        unknown = sorted(set(decided_lines) - set(lines))
        if missing:
            raise RemittanceError(f"claim {claim_id}: lines {missing} are not decided yet")
        if unknown:
            raise RemittanceError(f"claim {claim_id}: decisions for lines {unknown} that were not submitted")
        if len(claim_id) > 38:
            raise RemittanceError(f"claim {claim_id}: CLP01 holds at most 38 characters")
    return out


Payment = tuple[str, dict[int, Mapping[str, Any]], dict[int, AdjudicatedLine]]  # (claim id, submitted, decided)


def _payments(claims: "OrderedDict[tuple[str, bool], tuple[dict, dict]]") -> dict[str, list[Payment]]:
    """The claim payments of each transaction set: a reversal goes in the set of the
    replacement or void that made it, before that claim's own payment."""
    out: dict[str, list[Payment]] = {}
    for (claim_id, reversal), (submitted, decided) in claims.items():
        key = next(iter(decided.values())).reversed_by if reversal else claim_id
        out.setdefault(key or claim_id, []).append((claim_id, submitted, decided))
    return out


def _transaction(reference: str, payments: list[Payment], payer: Payer, payee_names: Mapping[str, str], now: datetime,
                 control: str, trace: str, d: Delimiters) -> str:
    """One transaction set: BPR for the net of its claim payments (a reversal pays back: a
    net below zero is paid as 0.00, the balance forwarded in PLB*FB naming `reference`, the
    replacement or void), then each claim."""
    paid = Decimal(0)
    claims = []
    for claim_id, submitted, decided in payments:
        rows = [_line(claim_id, submitted[number], decided[number]) for number in sorted(decided)]
        paid += sum((r["paid"] for r in rows), Decimal(0))
        claims.append((claim_id, rows))
    first = claims[0][1][0]["decision"]
    npi = first.provider_npi

    w = Writer(d)
    if paid > 0:
        w.add("BPR", "I", money(paid), "C", "CHK", *[""] * 11, now.strftime("%Y%m%d"))
    else:
        w.add("BPR", "H", money(max(paid, Decimal(0))), "C", "NON", *[""] * 11, now.strftime("%Y%m%d"))
    w.add("TRN", "1", trace, "1" + payer.tax_id)
    w.add("DTM", "405", now.strftime("%Y%m%d"))
    w.add("N1", "PR", payer.name)
    w.add("N3", payer.address)
    w.add("N4", payer.city, payer.state, payer.zip)
    w.add("PER", "BL", payer.contact, "TE", payer.phone)
    w.add("N1", "PE", payee_names.get(npi, f"PROVIDER {npi}"), "XX", npi)
    w.add("LX", "1")
    for claim_id, rows in claims:
        _claim_payment(w, claim_id, rows, payer)
    if paid < 0:  # what the provider owes back is carried forward (FB), so BPR02 is not negative
        w.add("PLB", npi, f"{now.year}1231", ("FB", reference), money(paid))
    return w.transaction(("835",), control)


def _claim_payment(w: Writer, claim_id: str, rows: list[dict[str, Any]], payer: Payer) -> None:
    """CLP (status 22 for a reversal, 4 when every line is denied, else 1), NM1*QC, the lines."""
    charge = sum((r["charge"] for r in rows), Decimal(0))
    paid = sum((r["paid"] for r in rows), Decimal(0))
    patient = sum((a for r in rows for g, _, a in r["cas"] if g == "PR"), Decimal(0))
    statuses = {r["decision"].status for r in rows}
    status = "22" if statuses == {"REVERSED"} else "4" if statuses == {"DENIED"} else "1"
    first = rows[0]["decision"]
    said = rows[0]["line"]  # what the 837 said for the claim (absent for claims sent as JSON)
    # a payer-initiated adjustment's claim (<claim_id>~A<n>) and its reversals answer the
    # provider's claim id (CLP01) and carry the payer's own in CLP07 (CONTRACT.md *Reprocessing*)
    w.add("CLP", claim_id.split("~", 1)[0], status, money(charge), money(paid), money(patient) if patient else None,
          claim_filing_indicator(said.get("claim_filing_indicator"), payer), claim_id)
    w.add("NM1", "QC", "1", said.get("patient_last_name") or "", said.get("patient_first_name") or "", "", "", "",
          "MI", first.member_id)
    for r in rows:
        dec: AdjudicatedLine = r["decision"]
        line = r["line"]
        w.add("SVC", ("HC", dec.procedure_code, *dec.modifiers), money(r["charge"]), money(r["paid"]), "",
              x12_decimal(line.get("units")), _submitted_procedure(dec, line.get("procedure_description")))
        w.add("DTM", "472", x12_date(dec.service_date))
        by_group: OrderedDict[str, list[tuple[str, Decimal]]] = OrderedDict()
        for group, carc, amount in r["cas"]:
            by_group.setdefault(group, []).append((carc, amount))
        for group, items in by_group.items():
            for start in range(0, len(items), 6):
                trio: list[object] = []
                for carc, amount in items[start:start + 6]:
                    trio += [carc, money(amount), ""]
                w.add("CAS", group, *trio)
        w.add("REF", "6R", line.get("line_item_control_number") or line_control_number(claim_id, dec.line_number))
        w.add("AMT", "B6", money(dec.allowed_amount))
        for rarc in r["rarcs"]:
            w.add("LQ", "HE", rarc)


def _submitted_procedure(dec: AdjudicatedLine, description: str | None) -> tuple[str, ...] | None:
    """SVC06 with the SV101-7 description the 837 sent (a not-otherwise-classified code
    such as J3490): the 835 TR3 marks SVC01-7 "not used", its place is SVC06-7."""
    if not description:
        return None
    return ("HC", dec.procedure_code, *[*dec.modifiers, "", "", "", ""][:4], description)


def line_control_number(claim_id: str, line_number: int) -> str:
    """REF*6R when the 837 sent none: the claim id and the line number, `<claim_id>-<nnn>`
    (at most 50 characters)."""
    return f"{claim_id}-{line_number:03d}"[-50:]


def _line(claim_id: str, line: Mapping[str, Any], dec: AdjudicatedLine) -> dict[str, Any]:
    try:
        charge = Decimal(str(line["charge_amount"])).quantize(CENT, rounding=ROUND_HALF_UP)
    except Exception as exc:
        raise RemittanceError(f"claim {claim_id} line {dec.line_number}: charge_amount unreadable: {exc}") from None
    allowed = Decimal(dec.allowed_amount).quantize(CENT, rounding=ROUND_HALF_UP)
    merged: OrderedDict[tuple[str, str], Decimal] = OrderedDict()
    rarcs: list[str] = []
    for adj in dec.adjustments:
        key = (adj.group, adj.carc)
        merged[key] = merged.get(key, Decimal(0)) + Decimal(adj.amount)
        for rarc in adj.rarc:
            if rarc not in rarcs:
                rarcs.append(rarc)
    cas = [(g, c, a.quantize(CENT, rounding=ROUND_HALF_UP)) for (g, c), a in merged.items()]
    adjusted = sum((a for _, _, a in cas), Decimal(0))
    if charge != allowed + adjusted:
        raise RemittanceError(
            f"claim {claim_id} line {dec.line_number}: charge {charge} != allowed {allowed} + adjustments {adjusted}")
    return {"line": line, "decision": dec, "charge": charge, "paid": allowed, "cas": cas, "rarcs": rarcs}


# --- reading an 835 back (tests, and consumers that want the numbers) -----------------------


@dataclass(frozen=True)
class RemitLine:
    procedure: str
    modifiers: tuple[str, ...]
    charge: Decimal
    paid: Decimal
    cas: tuple[tuple[str, str, Decimal], ...]
    rarcs: tuple[str, ...]
    control_number: str | None
    service_date: str | None


@dataclass(frozen=True)
class RemitClaim:
    claim_id: str
    status: str
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    cas: tuple[tuple[str, str, Decimal], ...]
    lines: tuple[RemitLine, ...]
    payment: Decimal  # BPR02 of its transaction set
    transaction: int  # index of its transaction set in the interchange
    provider_adjustment: Decimal = Decimal(0)  # the PLB amounts of its transaction set


def read(text: str) -> list[RemitClaim]:
    """The claims of an 835 interchange, with their CLP/SVC/CAS/LQ numbers."""
    from edi.x12 import tokenize

    d, segs, _ = tokenize(text)
    claims: list[RemitClaim] = []
    payment = Decimal(0)
    plb: dict[int, Decimal] = {}
    transaction = -1
    clp: Any = None
    claim_cas: list[tuple[str, str, Decimal]] = []
    lines: list[dict[str, Any]] = []

    def close() -> None:
        nonlocal clp, claim_cas, lines
        if clp is not None:
            claims.append(RemitClaim(
                claim_id=clp.get(1), status=clp.get(2), charge=Decimal(clp.get(3)), paid=Decimal(clp.get(4)),
                patient_responsibility=Decimal(clp.get(5) or "0"), cas=tuple(claim_cas),
                lines=tuple(RemitLine(**ln) for ln in lines), payment=payment, transaction=transaction))
        clp, claim_cas, lines = None, [], []

    for s in segs:
        if s.id == "ST":
            close()
            transaction += 1
        elif s.id == "BPR":
            payment = Decimal(s.get(2))
        elif s.id == "CLP":
            close()
            clp = s
        elif s.id == "SVC":
            comp = s.get(1).split(d.component)
            lines.append({"procedure": comp[1] if len(comp) > 1 else "", "modifiers": tuple(m for m in comp[2:6] if m),
                          "charge": Decimal(s.get(2)), "paid": Decimal(s.get(3)), "cas": (), "rarcs": (),
                          "control_number": None, "service_date": None})
        elif s.id == "CAS":
            trios = [(s.get(1), s.get(i), Decimal(s.get(i + 1))) for i in range(2, 20, 3) if s.get(i)]
            if lines:
                lines[-1]["cas"] = lines[-1]["cas"] + tuple(trios)
            else:
                claim_cas.extend(trios)
        elif s.id == "LQ" and lines and s.get(1) == "HE":
            lines[-1]["rarcs"] = lines[-1]["rarcs"] + (s.get(2),)
        elif s.id == "REF" and lines and s.get(1) == "6R":
            lines[-1]["control_number"] = s.get(2)
        elif s.id == "DTM" and lines and s.get(1) == "472":
            lines[-1]["service_date"] = s.get(2)
        elif s.id == "PLB":
            close()
            plb[transaction] = plb.get(transaction, Decimal(0)) + sum(
                (Decimal(s.get(i)) for i in range(4, 15, 2) if s.get(i)), Decimal(0))
        elif s.id == "SE":
            close()
    close()
    return [replace(c, provider_adjustment=plb.get(c.transaction, Decimal(0))) for c in claims]


def balance_errors(claims: list[RemitClaim]) -> list[str]:
    """Everything that does not add up to the cent: per line (SVC02 = SVC03 + line CAS), per
    claim (CLP03 = CLP04 + claim and line CAS; CLP03 = sum of SVC02; CLP05 = the PR
    adjustments) and per transaction set (BPR02 = sum of CLP04 - the PLB amounts)."""
    problems = []
    payments: dict[int, tuple[Decimal, Decimal]] = {}
    for c in claims:
        for n, ln in enumerate(c.lines, start=1):
            adjusted = sum((a for _, _, a in ln.cas), Decimal(0))
            if ln.charge != ln.paid + adjusted:
                problems.append(f"{c.claim_id} SVC {n}: {ln.charge} != {ln.paid} + {adjusted}")
        everything = [*c.cas, *(t for ln in c.lines for t in ln.cas)]
        adjusted = sum((a for _, _, a in everything), Decimal(0))
        if c.lines and c.charge != sum((ln.charge for ln in c.lines), Decimal(0)):
            problems.append(f"{c.claim_id}: CLP03 {c.charge} != the sum of its SVC02")
        if c.charge != c.paid + adjusted:
            problems.append(f"{c.claim_id}: CLP03 {c.charge} != CLP04 {c.paid} + CAS {adjusted}")
        pr = sum((a for g, _, a in everything if g == "PR"), Decimal(0))
        if c.patient_responsibility != pr:
            problems.append(f"{c.claim_id}: CLP05 {c.patient_responsibility} != PR adjustments {pr}")
        bpr, paid = payments.get(c.transaction, (c.payment + c.provider_adjustment, Decimal(0)))
        payments[c.transaction] = (bpr, paid + c.paid)
    for index, (bpr, paid) in payments.items():
        if bpr != paid:
            problems.append(f"transaction set {index + 1}: BPR02 + PLB {bpr} != sum of CLP04 {paid}")
    return problems


def claim_ids(decisions: Iterable[AdjudicatedLine | Mapping[str, Any]]) -> list[str]:
    """The claim ids of `decisions`, in first-seen order."""
    seen: dict[str, None] = {}
    for dec in decisions:
        seen[dec.claim_id if isinstance(dec, AdjudicatedLine) else str(dec["claim_id"])] = None
    return list(seen)

