"""Pydantic models of the /v1 HTTP API's bodies: the claim request (derived from
`contract.models.ClaimLine`), the answers and the error object. `streams.api.openapi` writes the
OpenAPI document from them, and `streams.api.claims` checks a claim request's structure with
`ClaimRequest`, so the document and the code cannot drift apart.

The records in an answer's `lines` are the contract records (`AdjudicatedLine`,
`RejectedLine`) plus the `topic` they were published on: a field added to a contract model
appears in the API's answers and in the document with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from contract import topics
from contract.models import AdjudicatedLine, ClaimLine, RejectedLine, ReprocessProposal
from contract.schemas import DESCRIPTIONS

#: a claim's status in the API's answers: ACCEPTED (published, not waited for), what
#: `streams.api.claims.overall_status` says, or REPLACED / VOIDED (reversed by a correction)
CLAIM_STATUSES = ("ACCEPTED", "PENDING", "IN_REVIEW", "DECIDED", "REJECTED", "PARTIALLY_REJECTED", "REPLACED", "VOIDED",
                  "ADJUSTED")


class _Answer(BaseModel):
    """An answer body: closed, as the API writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _request_field(name: str, optional: bool = False) -> tuple[Any, Any]:
    """`ClaimLine`'s field `name` (type, constraints, default, contract description) for a
    request model; `optional`: the request may leave it out (then it is null)."""
    field = ClaimLine.model_fields[name]
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    description = DESCRIPTIONS.get(("ClaimLine", name))
    if optional:
        return annotation | None, Field(None, description=description)
    if field.is_required():
        return annotation, Field(description=description)
    return annotation, Field(field.default, description=description)


def claim_request_model(header_fields: Sequence[str], line_fields: Sequence[str], max_lines: int) -> type[BaseModel]:
    """The body of `POST /v1/claims`: the claim-level fields once, then 1 to `max_lines`
    lines of the line-level fields, each with `ClaimLine`'s type and constraints. A line
    may leave out `line_number` (its position), the claim `line_count` (the number of lines).
    Unknown fields are ignored, as on the topic."""
    config = ClaimLine.model_config
    line = create_model(
        "ClaimRequestLine", __config__=config,
        __doc__="A line of a claim request: the line-level fields of a claim line (the claim-level ones are given "
                "once, in the claim; repeated here they must have the claim's value).",
        **{f: _request_field(f, optional=f == "line_number") for f in line_fields})
    return create_model(
        "ClaimRequest", __config__=config,
        __doc__="One claim: its claim-level (header) fields once, and its lines. Checked with the pipeline's own "
                "front-end rules before anything is published.",
        **{f: _request_field(f) for f in header_fields},
        line_count=_request_field("line_count", optional=True),
        lines=(list[line], Field(min_length=1, max_length=max_lines, description=f"The claim's lines, 1 to {max_lines}.")),
    )


# --- answers --------------------------------------------------------------------------------


class Decision(AdjudicatedLine):
    """A line's decision, exactly as published on claims.lines.adjudicated, plus its topic."""

    topic: Literal[topics.ADJUDICATED.name]  # type: ignore[valid-type]


class Rejection(RejectedLine):
    """A line's front-end rejection, exactly as published on claims.lines.rejected, plus its topic."""

    topic: Literal[topics.REJECTED.name]  # type: ignore[valid-type]


#: `streams.api.claims._not_ready_reason`
NOT_READY = "Why the claim will not be decided soon, when the worker knows (it has no reference data yet)."
LineRecord = Annotated[Decision | Rejection, Field(discriminator="topic")]
ClaimStatus = Literal[CLAIM_STATUSES]  # type: ignore[valid-type]


class ClaimAccepted(_Answer):
    """A claim published, not waited for (`202`): look it up at `status_url`."""

    claim_id: str
    status_url: str = Field(description="Where to look the claim up: GET it (the claim id URL-encoded).")
    status: Literal["ACCEPTED"]
    reason: str | None = Field(None, description=NOT_READY)


class ClaimAnswer(_Answer):
    """A claim's decisions and rejections recorded so far, one record per answered line, by line number,
    and what corrections (claim frequency 7 and 8) say of it."""

    claim_id: str
    status_url: str = Field(description="Where to look the claim up: GET it (the claim id URL-encoded).")
    status: ClaimStatus = Field(description="PENDING while lines are unanswered; IN_REVIEW while a line is "
                                            "PENDED (waiting for a reviewer); then DECIDED (every line "
                                            "adjudicated), REJECTED (every line rejected) or PARTIALLY_REJECTED; "
                                            "REPLACED or VOIDED once a replacement or void reversed it; ADJUSTED "
                                            "once a payer-initiated adjustment (<claim_id>~A<n>) reversed it.")
    lines: list[LineRecord]
    reason: str | None = Field(None, description=NOT_READY)
    reversed_by: str | None = Field(None, description="The replacement or void that reversed this claim.")
    reversed: list[Decision] | None = Field(None, description="The REVERSED records of this claim's lines.")
    reverses: str | None = Field(None, description="The claim this replacement or void reversed.")
    reversals: list[Decision] | None = Field(None, description="The REVERSED records this replacement or void caused.")
    adjusted_by: str | None = Field(None, description="The payer-initiated adjustment (<claim_id>~A<n>) that reversed this claim.")
    adjusts: str | None = Field(None, description="On an adjusted claim (<claim_id>~A<n>): the submitted claim it adjusts "
                                                  "(`reverses` names the version it reversed).")
    proposal_id: str | None = Field(None, description="On an adjusted claim: the approved reprocess proposal.")


class SimulatedAnswer(_Answer):
    """What a claim would get if it were submitted now; nothing is recorded or published."""

    claim_id: str
    simulated: Literal[True]
    policy_versions: list[str] = Field(description="The rulebook versions the claim was decided under.")
    status: ClaimStatus
    lines: list[LineRecord]


class X12Claim(_Answer):
    """One claim of a waited 837P: its front-end acknowledgement, its state and its 277CA."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    claim_id: str = Field(description="CLM01.")
    status_url: str
    acknowledgement: Literal["ACCEPTED", "REJECTED", "PENDING"]
    status: ClaimStatus
    lines: list[LineRecord]
    ack_277ca: str | None = Field(alias="277ca", description="This claim's own 277CA (X12), or null while not known.")
    remittance_url: str | None = Field(None, description="The claim's 835, once it is decided.")
    claim_response_url: str | None = Field(None, description="The claim's FHIR ClaimResponse, once it is decided.")


class X12Answer(_Answer):
    """The answer of a waited `POST /v1/x12/837`: the 999, the 277CA, every claim's answers."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    interchange_control_number: str = Field(description="ISA13 of the 837.")
    status: Literal["A", "E", "P", "R"] = Field(description="The 999's verdict (AK9): accepted, accepted with "
                                                          "errors, partially accepted, rejected.")
    ack_999: str = Field(alias="999", description="The 999 (X12), as answered without wait.")
    ack_277ca: str | None = Field(alias="277ca", description="One 277CA for every claim whose front-end outcome is "
                                                            "known; null when none is known yet.")
    claims: list[X12Claim]
    interchange: dict[str, Any] = Field(description="The parser's account of the interchange (groups, transaction "
                                                    "sets, their errors): the 999's content as JSON.")


# --- manual review ---------------------------------------------------------------------------


class ReviewPay(BaseModel):
    """A reviewer pays a pended line: at `allowed_amount` (at most the charge, two decimal
    places), by default the amount the rules computed."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["PAY"]
    allowed_amount: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]{1,2})?$", examples=["1250.00"])
    note: str | None = Field(None, max_length=2000)


class ReviewDeny(BaseModel):
    """A reviewer denies a pended line with one of the rulebook's `review_denial_carcs` (group CO)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["DENY"]
    carc: str = Field(description="One of the rulebook's review_denial_carcs (shipped: 16, 50, 96, 197, 252).",
                      examples=["50"])
    rarc: list[str] = Field([], max_length=5, description="Remark codes (LQ*HE).")
    note: str | None = Field(None, max_length=2000)



class OtherLine(_Answer):
    """Another line of the pended line's claim, and where it stands."""

    line_number: int
    procedure_code: str
    status: str
    allowed_amount: str


class ReviewAuthorization(_Answer):
    """A pended line's authorization: the reference record (null fields when the worker no longer
    knows it) and the units in use under it, pended holds included."""

    model_config = ConfigDict(frozen=True, extra="allow")

    authorization_number: str
    status: str | None
    units_used: str | None = Field(description="Units of lines paid or pended under it (decimal string).")


class ReviewItem(_Answer):
    """An open pend of the review queue: the line, why it waits, and its claim's other lines."""

    claim_id: str
    line_number: int
    reason: str = Field(description="HIGH_DOLLAR or NOC_REVIEW (a rulebook version may add reasons).")
    queue: str
    pended_at: str
    age_seconds: int
    procedure_code: str
    ndc11: str | None
    charge_amount: str
    suggested_amount: str = Field(description="What the rules would allow: a PAY without an amount pays this.")
    member_id: str
    provider_npi: str
    service_date: str
    modifiers: list[str]
    policy_version: str
    pend: dict[str, Any] | None
    pricing: dict[str, Any] | None
    authorization: ReviewAuthorization | None = Field(description="The claim's authorization as the worker's reference "
                                                                  "data has it, with the units in use under it.")
    other_lines: list[OtherLine]


class ReviewEvent(_Answer):
    """One event of a line's review: PENDED (by the rule), DECIDED (by the reviewer), REVERSED (by a correction)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    seq: int
    event: Literal["PENDED", "DECIDED", "REVERSED"]
    by: str = Field(description="The rule that pended the line, the reviewer, or the correcting claim.")
    at: str


class Reviewer(_Answer):
    """Who the token is, what it may decide, and the review vocabulary of the loaded rulebooks."""

    name: str
    can_decide: bool
    queues: list[str]
    all_queues: list[str]
    reasons: list[str]
    review_denial_carcs: list[str]

# --- Monitor Mode's impact -----------------------------------------------------------------

Dollars = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", description="Dollars and cents, a decimal string.")]


class ImpactRow(_Answer):
    """One group's figures over the lines compared (`streams.pipeline.impact.Row`)."""

    group: str = Field(description="The rule ids that made a changed line's difference (joined by ` + `; "
                                   "`(no change)` for the lines decided alike), the provider NPI or the procedure code.")
    lines: int = Field(ge=0, description="Lines compared in the group.")
    changed: int = Field(ge=0, description="Lines whose status, allowed amount or set of CARCs differs.")
    share: str = Field(pattern=r"^[01]\.[0-9]{4}$",
                       description="Changed lines as a share of the group's lines (for a rule, of every line "
                                   "compared), to four places.")
    allowed_before: Dollars
    allowed_after: Dollars
    difference: Dollars
    newly_denied: int = Field(ge=0, description="Changed lines DENIED under the candidate and not live.")
    newly_paid: int = Field(ge=0, description="Changed lines PAID under the candidate and not live.")
    newly_pended: int = Field(ge=0, description="Changed lines PENDED under the candidate and not live.")


class ImpactAnswer(_Answer):
    """Monitor Mode's impact on the lines this worker decided since it started: one table, by
    rule, provider NPI or procedure code, the same figures as `claims-pipeline shadow --report`."""

    by: Literal["rule", "provider_npi", "procedure_code"]
    candidate_versions: list[str] = Field(description="The candidate rulebook version(s).")
    since: str = Field(description="When this worker started counting (ISO 8601, UTC).")
    rows: list[ImpactRow] = Field(description="One row per group; the largest differences first.")
    total: ImpactRow = Field(description="Every line compared (group `TOTAL`): the rows add up to it.")


# --- errors ---------------------------------------------------------------------------------


class Problem(_Answer):
    """One problem of a refused request."""

    code: str = Field(description="Stable code, e.g. SCHEMA, NPI, UNAUTHORIZED.")
    field: str | None = Field(description="The field at fault: a path into the request body (lines[1].units "
                                          "is the units of the second line), a query parameter or a header; or null.")
    message: str


class ErrorDetail(Problem):
    """The first problem, and with several of them, every one in `errors`."""

    errors: list[Problem] | None = Field(None, description="Every problem, when there are several.")


class ErrorAnswer(_Answer):
    """Every refusal: `{"error": {"code", "message", "field"[, "errors"]}}`, never a stack trace."""

    error: ErrorDetail


class PendedLine(_Answer):
    """A line of the claim waiting for a reviewer (CONTRACT.md *Pended lines and manual review*)."""

    line_number: int
    reason: str = Field(description="Why it waits: HIGH_DOLLAR or NOC_REVIEW (the rulebook may add reasons).")
    queue: str = Field(description="The review queue it waits in, e.g. PAYMENT_INTEGRITY or CLINICAL.")
    pended_at: str = Field(description="When it was pended (ISO 8601, UTC).")


class PendedAnswer(ErrorAnswer):
    """409 `PENDED` from a claim's 835: the claim is not remitted while lines are pended; they
    are named here, and its 835 is written once every line is final."""

    pended_lines: list[PendedLine]


class ReviewConflict(AdjudicatedLine):
    """`409` of a review decision: the line was decided otherwise, or reversed. The answer is the
    line's current record (its fields at the top level, as the `200` answers it), with `error`
    and the same record again in `current`."""

    error: ErrorDetail
    current: AdjudicatedLine


class ProposalList(_Answer):
    """Reprocess proposals, oldest first."""

    proposals: list[ReprocessProposal]
    count: int


class ProposalDecision(BaseModel):
    """A reviewer of the REPROCESS queue approves (the adjustment is made) or rejects a proposal."""

    model_config = ConfigDict(extra="allow")

    action: Literal["APPROVE", "REJECT"]
    note: str | None = Field(None, max_length=2000)


class ProposalConflict(ErrorAnswer):
    """`409` of a proposal decision: it is no longer open (`current`), or the claim's dry run no
    longer gives it (withdrawn, and `new_proposal_id` names the one made instead, if any)."""

    current: ReprocessProposal
    new_proposal_id: str | None = None
