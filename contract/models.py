"""Pydantic v2 models of every record in CONTRACT.md, plus the internal claim messages.

The contract models are the single source of truth for topic payloads and their JSON
Schemas. Money and quantities are `Decimal` and travel as JSON strings; inputs also accept
JSON numbers. Inputs ignore unknown fields; outputs are frozen and closed.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)

FORMS = ("CMS-1500", "837P")
NDC_UNITS = ("F2", "GR", "ML", "UN")


def _iso_date(value: Any) -> Any:
    """Dates are ISO `YYYY-MM-DD` strings on the wire; numbers and other shapes are errors."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return date.fromisoformat(value)
    raise ValueError("must be a date in YYYY-MM-DD form")


def _upper_strip(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


@lru_cache(maxsize=65536)
def _npi_check_digit_ok(npi: str) -> bool:
    """Luhn over the NPI with the 80840 card-issuer prefix (CMS NPI check digit standard)."""
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _valid_npi(value: str) -> str:
    if not re.fullmatch(r"[0-9]{10}", value):  # ASCII digits only (\d matches any script)
        raise ValueError("must be 10 digits")
    if not _npi_check_digit_ok(value):
        raise ValueError("NPI check digit is invalid")
    return value


def _modifier(value: str) -> str:
    if not re.fullmatch(r"[A-Z0-9]{2}", value):
        raise ValueError("a modifier is two letters or digits")
    return value


ModelT = TypeVar("ModelT", bound=BaseModel)

DecimalStr = PlainSerializer(lambda d: str(d), return_type=str, when_used="json")
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Money = Annotated[Decimal, Field(ge=0, max_digits=15, decimal_places=2, allow_inf_nan=False), DecimalStr]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=15, decimal_places=4, allow_inf_nan=False), DecimalStr]
Code = Annotated[str, BeforeValidator(_upper_strip), Field(min_length=1, max_length=16)]
#: identifiers: printable text only (control characters cannot be stored or echoed safely)
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, Field(max_length=200)]


def _money2(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


Money2 = Annotated[Decimal, PlainSerializer(_money2, return_type=str, when_used="json")]
DecimalOut = Annotated[Decimal, DecimalStr]


class _Input(BaseModel):
    """Input records: unknown fields are ignored (forward compatibility)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)


class _Output(BaseModel):
    """Output records: closed and immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")


#: BaseModel's slots, set through their descriptors (frozen models refuse `setattr`)
_SET_DICT, _SET_FIELDS_SET, _SET_EXTRA, _SET_PRIVATE = (
    BaseModel.__dict__[name].__set__ for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"))


_new = object.__new__


def build(cls: type[ModelT], **values: Any) -> ModelT:
    """Construct a model from values the engine computed itself, skipping validation (the
    engine's hot path; `model_construct` costs ~15 us). Every field must be given. The
    slots are set inline here and in `evolve`: a shared helper's call cost ~15 % of a build."""
    obj = _new(cls)
    _SET_DICT(obj, values)
    _SET_FIELDS_SET(obj, set(values))
    _SET_EXTRA(obj, None)
    _SET_PRIVATE(obj, None)
    return obj


def evolve(model: ModelT, **changes: Any) -> ModelT:
    """A copy of a trusted model with some fields changed, without validation."""
    values = model.__dict__.copy()
    values.update(changes)
    obj = _new(type(model))
    _SET_DICT(obj, values)
    _SET_FIELDS_SET(obj, set(values))
    _SET_EXTRA(obj, None)
    _SET_PRIVATE(obj, None)
    return obj


#: claim frequency codes (CMS-1500 item 22 / 837P CLM05-3): original, replacement, void
ORIGINAL, REPLACEMENT, VOID = "1", "7", "8"

#: why a replacement or void is rejected when it is adjudicated (CONTRACT.md *Corrections and voids*)
ORIGINAL_NOT_FOUND = "ORIGINAL_NOT_FOUND"
ORIGINAL_ALREADY_REPLACED = "ORIGINAL_ALREADY_REPLACED"
ORIGINAL_MISMATCH = "ORIGINAL_MISMATCH"
CORRECTION_REJECTIONS = (ORIGINAL_NOT_FOUND, ORIGINAL_ALREADY_REPLACED, ORIGINAL_MISMATCH)


def _frequency_text(value: Any) -> Any:
    """Accept the code as a JSON number too (`7`), like the contract's other inputs."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value



# --- input: claims.lines.submitted ------------------------------------------------------


class DrugDetails(_Input):
    """The drug/biological details of a line. Missing pieces are a denial (16/M119), not a
    rejection, so every field is optional here and judged by the rulebook."""

    ndc: Annotated[str, Field(max_length=32)] | None = None
    quantity: Quantity | None = None
    unit: Annotated[str, BeforeValidator(_upper_strip), Field(max_length=8)] | None = None
    dosage: Text | None = None
    frequency: Text | None = None
    duration_minutes: Annotated[int, Field(ge=0, le=100_000)] | None = None


class ClaimLine(_Input):
    """One submitted claim line (a CMS-1500 service line or its 837P loop 2400)."""

    claim_id: Ident
    line_number: Annotated[int, Field(ge=1, le=999, strict=True)]
    line_count: Annotated[int, Field(ge=1, le=999, strict=True)]
    form: Annotated[str, AfterValidator(lambda f: f if f in FORMS else _bad_form(f))]
    member_id: Ident
    provider_npi: Annotated[str, AfterValidator(_valid_npi)]
    authorization_number: Annotated[str, Field(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None
    service_date: IsoDate
    service_date_to: IsoDate | None = None
    procedure_code: Annotated[Code, Field(pattern=r"^[A-Z0-9]{5}$")]
    modifiers: Annotated[
        list[Annotated[str, BeforeValidator(_upper_strip), AfterValidator(_modifier)]],
        Field(max_length=4),
    ] = []
    units: Quantity
    charge_amount: Money
    diagnosis_codes: Annotated[list[Annotated[Code, Field(max_length=8)]], Field(max_length=12)] = []
    drug: DrugDetails | None = None
    claim_frequency: Annotated[Literal["1", "7", "8"], BeforeValidator(_frequency_text)] = ORIGINAL
    original_claim_id: Annotated[Ident | None, Field(validate_default=True)] = None

    @field_validator("claim_id")
    @classmethod
    def _not_an_adjustment_id(cls, claim_id: str) -> str:
        if "~" in claim_id:  # reserved for the pipeline's adjusted claims, <claim_id>~A<n>
            raise ValueError("a claim_id may not contain '~' (reserved for payer-initiated adjustments, <claim_id>~A<n>)")
        return claim_id

    @field_validator("line_count")
    @classmethod
    def _count_covers_number(cls, count: int, info: ValidationInfo) -> int:
        number = info.data.get("line_number")
        if number is not None and number > count:
            raise ValueError(f"line_number {number} exceeds line_count {count}")
        return count

    @field_validator("service_date_to")
    @classmethod
    def _single_date(cls, to: date | None, info: ValidationInfo) -> date | None:
        if to is not None and to != info.data.get("service_date", to):
            raise ValueError("a line spans more than one date of service; itemize each date on its own line")
        return to

    @field_validator("original_claim_id")
    @classmethod
    def _original_named_right(cls, original: str | None, info: ValidationInfo) -> str | None:
        frequency, claim_id = info.data.get("claim_frequency"), info.data.get("claim_id")
        if frequency == ORIGINAL and original is not None:
            raise ValueError("an original claim (claim_frequency 1) names no original_claim_id")
        if frequency in (REPLACEMENT, VOID) and original is None:
            raise ValueError("a replacement (7) or void (8) must name the claim it corrects in original_claim_id")
        if original is not None and original == claim_id:
            raise ValueError("original_claim_id names the claim itself; name the claim being corrected")
        return original

    @property
    def is_correction(self) -> bool:
        """A replacement (7) or a void (8)."""
        return self.claim_frequency != "1"

    @property
    def key(self) -> tuple[str, int]:
        return (self.claim_id, self.line_number)

    def header(self) -> dict[str, Any]:
        """The claim-level fields that must be identical on every line of a claim."""
        return {f: getattr(self, f) for f in HEADER_FIELDS}


HEADER_FIELDS = (
    "form",
    "member_id",
    "provider_npi",
    "authorization_number",
    "line_count",
    "diagnosis_codes",
    "claim_frequency",
    "original_claim_id",
)

def _bad_form(form: str) -> str:
    raise ValueError(f"form {form!r} is not accepted; submit CMS-1500 or 837P")


# --- reference data (compacted topics) ----------------------------------------------------


class Member(_Input):
    member_id: Annotated[str, Field(min_length=1)]
    plan: Annotated[str, Field(min_length=1)]
    eligible_from: IsoDate
    eligible_to: IsoDate | None = None


class Authorization(_Input):
    authorization_number: Annotated[str, Field(min_length=1)]
    member_id: str
    status: Literal["APPROVED", "DENIED", "PENDING", "VOIDED"]
    procedure_codes: list[Code]
    start_date: IsoDate
    end_date: IsoDate
    approved_units: Annotated[Decimal, Field(ge=0, allow_inf_nan=False), DecimalStr] | None = None


class Drug(_Input):
    ndc: Annotated[str, Field(pattern=r"^\d{11}$")]
    description: str = ""
    billing_unit: Literal["F2", "GR", "ML", "UN"]
    package_type: Literal["SINGLE_USE", "MULTI_USE"]


class AwpPrice(_Input):
    ndc: Annotated[str, Field(pattern=r"^\d{11}$")]
    awp_per_unit: Annotated[Decimal, Field(ge=0, allow_inf_nan=False), DecimalStr]
    effective_from: IsoDate


class FeeScheduleRate(_Input):
    procedure_code: Code
    rate: Annotated[Decimal, Field(ge=0, allow_inf_nan=False), DecimalStr]
    effective_from: IsoDate


class ProviderContract(_Input):
    provider_npi: Annotated[str, Field(pattern=r"^\d{10}$")]
    awp_discount_pct: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False), DecimalStr] = Decimal("0")
    fee_schedule_pct: Annotated[Decimal, Field(ge=0, allow_inf_nan=False), DecimalStr] = Decimal("100")


# --- outputs --------------------------------------------------------------------------------


class Adjustment(_Output):
    """One CAS adjustment (with its LQ remark codes), naming the rule and policy section."""

    group: Literal["CO", "PR", "OA"]
    carc: str
    rarc: list[str] = []
    amount: DecimalOut
    rule: str
    message: str


class Pricing(_Output):
    """How the allowed amount was computed: unit_price x quantity x contract_pct / 100."""

    method: Literal["AWP", "FEE_SCHEDULE"]
    unit_price: DecimalOut
    quantity: DecimalOut
    effective_from: date
    contract_pct: DecimalOut


#: why a line waits for a person (POLICY.md *Manual review*); a rulebook may add reasons
PEND_REASONS = ("HIGH_DOLLAR", "NOC_REVIEW")
#: what a reviewer may do with a pended line
REVIEW_ACTIONS = ("PAY", "DENY")


class Pend(_Output):
    """Why a PENDED line waits for a reviewer, and what the rules would allow it."""

    reason: str
    queue: str
    rule: str
    message: str
    suggested_amount: Money2
    pended_at: datetime


class Review(_Output):
    """The reviewer's decision a final record after a review carries."""

    action: Literal["PAY", "DENY"]
    reviewer: str
    decided_at: datetime
    note: str | None = None


class AdjudicatedLine(_Output):
    """A decision on `claims.lines.adjudicated` (key: claim_id)."""

    claim_id: str
    line_number: int
    member_id: str
    provider_npi: str
    procedure_code: str
    modifiers: list[str]
    service_date: date
    ndc11: str | None
    status: Literal["PAID", "DENIED", "REVERSED", "VOIDED", "PENDED"]
    allowed_amount: Money2
    adjustments: list[Adjustment]
    pricing: Pricing | None
    policy_version: str
    adjudicated_at: datetime
    #: on a REVERSED record: the claim_id of the replacement or void that reversed it
    reversed_by: str | None = None
    #: on a PENDED record: why it waits and what the rules would allow (null otherwise)
    pend: Pend | None = None
    #: on a final record after a review: the reviewer's decision (null otherwise)
    review: Review | None = None
    #: on the lines of a payer-initiated adjustment: the claim adjusted, the approved proposal
    adjusts: str | None = None
    proposal_id: str | None = None


#: a reprocess proposal's life (CONTRACT.md *Reprocessing after a retroactive reference change*)
PROPOSAL_STATUSES = ("OPEN", "SUPERSEDED", "WITHDRAWN", "APPROVED", "REJECTED")
#: what a reviewer of the REPROCESS queue may do with an open proposal
PROPOSAL_ACTIONS = ("APPROVE", "REJECT")


class ProposalTrigger(_Output):
    """The reference record whose change made a proposal: its topic and key."""

    topic: str
    key: str


class ProposalLine(_Output):
    """One line a proposal changes: its current record and what a dry run decides now."""

    line_number: int
    before: AdjudicatedLine
    after: AdjudicatedLine


class ReprocessProposal(_Output):
    """A reprocess proposal on `claims.reprocess.proposals` (key: claim_id)."""

    proposal_id: str
    claim_id: str
    status: Literal["OPEN", "SUPERSEDED", "WITHDRAWN", "APPROVED", "REJECTED"]
    trigger: ProposalTrigger
    created_at: datetime
    lines: list[ProposalLine]
    #: the claim's allowed amount now, and after the adjustment (every line of the claim)
    allowed_before: Money2
    allowed_after: Money2
    #: once APPROVED: the adjusted claim's minted id (`<claim_id>~A<n>`); null otherwise
    adjustment_claim_id: str | None = None
    #: once decided (APPROVED or REJECTED): who (`auto` for the rulebook), when, and the note
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None


class RejectionReason(_Output):
    code: str
    field: str | None
    message: str


class RejectedLine(_Output):
    """A front-end rejection on `claims.lines.rejected` (key: claim_id where known)."""

    claim_id: str | None
    line_number: int | None
    reasons: list[RejectionReason]
    original: Any
    rejected_at: datetime


class ShadowDifference(_Output):
    """A line the candidate policy decides differently from the live one, on
    `claims.shadow.differences` (key: claim_id): both decisions and the rules that differ."""

    claim_id: str
    line_number: int
    candidate_version: str
    before: AdjudicatedLine
    after: AdjudicatedLine
    rules: list[str]


# --- internal messages between stages ----------------------------------------------------


class Finding(_Output):
    """A denial found by a stage: the rulebook rule id plus what was found."""

    rule: str
    detail: str = ""


class LineWork(_Output):
    """A line on its way through the stages, with what each stage found."""

    line: ClaimLine
    ndc11: str | None = None
    findings: tuple[Finding, ...] = ()
    pricing: Pricing | None = None
    priced_amount: DecimalOut | None = None
    price_finding: Finding | None = None
    approved_units: DecimalOut | None = None
    package_type: str | None = None


class ClaimWork(_Output):
    """A whole claim between stages (claim-level messages cost one hop instead of N)."""

    claim_id: str
    member_id: str
    policy_version: str
    submitted_at: datetime
    lines: tuple[LineWork, ...]


class ClaimBatch(_Output):
    """The claims one stage handed on from one partition in one go: internal topics carry
    batches, so the per-message cost of a hop is paid once per batch, not once per claim."""

    claims: tuple[ClaimWork, ...]


# --- the access log (CONTRACT.md *API clients and the access log*) -------------------------


class AccessEntry(_Output):
    """One request that read or changed a claim's data, as the ledger's access log keeps it
    and `claims.audit.access` carries it (key: the client's name)."""

    entry_id: str = Field(description="Unique id of the entry (a SIEM deduplicates by it: the topic is at least once).")
    at: datetime = Field(description="When the request was answered (UTC).")
    client: str | None = Field(description="The API client's or reviewer's name; null when no valid token was given (401).")
    kind: Literal["client", "reviewer", "anonymous"] = Field(description="What `client` names.")
    action: str = Field(description="The route's operation (the OpenAPI operationId), e.g. getClaim.")
    claim_ids: list[str] = Field(description="The claims touched: the claim of the route, the claims submitted, or the claims a listing answered.")
    status: int = Field(description="The HTTP status answered, denials included.")
    request_id: str = Field(description="The request's id, also answered in the X-Request-Id header.")
