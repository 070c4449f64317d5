"""Front-end checks (POLICY.md section 1): what decides whether a line enters adjudication.

`parse` turns raw bytes into a JSON object or says why it is not one (a DLQ record);
`validate` turns the object into a `ClaimLine` or the rejection reasons, each naming the
field; `header_conflicts` compares the claim-level fields of two lines of one claim.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from pydantic import ValidationError

from contract.models import HEADER_FIELDS, ClaimLine, RejectionReason

MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 32  # a claim line nests 3 levels; deeper JSON cannot be a claim line

#: rejection code by the field a validation error is about; anything else is SCHEMA
_CODE_BY_FIELD = {
    "form": "FORM",
    "provider_npi": "NPI",
    "service_date_to": "MULTI_DATE",
    "line_count": "LINE_NUMBER",
}

#: fields whose own code is only for a value of the right type that breaks the rule
_RULE_ONLY = {"claim_frequency": "CLAIM_FREQUENCY", "original_claim_id": "ORIGINAL_CLAIM_ID", "claim_id": "CLAIM_ID"}

class NotAnObject(ValueError):
    """The message is not a JSON object: it goes to the DLQ with this error."""


def parse(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        raise NotAnObject("empty message (no value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise NotAnObject(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotAnObject(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NotAnObject(f"JSON {type(value).__name__}, not an object")
    if raw.count(b"{" if isinstance(raw, bytes) else "{") + raw.count(b"[" if isinstance(raw, bytes) else "[") > MAX_DEPTH \
            and _depth(value) > MAX_DEPTH:
        raise NotAnObject(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node if isinstance(v, (dict, list)))
    return deepest


#: validation error types that mean "a line number outside 1..line_count"
_LINE_NUMBER_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "value_error"})


def validate(obj: dict[str, Any]) -> ClaimLine | list[RejectionReason]:
    try:
        return ClaimLine.model_validate(obj)
    except ValidationError as exc:
        return [_reason(err) for err in exc.errors(include_url=False, include_input=True)]


def _reason(err: dict[str, Any]) -> RejectionReason:
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or None
    message = err["msg"].removeprefix("Value error, ")
    return RejectionReason(code=_code(loc[0] if loc else None, err), field=field, message=message)


def _code(top: str | None, err: dict[str, Any]) -> str:
    """The specific code only for a present value of the right kind that breaks its rule;
    a missing field, a wrong type or a malformed value is a SCHEMA violation."""
    kind = err["type"]
    if top is None or kind == "missing":
        return "SCHEMA"
    if top == "service_date_to":  # a valid date, other than service_date
        return "MULTI_DATE" if kind == "value_error" and _is_iso_date(err.get("input")) else "SCHEMA"
    if top in _RULE_ONLY:  # a string that is not an accepted code / not a consistent reference
        return _RULE_ONLY[top] if kind in ("value_error", "literal_error") else "SCHEMA"
    if top in ("line_number", "line_count"):
        return "LINE_NUMBER" if kind in _LINE_NUMBER_ERRORS else "SCHEMA"
    return _CODE_BY_FIELD.get(top, "SCHEMA")


def _is_iso_date(value: Any) -> bool:
    if isinstance(value, date):
        return True
    if not (isinstance(value, str) and len(value) == 10 and value.isascii()):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def header_conflicts(first: ClaimLine, other: ClaimLine) -> list[str]:
    """The claim header fields on which two lines of one claim differ."""
    return [f for f in HEADER_FIELDS if getattr(first, f) != getattr(other, f)]


def known_key(obj: dict[str, Any]) -> tuple[str | None, int | None]:
    """claim_id and line_number of a rejected object, where they are usable."""
    claim_id = obj.get("claim_id")
    number = obj.get("line_number")
    return (
        claim_id if isinstance(claim_id, str) and 0 < len(claim_id) <= 64 and claim_id.isprintable() else None,
        number if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 999 else None,
    )
