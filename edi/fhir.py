"""A JSON remittance for consumers that do not speak X12: a FHIR R4B `ClaimResponse`.

Built as a dict and validated by constructing `fhir.resources.R4B.claimresponse.ClaimResponse`
(fhir.resources 8.x: the default package is R5; R4B is a submodule and there is no R4 one).
Per line (`item`, by line number):

* adjudication `submitted` (the charge), `eligible` (the allowed amount), `benefit` (paid);
* one adjudication per CAS adjustment: category = the X12 claim adjustment group code
  (CO/PR/OA), reason = the CARC under `https://x12.org/codes/claim-adjustment-reason-codes`
  (text: the rule's message), amount; each RARC as an extension on that adjudication
  (X12 remittance advice remark code system) and as a `processNote` the item points to.

While any line is pended for manual review (CONTRACT.md *Pended lines and manual review*) the
`outcome` is `queued` (R4B's codes: queued | complete | error | partial; `queued` as the issue
asks: the claim is not finished and nothing is remitted yet), there is no `payment`, and each
pended item carries its charge (`submitted`), nothing `eligible` or paid (`benefit` 0.00, as its
PENDED record owes nothing) and a `processNote` saying why and in which queue it waits. Once
every line is final the outcome is `complete` again, with the reviewers' amounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from contract.models import AdjudicatedLine

CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC_SYSTEM = "https://x12.org/codes/remittance-advice-remark-codes"
GROUP_SYSTEM = "https://x12.org/codes/claim-adjustment-group-codes"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/claim-type"
PAYMENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CLAIM_ID_SYSTEM = "urn:claims-pipeline:claim-id"
MEMBER_ID_SYSTEM = "urn:claims-pipeline:member-id"
RARC_EXTENSION = "urn:claims-pipeline:fhir:StructureDefinition:remittance-advice-remark-code"
POLICY_EXTENSION = "urn:claims-pipeline:fhir:StructureDefinition:policy-version"
#: on the ClaimResponse of a replacement (claim frequency 7) or void (8): the claim it corrects
REPLACES_EXTENSION = "urn:claims-pipeline:fhir:StructureDefinition:replaces-claim"


def claim_response(decisions: Iterable[AdjudicatedLine | Mapping[str, Any]], *,
                   claim_lines: Iterable[Mapping[str, Any]] | None = None,
                   insurer: str = "SYNTHETIC HEALTH PLAN", replaces: str | None = None) -> dict[str, Any]:
    """The ClaimResponse for the decisions of one claim, as a validated FHIR R4B JSON dict.

    The charge of a line is taken from `claim_lines` when given, else it is the allowed
    amount plus the adjustments (the contract guarantees they add up); a PENDED line's
    charge must be given (its record owes nothing and has no adjustments). `replaces`: the
    claim a replacement or void corrects (its `original_claim_id`), named in an extension."""
    from fhir.resources.R4B.claimresponse import ClaimResponse

    lines: dict[int, AdjudicatedLine] = {}
    claim_ids: set[str] = set()
    for raw in decisions:
        dec = raw if isinstance(raw, AdjudicatedLine) else AdjudicatedLine.model_validate(
            {k: v for k, v in raw.items() if k != "topic"})
        lines[dec.line_number] = dec  # a repeat (retry, replay) is the same decision
        claim_ids.add(dec.claim_id)
    if not lines:
        raise ValueError("no decisions")
    if len(claim_ids) != 1:
        raise ValueError(f"decisions of several claims: {sorted(claim_ids)}")
    charges = {int(ln["line_number"]): Decimal(str(ln["charge_amount"]))
               for ln in (claim_lines or []) if ln.get("claim_id") in claim_ids}
    first = lines[min(lines)]
    notes: list[dict[str, Any]] = []
    items = []
    totals = {"submitted": Decimal(0), "eligible": Decimal(0), "benefit": Decimal(0)}
    for number in sorted(lines):
        dec = lines[number]
        allowed = Decimal(dec.allowed_amount)
        if dec.status == "PENDED" and number not in charges:
            raise ValueError(f"line {number} is pended: its charge must be given in claim_lines")
        charge = charges.get(number, allowed + sum((Decimal(a.amount) for a in dec.adjustments), Decimal(0)))
        adjudication = [_amount("submitted", charge), _amount("eligible", allowed), _amount("benefit", allowed)]
        note_numbers = []
        if dec.status == "PENDED" and dec.pend is not None:
            notes.append({"number": len(notes) + 1, "type": "display",
                          "text": f"Line {number} is pended for manual review ({dec.pend.reason}, {dec.pend.queue} queue, "
                                  f"rule {dec.pend.rule}); nothing is payable until a reviewer decides it."})
            note_numbers.append(len(notes))
        for adj in dec.adjustments:
            entry: dict[str, Any] = {
                "category": {"coding": [{"system": GROUP_SYSTEM, "code": adj.group}]},
                "reason": {"coding": [{"system": CARC_SYSTEM, "code": adj.carc}], "text": adj.message},
                "amount": _money(Decimal(adj.amount)),
            }
            if adj.rarc:
                entry["extension"] = [{"url": RARC_EXTENSION, "valueCodeableConcept": {
                    "coding": [{"system": RARC_SYSTEM, "code": rarc}]}} for rarc in adj.rarc]
                for rarc in adj.rarc:
                    notes.append({"number": len(notes) + 1, "type": "display",
                                  "text": f"{rarc}: {adj.message} (rule {adj.rule})"})
                    note_numbers.append(len(notes))
            adjudication.append(entry)
        item: dict[str, Any] = {"itemSequence": number, "adjudication": adjudication}
        if note_numbers:
            item["noteNumber"] = note_numbers
        items.append(item)
        totals["submitted"] += charge
        totals["eligible"] += allowed
        totals["benefit"] += allowed
    paid = sum(1 for d in lines.values() if d.status == "PAID")
    voided = sum(1 for d in lines.values() if d.status == "VOIDED")
    pended = sum(1 for d in lines.values() if d.status == "PENDED")
    disposition = f"{paid} line(s) paid, {len(lines) - paid - voided - pended} denied" + \
        (f", {voided} voided" if voided else "") + (f", {pended} pended for manual review" if pended else "")
    extensions = [{"url": POLICY_EXTENSION, "valueString": first.policy_version}]
    if replaces:
        extensions.append({"url": REPLACES_EXTENSION, "valueIdentifier": {"system": CLAIM_ID_SYSTEM, "value": replaces}})
    resource: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "extension": extensions,
        "identifier": [{"system": CLAIM_ID_SYSTEM, "value": first.claim_id}],
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE_SYSTEM, "code": "professional"}]},
        "use": "claim",
        "patient": {"identifier": {"system": MEMBER_ID_SYSTEM, "value": first.member_id}},
        "created": max(d.adjudicated_at for d in lines.values()).isoformat(),
        "insurer": {"display": insurer},
        "requestor": {"identifier": {"system": NPI_SYSTEM, "value": first.provider_npi}},
        "request": {"identifier": {"system": CLAIM_ID_SYSTEM, "value": first.claim_id}},
        "outcome": "queued" if pended else "complete",
        "disposition": disposition,
        "item": items,
        "total": [_amount(k, v) for k, v in totals.items()],
    }
    if not pended:  # nothing is paid while a line waits: the claim is remitted once every line is final
        resource["payment"] = {"type": {"coding": [{"system": PAYMENT_TYPE_SYSTEM, "code": "complete"}]},
                               "amount": _money(totals["benefit"])}
    if notes:
        resource["processNote"] = notes
    model = ClaimResponse.model_validate(resource)
    return orjson.loads(model.model_dump_json(exclude_none=True))


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": value.quantize(Decimal("0.01")), "currency": "USD"}


def _amount(category: str, value: Decimal) -> dict[str, Any]:
    return {"category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": category}]}, "amount": _money(value)}
