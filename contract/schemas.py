"""JSON Schemas (draft 2020-12) of every external topic's key and value, generated from the
pydantic models in `contract.models` and committed under `docs/schemas/`.

    python -m contract.schemas            # (re)write docs/schemas/
    python -m contract.schemas --check    # exit 1 when the committed files are stale

Values: inputs (`claims.lines.submitted`, the `reference.*` topics) use the models'
*validation* schema, what the pipeline accepts (numbers where decimals are also accepted as
numbers, unknown fields allowed); outputs (`claims.lines.adjudicated`, `claims.lines.rejected`)
use the *serialization* schema, exactly what the pipeline publishes (decimals as strings,
closed objects). On top of what pydantic derives, output fields get the formats CONTRACT.md
fixes (decimal strings, two-place money, 11-digit NDC, 10-digit NPI), so a consumer can
rely on them and `tests/test_schemas.py` checks every published record against them.
Input schemas only get descriptions: the pipeline's own checks (NPI check digit, forms,
one date per line, ...) stay the authority on what is rejected, and a schema must never
refuse a line the pipeline would accept.

Keys are UTF-8 strings, not JSON: a key schema describes the decoded key as a JSON string
instance (`null` standing for a record without a key).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contract import topics
from contract.codes import REJECTION_CODES

DRAFT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"

#: a decimal as the pipeline writes it (`str(Decimal)`): no exponent, no sign but minus
DECIMAL_STRING = r"^-?[0-9]+(\.[0-9]+)?$"
MONEY_2 = r"^-?[0-9]+\.[0-9]{2}$"
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

#: contract formats of output fields, by (model, field), beyond what the models declare
OUTPUT_FORMATS: dict[tuple[str, str], dict[str, Any]] = {
    ("AdjudicatedLine", "allowed_amount"): {"pattern": MONEY_2},
    ("Pend", "suggested_amount"): {"pattern": MONEY_2},
    ("AdjudicatedLine", "ndc11"): {"pattern": r"^[0-9]{11}$"},
    ("AdjudicatedLine", "provider_npi"): {"pattern": r"^[0-9]{10}$"},
    ("AdjudicatedLine", "service_date"): {"pattern": DATE},
    ("AdjudicatedLine", "line_number"): {"minimum": 1, "maximum": 999},
    ("Adjustment", "carc"): {"pattern": r"^[A-Z0-9]{1,5}$"},
    ("Pricing", "effective_from"): {"pattern": DATE},
}

#: CONTRACT.md's words for the fields, by (model, field)
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("ClaimLine", "claim_id"): "Claim identifier, 1-64 characters.",
    ("ClaimLine", "line_number"): "Line number, 1-999, unique within the claim.",
    ("ClaimLine", "line_count"): "Total lines of the claim, 1-999, >= line_number.",
    ("ClaimLine", "form"): '"CMS-1500" or "837P"; any other form is rejected (FORM).',
    ("ClaimLine", "member_id"): "The member (also the message key).",
    ("ClaimLine", "provider_npi"): "Billing provider NPI: 10 digits with a valid check digit (else rejected: NPI).",
    ("ClaimLine", "authorization_number"): "Prior authorization (CMS-1500 box 23), claim level, repeated on each line.",
    ("ClaimLine", "service_date"): "Date of service, YYYY-MM-DD.",
    ("ClaimLine", "service_date_to"): "Null or equal to service_date; a line spanning several dates is rejected (MULTI_DATE).",
    ("ClaimLine", "procedure_code"): "HCPCS Level II or CPT code (5 characters).",
    ("ClaimLine", "modifiers"): "0-4 two-character modifiers.",
    ("ClaimLine", "units"): "Service units, decimal > 0 (string, or a JSON number).",
    ("ClaimLine", "charge_amount"): "Billed charge, decimal >= 0 (string, or a JSON number).",
    ("ClaimLine", "diagnosis_codes"): "ICD-10-CM codes.",
    ("ClaimLine", "claim_frequency"): '"1" original (default), "7" replacement, "8" void (CMS-1500 item 22, 837P CLM05-3); else rejected (CLAIM_FREQUENCY).',
    ("ClaimLine", "original_claim_id"): "The claim a replacement or void corrects (837P REF*F8); required with 7/8, absent with 1 (else ORIGINAL_CLAIM_ID).",
    ("ClaimLine", "drug"): "Drug/biological details; required on every drug line (a J-code line without it is denied, not rejected).",
    ("DrugDetails", "ndc"): "NDC as printed: 11 digits, or hyphenated 5-4-2, 4-4-2, 5-3-2, 5-4-1.",
    ("DrugDetails", "quantity"): "Metric decimal quantity administered (three 0.5 ml vials = \"1.5\").",
    ("DrugDetails", "unit"): "NDC unit of measure: F2, GR, ML or UN.",
    ("DrugDetails", "dosage"): "Dosage administered that day.",
    ("DrugDetails", "frequency"): "Frequency of administration.",
    ("DrugDetails", "duration_minutes"): "Duration of the infusion, where applicable.",
    ("AdjudicatedLine", "ndc11"): "11-digit normalized NDC whenever drug.ndc normalizes (whatever the status), else null.",
    ("AdjudicatedLine", "status"): "PAID or DENIED; REVERSED (a line of a replaced or voided claim), VOIDED (a void's line), or PENDED (waiting for a reviewer; its final PAID/DENIED record follows).",
    ("AdjudicatedLine", "allowed_amount"): 'Decimal string with two places; "0.00" when DENIED or VOIDED; negated when REVERSED.',
    ("AdjudicatedLine", "reversed_by"): "On a REVERSED record: the claim_id of the replacement or void that reversed the line; else null.",
    ("AdjudicatedLine", "adjustments"): "835 CAS/LQ adjustments; their amounts add up to charge_amount - allowed_amount.",
    ("AdjudicatedLine", "pricing"): "How the allowed amount was computed, or null.",
    ("AdjudicatedLine", "pend"): "On a PENDED record: why the line waits for a person, its queue, rule and suggested amount; else null.",
    ("AdjudicatedLine", "review"): "On a final record after a manual review: the reviewer's action, name, time and note; else null.",
    ("AdjudicatedLine", "adjusts"): "On the lines of a payer-initiated adjustment: the claim it adjusts; else null.",
    ("AdjudicatedLine", "proposal_id"): "On the lines of a payer-initiated adjustment: the approved reprocessing proposal; else null.",
    ("Pend", "reason"): "HIGH_DOLLAR or NOC_REVIEW (a rulebook version may add reasons).",
    ("Pend", "queue"): "The review queue the line waits in.",
    ("Pend", "rule"): "The rule that pended it: REVIEW-HIGH-DOLLAR or REVIEW-NOC.",
    ("Pend", "suggested_amount"): "What the rules would allow: the amount a reviewer's PAY defaults to.",
    ("Pend", "pended_at"): "When the line was pended.",
    ("Review", "action"): "PAY or DENY.",
    ("Review", "reviewer"): "The reviewer's name (CLAIMS_REVIEWERS_FILE).",
    ("Review", "decided_at"): "When the reviewer decided.",
    ("Review", "note"): "The reviewer's note, or null.",
    ("AdjudicatedLine", "policy_version"): "The rulebook version applied.",
    ("AdjudicatedLine", "adjudicated_at"): "When the decision was (re)published; the only field that differs between repeats.",
    ("Adjustment", "group"): "CAS group code.",
    ("Adjustment", "carc"): "Claim Adjustment Reason Code.",
    ("Adjustment", "rarc"): "Remittance Advice Remark Codes (LQ*HE).",
    ("Adjustment", "amount"): "Decimal string.",
    ("Adjustment", "rule"): "Rulebook rule id (docs/integration.md lists them).",
    ("RejectedLine", "claim_id"): "The claim, where known.",
    ("RejectedLine", "line_number"): "The line, where known.",
    ("RejectedLine", "reasons"): "Why the line cannot enter adjudication.",
    ("RejectedLine", "original"): "The submitted object as received.",
    ("RejectedLine", "rejected_at"): "When the rejection was (re)published.",
    ("RejectionReason", "code"): ", ".join(REJECTION_CODES[:-1]) + " or " + REJECTION_CODES[-1] + ".",
    ("RejectionReason", "field"): "The field at fault (dotted path), where there is one.",
    ("ShadowDifference", "candidate_version"): "The candidate rulebook version (Monitor Mode), not in effect.",
    ("ShadowDifference", "before"): "The live decision, as published on claims.lines.adjudicated.",
    ("ShadowDifference", "after"): "The decision the candidate would have made, from the same ledger history; never published.",
    ("ShadowDifference", "rules"): "Rule ids on one side only (or whose amounts differ): what made the difference.",
}

_OUTPUTS = {topics.AUDIT_ACCESS.name, topics.ADJUDICATED.name, topics.REJECTED.name, topics.SHADOW_DIFFERENCES.name,
            topics.REMITTANCE_DLQ.name, topics.REPROCESS_PROPOSALS.name}

#: key schemas: (schema, description) per external topic
_STRING_KEY = {"type": "string", "minLength": 1}
KEYS: dict[str, tuple[dict[str, Any], str]] = {
    topics.SUBMITTED.name: ({"type": ["string", "null"]},
                            "The member_id of the line. A producer keying by something else (or not at all) still works, "
                            "but only member_id keys keep one member's lines in order."),
    topics.ADJUDICATED.name: ({"type": "string", "minLength": 1, "maxLength": 64}, "The claim_id of the decision."),
    topics.REJECTED.name: ({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 64}, {"type": "null"}]},
                           "The claim_id of the rejected line where it is known; null (no key) otherwise."),
    topics.REMITTANCE_DLQ.name: ({"type": "string", "minLength": 1, "maxLength": 64},
                                 "The claim_id of the claim whose 835 could not be written. Headers: error, "
                                 "source-topic (claims.internal.decided) and stage (remittance)."),
    topics.SHADOW_DIFFERENCES.name: ({"type": "string", "minLength": 1, "maxLength": 64},
                                     "The claim_id of the line decided differently."),
    topics.AUDIT_ACCESS.name: ({"type": ["string", "null"], "maxLength": 64},
                               "The client's or reviewer's name (null: a request without a valid token, answered 401)."),
    topics.REPROCESS_PROPOSALS.name: ({"type": "string", "minLength": 1, "maxLength": 64},
                                      "The claim_id the proposal is for (compacted: the claim's latest proposal status)."),
    topics.DLQ.name: ({"type": ["string", "null"]}, "The key of the original message, unchanged (null: it had none)."),
    topics.REMITTANCE_835.name: ({"type": "string", "minLength": 1, "maxLength": 38},
                                 "The claim_id of the remitted claim (CLP01 of the 835)."),
    topics.REFERENCE["members"].name: (_STRING_KEY, "member_id."),
    topics.REFERENCE["authorizations"].name: (_STRING_KEY, "authorization_number."),
    topics.REFERENCE["drugs"].name: ({"type": "string", "pattern": r"^[0-9]{11}$"}, "The 11-digit NDC."),
    topics.REFERENCE["awp-prices"].name: ({"type": "string", "pattern": r"^[0-9]{11}:[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                                          "<ndc>:<effective_from>, e.g. 00409495001:2026-01-01."),
    topics.REFERENCE["fee-schedule"].name: ({"type": "string", "pattern": r"^[A-Z0-9]{1,16}:[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                                            "<procedure_code>:<effective_from>, e.g. S9500:2026-01-01 (code in upper case)."),
    topics.REFERENCE["provider-contracts"].name: ({"type": "string", "pattern": r"^[0-9]{10}$"}, "provider_npi."),
}

DLQ_VALUE = {
    "type": "string",
    "contentMediaType": "application/octet-stream",
    "description": "The raw bytes of the message that could not be decoded (not JSON, not a JSON object, "
                   "or over 64 KiB), unchanged. Validate it, if at all, as the bytes decoded as UTF-8.",
}
#: topics whose value is raw text that is not JSON (and not a dead letter): the value schema
RAW_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    topics.REMITTANCE_835.name: ({
        "type": "string",
        "contentMediaType": "application/edi-x12",
        "pattern": "^ISA",
        "description": "One X12 835 interchange (005010X221A1) with one transaction set: the claim's CLP, an SVC "
                       "per decided line with its CAS adjustments, REF*6R and LQ*HE remarks. Validate it, if at "
                       "all, as the bytes decoded as UTF-8 (plain ASCII in practice).",
    }, "X12 text, not JSON."),
}
DLQ_HEADERS = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "minLength": 1, "description": "Why the message was dead-lettered."},
        "source-topic": {"type": "string", "minLength": 1, "description": "The topic it was read from."},
        "stage": {"type": "string", "description": "The pipeline stage that dead-lettered it."},
    },
    "required": ["error", "source-topic"],
    "description": "The headers of a claims.lines.dlq record, as UTF-8 strings.",
}


def external_topics() -> list[topics.TopicDef]:
    return [t for t in topics.ALL if not t.internal]


def _base_type(annotation: Any) -> Any:
    """`Decimal`, `X | None`, `Annotated[Decimal, ...]` -> the type underneath."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The model and every model nested in it, by name."""
    found = {model.__name__: model}
    for field in model.model_fields.values():
        for candidate in _types_in(field.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate.__name__ not in found:
                found.update(_models(candidate))
    return found


def _types_in(annotation: Any) -> typing.Iterator[Any]:
    """An annotation and everything it is made of (through Annotated, unions, containers)."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)


def _string_branch(prop: dict[str, Any]) -> dict[str, Any] | None:
    if prop.get("type") == "string":
        return prop
    for branch in prop.get("anyOf", ()):
        if branch.get("type") == "string":
            return branch
    return None


def _declared_by(cls: type[BaseModel], field_name: str) -> str:
    """The name of the model that declares a field (a subclass, e.g. the API's records with
    their topic, gets its parent's descriptions and formats)."""
    return next(c.__name__ for c in cls.__mro__ if field_name in c.__dict__.get("__annotations__", {}))


def _decorate(schema: dict[str, Any], model: type[BaseModel], output: bool) -> None:
    for name, cls in _models(model).items():
        node = schema if cls is model else schema.get("$defs", {}).get(name)
        if node is None:
            continue
        for field_name, field in cls.model_fields.items():
            prop = node["properties"][field.alias or field_name]
            owner = _declared_by(cls, field_name)
            if (owner, field_name) in DESCRIPTIONS:
                prop["description"] = DESCRIPTIONS[(owner, field_name)]
            if not output:
                continue
            target = _string_branch(prop)
            if _base_type(field.annotation) is Decimal and target is not None:
                target.setdefault("pattern", DECIMAL_STRING)
            extra = OUTPUT_FORMATS.get((owner, field_name))
            if extra:
                branch = target if target is not None else prop
                if "anyOf" in prop and target is None:  # e.g. an optional integer
                    branch = next(b for b in prop["anyOf"] if b.get("type") != "null")
                branch.update(extra)


def _document(t: topics.TopicDef, part: str, body: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": f"{t.name}.{part}.json",
        "title": f"{t.name} {part}",
        "description": description + (f"\n\n{body['description']}" if body.get("description") else ""),
        **{k: v for k, v in body.items() if k not in ("title", "description")},
    }


def generate() -> dict[str, dict[str, Any]]:
    """File name -> schema document, for every external topic."""
    out: dict[str, dict[str, Any]] = {}
    for t in external_topics():
        key_schema, key_text = KEYS[t.name]
        out[f"{t.name}.key.json"] = _document(t, "key", key_schema, f"Key of {t.name}: {key_text} A UTF-8 string.")
        if t.name in RAW_VALUES:
            value_schema, value_text = RAW_VALUES[t.name]
            out[f"{t.name}.value.json"] = _document(t, "value", value_schema, f"Value of {t.name}: {value_text}")
            continue
        if t.value is None:
            out[f"{t.name}.value.json"] = _document(t, "value", DLQ_VALUE, f"Value of {t.name}: raw bytes, not JSON.")
            out[f"{t.name}.headers.json"] = _document(t, "headers", DLQ_HEADERS, f"Headers of {t.name}.")
            continue
        output = t.name in _OUTPUTS
        schema = t.value.model_json_schema(mode="serialization" if output else "validation")
        _decorate(schema, t.value, output)
        if output:
            text = f"Value of {t.name} (JSON, UTF-8), exactly as the pipeline publishes it."
        elif t.compacted:
            text = (f"Value of {t.name} (JSON, UTF-8), compacted, keyed by {t.key}. A later record with the same key "
                    "replaces the earlier one; a null value (tombstone, not a JSON document) deletes it. "
                    "Unknown fields are ignored.")
        else:
            text = (f"Value of {t.name} (JSON, UTF-8): one claim line. Decimals as strings or JSON numbers; "
                    "unknown fields are ignored. A line that fails this schema, or the pipeline's further checks "
                    "(NPI check digit, form, one date per line, ...), is rejected on claims.lines.rejected.")
        out[f"{t.name}.value.json"] = _document(t, "value", schema, text)
    out["README.md"] = _readme(out)
    return out


def _readme(files: dict[str, Any]) -> str:
    rows = []
    for t in external_topics():
        extra = f", [`headers`]({t.name}.headers.json)" if f"{t.name}.headers.json" in files else ""
        rows.append(f"| `{t.name}` | [`key`]({t.name}.key.json) | [`value`]({t.name}.value.json){extra} |")
    return "\n".join([
        "# Topic schemas (JSON Schema draft 2020-12)",
        "",
        "Generated from the pydantic models by `python -m contract.schemas`; do not edit by hand.",
        "`python -m contract.schemas --check` (run by `tests/test_schemas.py`) fails when a model",
        "changed and these files were not regenerated. Inputs use the models' validation schema",
        "(what the pipeline accepts), outputs their serialization schema (what it publishes).",
        "Keys are UTF-8 strings: validate the decoded key as a JSON string (`null`: no key).",
        "See [../integration.md](../integration.md) for what the fields mean.",
        "",
        "| topic | key | value |",
        "|---|---|---|",
        *rows,
        "",
    ])


def render(document: Any) -> str:
    if isinstance(document, str):
        return document
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale(directory: Path = DEFAULT_DIR) -> list[str]:
    """The files under `directory` that differ from what the models generate (or are
    missing, or no longer generated)."""
    wanted = {name: render(doc) for name, doc in generate().items()}
    have = {p.name for p in directory.glob("*") if p.is_file()} if directory.is_dir() else set()
    out = [name for name, text in wanted.items()
           if name not in have or (directory / name).read_text(encoding="utf-8") != text]
    out += sorted(have - set(wanted))
    return sorted(out)


def write(directory: Path = DEFAULT_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {name: render(doc) for name, doc in generate().items()}
    changed = stale(directory)
    for name in changed:
        path = directory / name
        if name in wanted:
            path.write_text(wanted[name], encoding="utf-8")
        elif path.suffix == ".json":  # a topic no longer generated
            path.unlink()
    return changed


def load(name: str, directory: Path = DEFAULT_DIR) -> dict[str, Any]:
    """A committed schema, e.g. `load("claims.lines.adjudicated.value.json")`."""
    return json.loads((directory / name).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contract.schemas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schemas are stale; write nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"folder (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        changed = stale(args.out)
        if changed:
            print(f"stale schemas in {args.out}: {', '.join(changed)}\nregenerate them: python -m contract.schemas",
                  file=sys.stderr)
            return 1
        print(f"schemas in {args.out} are up to date")
        return 0
    changed = write(args.out)
    print(f"wrote {len(changed)} file(s) to {args.out}" + (f": {', '.join(changed)}" if changed else " (all up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
