"""Front-end checks (POLICY.md section 1): parse, validate, header comparison.

The claim-level rejections (HEADER_MISMATCH, DUPLICATE_LINE_NUMBER, INCOMPLETE, CLAIM_CLOSED,
CLAIM_REJECTED) need the ledger: they are tested in test_ledger.py and, end to end, in
test_batch.py.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.frontend import MAX_MESSAGE_BYTES, NotAnObject, header_conflicts, known_key, parse, validate
from contract.models import HEADER_FIELDS, ClaimLine, RejectionReason

VALID: dict[str, Any] = {
    "claim_id": "C26-1", "line_number": 1, "line_count": 2, "form": "CMS-1500", "member_id": "M1001",
    "provider_npi": "1245678903", "authorization_number": "PA26-1001", "service_date": "2026-02-02",
    "service_date_to": None, "procedure_code": "J0696", "modifiers": ["KP"], "units": "8",
    "charge_amount": "60.00", "diagnosis_codes": ["M86.171"],
    "drug": {"ndc": "0143-9858-10", "quantity": "2", "unit": "UN", "dosage": "2 g", "frequency": "q24h", "duration_minutes": 30},
}


def with_(**changes: Any) -> dict[str, Any]:
    obj = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def reasons(obj: dict[str, Any]) -> list[RejectionReason]:
    out = validate(obj)
    assert isinstance(out, list), f"expected a rejection, got {out!r}"
    assert out, "a rejection names at least one reason"
    for r in out:
        assert r.code and r.message
    return out


def codes(obj: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r.code, r.field) for r in reasons(obj)]


# --- accepted ------------------------------------------------------------------------------------


def test_valid_line() -> None:
    line = validate(VALID)
    assert isinstance(line, ClaimLine)
    assert line.units == Decimal(8) and line.charge_amount == Decimal("60.00")
    assert line.service_date == date(2026, 2, 2) and line.drug.ndc == "0143-9858-10"


def test_defaults_and_optional_fields() -> None:
    line = validate(with_(modifiers=..., diagnosis_codes=..., drug=..., authorization_number=..., service_date_to=...))
    assert isinstance(line, ClaimLine)
    assert line.modifiers == [] and line.diagnosis_codes == [] and line.drug is None
    assert line.authorization_number is None and line.service_date_to is None


def test_unknown_fields_are_ignored() -> None:
    obj = with_(place_of_service="12", line_item_control_number="X-1", extra={"nested": [1, 2]})
    obj["drug"] = dict(VALID["drug"], ndc_qualifier="N4", rx_number="123")
    line = validate(obj)
    assert isinstance(line, ClaimLine)
    assert "place_of_service" not in line.model_dump()
    assert line == validate(VALID)


@pytest.mark.parametrize(("units", "charge", "qty"), [
    ("8", "60.00", "2"), (8, 60, 2), (8.0, 60.0, 2.0), ("8.0", "60", "2.000"), (0.5, 12.34, 0.125), ("1E+1", "6E+1", "2"),
])
def test_decimals_as_strings_or_numbers(units: Any, charge: Any, qty: Any) -> None:
    line = validate(with_(units=units, charge_amount=charge, drug=dict(VALID["drug"], quantity=qty)))
    assert isinstance(line, ClaimLine)
    assert line.units == Decimal(str(units)) and line.charge_amount == Decimal(str(charge))
    assert line.drug.quantity == Decimal(str(qty))


def test_json_number_decimals_are_exact() -> None:
    line = validate(orjson.loads(orjson.dumps(with_(units=0.1, charge_amount=19.99))))
    assert isinstance(line, ClaimLine)
    assert line.units == Decimal("0.1") and line.charge_amount == Decimal("19.99")


def test_same_single_date_is_not_multi_date() -> None:
    assert isinstance(validate(with_(service_date_to="2026-02-02")), ClaimLine)


def test_normalizes_case_and_blanks() -> None:
    line = validate(with_(procedure_code=" j0696 ", modifiers=["kp"], diagnosis_codes=["m86.171"],
                          drug=dict(VALID["drug"], unit="un")))
    assert isinstance(line, ClaimLine)
    assert line.procedure_code == "J0696" and line.modifiers == ["KP"]
    assert line.diagnosis_codes == ["M86.171"] and line.drug.unit == "UN"


@pytest.mark.parametrize("form", ["CMS-1500", "837P"])
def test_both_forms_accepted(form: str) -> None:
    assert isinstance(validate(with_(form=form)), ClaimLine)


def test_incomplete_drug_details_are_not_a_rejection() -> None:
    line = validate(with_(drug={"ndc": None}))
    assert isinstance(line, ClaimLine) and line.drug.quantity is None
    assert isinstance(validate(with_(drug={})), ClaimLine)


# --- each rejection code names its field --------------------------------------------------------


@pytest.mark.parametrize(("changes", "expected"), [
    ({"form": "UB-04"}, ("FORM", "form")),
    ({"form": "cms-1500"}, ("FORM", "form")),
    ({"form": "CMS1500"}, ("FORM", "form")),
    ({"form": 1500}, ("FORM", "form")),
    ({"service_date_to": "2026-02-08"}, ("MULTI_DATE", "service_date_to")),
    ({"service_date_to": "2026-02-01"}, ("MULTI_DATE", "service_date_to")),
    ({"provider_npi": "1245678904"}, ("NPI", "provider_npi")),
    ({"provider_npi": "124567890"}, ("NPI", "provider_npi")),
    ({"provider_npi": "12456789030"}, ("NPI", "provider_npi")),
    ({"provider_npi": "12456789O3"}, ("NPI", "provider_npi")),
    ({"provider_npi": "１２４５６７８９０３"}, ("NPI", "provider_npi")),
    ({"provider_npi": 1245678903}, ("NPI", "provider_npi")),
    ({"line_number": 3, "line_count": 2}, ("LINE_NUMBER", "line_count")),
    ({"line_number": 0}, ("LINE_NUMBER", "line_number")),
    ({"line_number": 1000, "line_count": 999}, ("LINE_NUMBER", "line_number")),
    ({"line_count": 0}, ("LINE_NUMBER", "line_count")),
    ({"line_count": 1000}, ("LINE_NUMBER", "line_count")),
])
def test_rejection_code_and_field(changes: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in codes(with_(**changes))


@pytest.mark.parametrize(("changes", "field"), [
    ({"claim_id": ...}, "claim_id"),
    ({"claim_id": ""}, "claim_id"),
    ({"claim_id": "x" * 65}, "claim_id"),
    ({"claim_id": 17}, "claim_id"),
    ({"line_number": ...}, "line_number"),
    ({"line_number": "1"}, "line_number"),
    ({"line_number": 1.0}, "line_number"),
    ({"line_number": True}, "line_number"),
    ({"line_count": ...}, "line_count"),
    ({"line_count": "2"}, "line_count"),
    ({"form": ...}, "form"),
    ({"member_id": ...}, "member_id"),
    ({"member_id": ""}, "member_id"),
    ({"provider_npi": ...}, "provider_npi"),
    ({"service_date": ...}, "service_date"),
    ({"service_date": "02/02/2026"}, "service_date"),
    ({"service_date": "2026-02-30"}, "service_date"),
    ({"service_date": "2026-2-2"}, "service_date"),
    ({"service_date": "2026-02-02T10:00:00Z"}, "service_date"),
    ({"service_date": 20260202}, "service_date"),
    ({"service_date": "２０２６-０２-０２"}, "service_date"),
    ({"service_date_to": "2026/02/08"}, "service_date_to"),
    ({"service_date_to": "2026-13-01"}, "service_date_to"),
    ({"procedure_code": ...}, "procedure_code"),
    ({"procedure_code": "J069"}, "procedure_code"),
    ({"procedure_code": "J0696X"}, "procedure_code"),
    ({"procedure_code": "J-696"}, "procedure_code"),
    ({"procedure_code": "Ｊ0696"}, "procedure_code"),
    ({"modifiers": ["K"]}, "modifiers.0"),
    ({"modifiers": ["KP", "K-"]}, "modifiers.1"),
    ({"modifiers": ["KP", "KQ", "JW", "SH", "SJ"]}, "modifiers"),
    ({"modifiers": "KP"}, "modifiers"),
    ({"units": ...}, "units"),
    ({"units": "0"}, "units"),
    ({"units": -1}, "units"),
    ({"units": "abc"}, "units"),
    ({"units": "NaN"}, "units"),
    ({"units": "Infinity"}, "units"),
    ({"units": "-Infinity"}, "units"),
    ({"units": "sNaN"}, "units"),
    ({"units": True}, "units"),
    ({"units": "1e400"}, "units"),
    ({"units": 1e300}, "units"),
    ({"units": "0.00001"}, "units"),
    ({"units": [1]}, "units"),
    ({"charge_amount": ...}, "charge_amount"),
    ({"charge_amount": "-0.01"}, "charge_amount"),
    ({"charge_amount": "12.345"}, "charge_amount"),
    ({"charge_amount": "1" * 16}, "charge_amount"),
    ({"charge_amount": "NaN"}, "charge_amount"),
    ({"charge_amount": "12,50"}, "charge_amount"),
    ({"charge_amount": None}, "charge_amount"),
    ({"diagnosis_codes": "M86.171"}, "diagnosis_codes"),
    ({"diagnosis_codes": ["M86.171XXXX"]}, "diagnosis_codes.0"),
    ({"diagnosis_codes": [""]}, "diagnosis_codes.0"),
    ({"authorization_number": 12345}, "authorization_number"),
    ({"authorization_number": "A" * 65}, "authorization_number"),
    ({"drug": "0143-9858-10"}, "drug"),
    ({"drug": {"ndc": "0143-9858-10", "quantity": "0"}}, "drug.quantity"),
    ({"drug": {"ndc": "0143-9858-10", "quantity": "NaN"}}, "drug.quantity"),
    ({"drug": {"ndc": 14398581}}, "drug.ndc"),
    ({"drug": {"ndc": "0143-9858-10", "duration_minutes": "thirty"}}, "drug.duration_minutes"),
    ({"drug": {"ndc": "0143-9858-10", "dosage": "x" * 201}}, "drug.dosage"),
])
def test_schema_rejections_name_the_field(changes: dict[str, Any], field: str) -> None:
    assert ("SCHEMA", field) in codes(with_(**changes))


def test_several_problems_give_several_reasons() -> None:
    got = codes(with_(form="UB-04", provider_npi="1245678904", units="0", service_date_to="2026-02-09"))
    assert set(got) >= {("FORM", "form"), ("NPI", "provider_npi"), ("SCHEMA", "units"), ("MULTI_DATE", "service_date_to")}


def test_messages_are_plain_text() -> None:
    for r in reasons(with_(provider_npi="1245678904", service_date_to="2026-02-08")):
        assert not r.message.startswith("Value error")
        assert "https://" not in r.message


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12))
def test_arbitrary_unicode_npi_is_rejected_cleanly(npi: str) -> None:
    out = validate(with_(provider_npi=npi))
    if isinstance(out, ClaimLine):
        assert npi.strip().isascii() and len(npi.strip()) == 10
    else:
        assert [(r.code, r.field) for r in out] == [("NPI", "provider_npi")]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(list(VALID)), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
), max_size=4))
def test_any_wrong_value_is_a_clean_rejection(changes: dict[str, Any]) -> None:
    out = validate(with_(**changes))  # never raises
    if isinstance(out, list):
        assert all(r.code in {"SCHEMA", "FORM", "MULTI_DATE", "NPI", "LINE_NUMBER"} for r in out)
        assert all(r.field for r in out)


# --- parse: what goes to the DLQ ----------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"[1, 2]", b'"a string"', b"42", b"null", b"true", b"[]",
    b"not json", b"ISA*00*~", b'{"claim_id": "C1"', b"", b"   ", b"\xff\xfe\x00", b'{"a": NaN}',
    b'{"a": Infinity}', b'{"a": 1e400}', b"{'single': 'quotes'}", b'{"a": 1} {"b": 2}',
])
def test_not_an_object_goes_to_dlq(raw: bytes) -> None:
    with pytest.raises(NotAnObject) as err:
        parse(raw)
    assert str(err.value)


def test_none_and_oversized_messages_are_not_objects() -> None:
    with pytest.raises(NotAnObject, match="empty"):
        parse(None)
    big = orjson.dumps(with_(member_id="x" * MAX_MESSAGE_BYTES))
    with pytest.raises(NotAnObject, match="exceeds"):
        parse(big)


@pytest.mark.parametrize("raw", [orjson.dumps(VALID), orjson.dumps(VALID).decode(), b"{}", b' {"a": 1} ',
                                 '{"member_id": "Ĉlaude ✓"}'.encode()])
def test_json_objects_parse(raw: bytes | str) -> None:
    assert isinstance(parse(raw), dict)


def test_huge_integer_does_not_crash() -> None:
    obj = parse(b'{"line_number": 123456789012345678901234567890}')
    got = codes(with_(line_number=obj["line_number"]))
    assert got and got[0][1] == "line_number"


# --- claim header and keys -------------------------------------------------------------------


def test_header_fields_are_the_policy_ones() -> None:
    assert set(HEADER_FIELDS) == {"form", "member_id", "provider_npi", "authorization_number", "line_count", "diagnosis_codes",
                                  "claim_frequency", "original_claim_id"}


@pytest.mark.parametrize(("field", "value"), [
    ("form", "837P"), ("member_id", "M2"), ("provider_npi", "1987654328"), ("authorization_number", None),
    ("line_count", 3), ("diagnosis_codes", ["M86.171", "E11.9"]), ("diagnosis_codes", []),
])
def test_header_conflicts_of_original_fields(field: str, value: Any) -> None:
    first = validate(VALID)
    other = validate(with_(line_number=2, **{field: value}))
    assert header_conflicts(first, other) == [field]


def test_header_conflicts_of_correction_fields() -> None:
    """claim_frequency and original_claim_id are claim header fields (POLICY section 1)."""
    first = validate(with_(claim_frequency="7", original_claim_id="C26-0"))
    assert header_conflicts(first, validate(with_(line_number=2, claim_frequency="8", original_claim_id="C26-0"))) == ["claim_frequency"]
    assert header_conflicts(first, validate(with_(line_number=2, claim_frequency="7", original_claim_id="C26-9"))) == ["original_claim_id"]
    assert header_conflicts(first, validate(with_(line_number=2))) == ["claim_frequency", "original_claim_id"]


def test_line_fields_are_not_header() -> None:
    first = validate(VALID)
    other = validate(with_(line_number=2, procedure_code="S9500", modifiers=[], units="1", charge_amount="150.00",
                           service_date="2026-02-03", drug=None))
    assert header_conflicts(first, other) == []


@pytest.mark.parametrize(("obj", "key"), [
    ({"claim_id": "C1", "line_number": 2}, ("C1", 2)),
    ({"claim_id": "C1", "line_number": "2"}, ("C1", None)),
    ({"claim_id": "C1", "line_number": True}, ("C1", None)),
    ({"claim_id": "C1", "line_number": 0}, ("C1", None)),
    ({"claim_id": "C1", "line_number": 1000}, ("C1", None)),
    ({"claim_id": "", "line_number": 1}, (None, 1)),
    ({"claim_id": 5, "line_number": 1}, (None, 1)),
    ({"claim_id": "x" * 65}, (None, None)),
    ({}, (None, None)),
])
def test_known_key(obj: dict[str, Any], key: tuple[str | None, int | None]) -> None:
    assert known_key(obj) == key


# --- corrections and voids (claim frequency 7 and 8) ----------------------------------------------


@pytest.mark.parametrize(("changes", "frequency", "original"), [
    ({}, "1", None),
    ({"claim_frequency": "1", "original_claim_id": None}, "1", None),
    ({"claim_frequency": "7", "original_claim_id": "C26-0"}, "7", "C26-0"),
    ({"claim_frequency": 8, "original_claim_id": " C26-0 "}, "8", "C26-0"),  # a JSON number; blanks stripped
])
def test_claim_frequency_accepted(changes: dict[str, Any], frequency: str, original: str | None) -> None:
    line = validate(with_(**changes))
    assert isinstance(line, ClaimLine)
    assert (line.claim_frequency, line.original_claim_id, line.is_correction) == (frequency, original, frequency != "1")


@pytest.mark.parametrize(("changes", "code", "field"), [
    ({"claim_frequency": "2"}, "CLAIM_FREQUENCY", "claim_frequency"),
    ({"claim_frequency": "6", "original_claim_id": "C26-0"}, "CLAIM_FREQUENCY", "claim_frequency"),
    ({"claim_frequency": 0}, "CLAIM_FREQUENCY", "claim_frequency"),
    ({"claim_frequency": "7"}, "ORIGINAL_CLAIM_ID", "original_claim_id"),
    ({"claim_frequency": "8", "original_claim_id": None}, "ORIGINAL_CLAIM_ID", "original_claim_id"),
    ({"claim_frequency": "7", "original_claim_id": "C26-1"}, "ORIGINAL_CLAIM_ID", "original_claim_id"),  # itself
    ({"original_claim_id": "C26-0"}, "ORIGINAL_CLAIM_ID", "original_claim_id"),  # frequency 1 with an original
    ({"claim_frequency": "7", "original_claim_id": ""}, "SCHEMA", "original_claim_id"),
    ({"claim_frequency": "7", "original_claim_id": 7}, "SCHEMA", "original_claim_id"),
    ({"claim_frequency": "7", "original_claim_id": "C\x00"}, "SCHEMA", "original_claim_id"),
])
def test_claim_frequency_rejections(changes: dict[str, Any], code: str, field: str) -> None:
    assert codes(with_(**changes)) == [(code, field)]


def test_a_claim_id_with_a_tilde_is_rejected_claim_id() -> None:
    """`~` is reserved for the payer's adjusted claims (<claim_id>~A<n>, CONTRACT.md
    *Reprocessing*); an original_claim_id may name one."""
    assert codes(with_(claim_id="C1~A1")) == [("CLAIM_ID", "claim_id")]
    assert codes(with_(claim_id="~")) == [("CLAIM_ID", "claim_id")]
    line = validate(with_(claim_id="R1", claim_frequency="7", original_claim_id="C1~A1"))
    assert isinstance(line, ClaimLine) and line.original_claim_id == "C1~A1"
