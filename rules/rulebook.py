"""The rulebook: versioned, effective-dated policy data, validated and compiled once.

Each `rulebook/*.toml` file is one policy version. Loading validates it against
`RulebookFile`, checks that it defines every rule the engine can raise, and compiles code
ranges into frozensets so the engine only does set lookups per line.
"""

from __future__ import annotations

import bisect
import tomllib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.models import Adjustment, build

#: Every rule id the engine can raise; a rulebook missing one of them does not load.
ENGINE_RULES = frozenset(
    {
        "ELIG-MEMBER-UNKNOWN", "ELIG-NOT-ELIGIBLE", "ELIG-MASSHEALTH-NOT-COVERED",
        "AUTH-MISSING", "AUTH-NOT-FOUND", "AUTH-NOT-APPROVED", "AUTH-OTHER-MEMBER",
        "AUTH-CODE-NOT-COVERED", "AUTH-DATE-OUTSIDE", "AUTH-UNITS-EXHAUSTED",
        "DRUG-NDC-MISSING", "DRUG-NDC-MALFORMED", "DRUG-NDC-UNKNOWN",
        "DRUG-DETAILS-INCOMPLETE", "DRUG-UNIT-MISMATCH",
        "EDIT-PER-DIEM-NO-DRUG", "EDIT-PER-DIEM-UNITS", "EDIT-NURSING-ADDITIONAL-HOUR",
        "EDIT-CONCURRENCY-MISSING", "EDIT-CONCURRENCY-WRONG",
        "EDIT-MULTI-NDC-MISSING", "EDIT-MULTI-NDC-WRONG",
        "EDIT-WASTAGE-NO-ADMINISTERED", "EDIT-WASTAGE-MULTI-USE", "EDIT-DUPLICATE",
        "PRICE-NO-AWP", "PRICE-NO-FEE", "PRICE-CONTRACT-REDUCTION",
    }
)
#: Rules of the edits a version may switch on; a version that switches one on must define them.
OPTIONAL_EDIT_RULES = {"no_wastage_attestation": frozenset({"EDIT-JZ-MISSING", "EDIT-JZ-WRONG"})}

CodeRange = tuple[str, str]


class RulebookError(ValueError):
    """A rulebook file that cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleSpec(_Strict):
    section: str
    group: str = "CO"
    carc: str
    rarc: list[str] = []
    message: str


class CodeClasses(_Strict):
    therapy_per_diem: list[str]
    catheter_care_per_diem: list[str]
    nursing_first_visit: list[str]
    nursing_additional_hour: list[str]
    supplies_and_kits: list[str]
    drug_code_ranges: list[CodeRange]
    ndc_required_ranges: list[CodeRange]
    nutrition_codes: list[str]
    nutrition_ranges: list[CodeRange]

    @field_validator("drug_code_ranges", "ndc_required_ranges", "nutrition_ranges")
    @classmethod
    def _ranges_well_formed(cls, ranges: list[CodeRange]) -> list[CodeRange]:
        for low, high in ranges:
            if len(low) != 5 or low[0] != high[0] or not (low[1:].isdigit() and high[1:].isdigit()) or low > high:
                raise ValueError(f"bad code range {low}-{high}")
        return ranges


class Modifiers(_Strict):
    concurrency_second: str
    concurrency_third_or_more: str
    multi_ndc_first: str
    multi_ndc_subsequent: str
    wastage: str
    no_wastage: str = "JZ"


class Edits(_Strict):
    """Claim-day edits a version switches on beyond those every version applies."""

    no_wastage_attestation: bool = False


class Coverage(_Strict):
    restricted_plan: str
    state_mandated_diagnosis_prefixes: list[str]


class MultiNdc(_Strict):
    forms_checked: list[str]


class PendReason(_Strict):
    """One reason a payable line is pended for a person: every condition given must hold
    (`min_allowed`: the allowed amount after pricing, the lesser-of and rounding is at least
    this; `procedure_codes`: the line's code is one of these). Reasons are tried in order;
    the first that holds names the pend."""

    reason: str = Field(min_length=1, pattern=r"^[A-Z][A-Z0-9_]*$")
    rule: str = Field(min_length=1)
    queue: str = Field(min_length=1, pattern=r"^[A-Z][A-Z0-9_]*$")
    message: str = Field(min_length=1)
    min_allowed: Decimal | None = Field(default=None, ge=0)
    procedure_codes: list[str] | None = None

    @model_validator(mode="after")
    def _has_a_condition(self) -> PendReason:
        if self.min_allowed is None and not self.procedure_codes:
            raise ValueError(f"pend reason {self.reason}: give min_allowed or procedure_codes")
        return self


class ReviewPolicy(_Strict):
    """POLICY.md *Manual review*: what pends, in which queue, and what a reviewer may do."""

    section: str = "Manual review"
    reasons: list[PendReason] = []
    #: the CARCs a reviewer may deny a pended line with (group CO)
    review_denial_carcs: list[str] = []
    priced_message: str = "Allowed amount set by a reviewer."
    denied_message: str = "Denied by a reviewer."

    @property
    def queues(self) -> list[str]:
        return list(dict.fromkeys(r.queue for r in self.reasons))


class ReprocessPolicy(_Strict):
    """POLICY.md *Reprocessing*: which adjustments are made without a person."""

    section: str = "Reprocessing"
    #: an adjustment in which no line's allowed amount falls and no PAID line becomes DENIED
    #: is approved at once (reviewer `auto`); every other waits for the REPROCESS queue
    auto_approve_increases: bool = False
    #: the queue whose reviewers decide proposals
    queue: str = "REPROCESS"


class RulebookFile(_Strict):
    version: str = Field(min_length=1)
    effective_from: date
    source: str
    code_classes: CodeClasses
    modifiers: Modifiers
    coverage: Coverage
    multi_ndc: MultiNdc
    edits: Edits = Edits()
    review: ReviewPolicy = ReviewPolicy()
    reprocess: ReprocessPolicy = ReprocessPolicy()
    rules: dict[str, RuleSpec]

    @property
    def required_rules(self) -> frozenset[str]:
        on = [OPTIONAL_EDIT_RULES[name] for name, enabled in self.edits if enabled]
        return ENGINE_RULES.union(*on)


def _expand(ranges: list[CodeRange]) -> frozenset[str]:
    return frozenset(
        f"{low[0]}{n:04d}" for low, high in ranges for n in range(int(low[1:]), int(high[1:]) + 1)
    )


@dataclass(frozen=True, slots=True)
class Rulebook:
    """One compiled policy version: set lookups only, nothing parsed per line."""

    version: str
    effective_from: date
    therapy_per_diem: frozenset[str]
    per_diem: frozenset[str]
    nursing_first: frozenset[str]
    nursing_additional: frozenset[str]
    drug_codes: frozenset[str]
    ndc_required: frozenset[str]
    nutrition: frozenset[str]
    restricted_plan: str
    mandated_dx_prefixes: tuple[str, ...]
    multi_ndc_forms: frozenset[str]
    no_wastage_edit: bool
    mod: Modifiers
    rules: dict[str, RuleSpec]
    #: each rule's adjustment message without detail, composed once rather than per line
    messages: dict[str, str]
    review: ReviewPolicy
    reprocess: ReprocessPolicy

    @classmethod
    def compile(cls, data: RulebookFile) -> Rulebook:
        cc = data.code_classes
        return cls(
            version=data.version,
            effective_from=data.effective_from,
            therapy_per_diem=frozenset(cc.therapy_per_diem),
            per_diem=frozenset(cc.therapy_per_diem) | frozenset(cc.catheter_care_per_diem),
            nursing_first=frozenset(cc.nursing_first_visit),
            nursing_additional=frozenset(cc.nursing_additional_hour),
            drug_codes=_expand(cc.drug_code_ranges),
            ndc_required=_expand(cc.ndc_required_ranges),
            nutrition=frozenset(cc.nutrition_codes) | _expand(cc.nutrition_ranges),
            restricted_plan=data.coverage.restricted_plan,
            mandated_dx_prefixes=tuple(p.replace(".", "") for p in data.coverage.state_mandated_diagnosis_prefixes),
            multi_ndc_forms=frozenset(data.multi_ndc.forms_checked),
            no_wastage_edit=data.edits.no_wastage_attestation,
            mod=data.modifiers,
            rules=dict(data.rules),
            messages={rule_id: _message(spec, "") for rule_id, spec in data.rules.items()},
            review=data.review,
            reprocess=data.reprocess,
        )

    def pend_reason(self, procedure_code: str, allowed: Decimal) -> PendReason | None:
        """The first `[review]` reason that sends a payable line to a person, or None."""
        for reason in self.review.reasons:
            if reason.min_allowed is not None and allowed < reason.min_allowed:
                continue
            if reason.procedure_codes and procedure_code not in reason.procedure_codes:
                continue
            return reason
        return None

    def review_adjustment(self, action: str, amount: Decimal, carc: str = "45", rarc: list[str] | None = None) -> Adjustment:
        """A reviewer's adjustment: CO/45 `REVIEW-PRICED` for a payment below the charge, the
        reviewer's CARC `REVIEW-DENIED` for a denial."""
        review = self.review
        rule, text = ("REVIEW-PRICED", review.priced_message) if action == "PAY" else ("REVIEW-DENIED", review.denied_message)
        return build(Adjustment, group="CO", carc=carc, rarc=list(rarc or []), amount=amount, rule=rule,
                     message=f"{text} [policy section {review.section}]")

    def has_mandated_condition(self, diagnosis_codes: list[str]) -> bool:
        return any(dx.replace(".", "").startswith(self.mandated_dx_prefixes) for dx in diagnosis_codes)

    def adjustment(self, rule_id: str, amount, detail: str = "") -> Adjustment:
        spec = self.rules[rule_id]
        return build(Adjustment,
            group=spec.group, carc=spec.carc, rarc=spec.rarc, amount=amount,
            rule=rule_id, message=_message(spec, detail) if detail else self.messages[rule_id],
        )


def _message(spec: RuleSpec, detail: str) -> str:
    """An adjustment's message: the rule's, the finding's detail, and the policy section."""
    text = f"{spec.message} {detail}" if detail else spec.message
    return f"{text} [policy section {spec.section}]"


class Rulebooks:
    """All loaded versions; picks the one in effect on a date of service."""

    def __init__(self, books: list[Rulebook]):
        if not books:
            raise RulebookError("no rulebook versions found")
        self.books = sorted(books, key=lambda b: b.effective_from)
        self._starts = [b.effective_from for b in self.books]
        versions = [b.version for b in self.books]
        if len(set(versions)) != len(versions):
            raise RulebookError(f"rulebook versions repeat: {versions}")

    def for_date(self, day: date) -> Rulebook:
        """The version in effect on `day`; dates before the first version use the first."""
        return self.books[max(bisect.bisect_right(self._starts, day) - 1, 0)]

    def get(self, version: str) -> Rulebook:
        for book in self.books:
            if book.version == version:
                return book
        raise RulebookError(f"rulebook version {version!r} is not loaded")

    @property
    def versions(self) -> list[str]:
        return [b.version for b in self.books]

    def pend_labels(self) -> list[tuple[str, str]]:
        """Every (queue, pend reason) of the loaded versions' `[review]` sections."""
        return sorted({(r.queue, r.reason) for book in self.books for r in book.review.reasons})


def load_file(path: Path) -> Rulebook:
    try:
        data = RulebookFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise RulebookError(f"{path.name}: {exc}".splitlines()[0]) from exc
    missing = data.required_rules - data.rules.keys()
    if missing:
        raise RulebookError(f"{path.name}: rules missing: {', '.join(sorted(missing))}")
    return Rulebook.compile(data)


def load(directory: Path | None = None) -> Rulebooks:
    """Load every `*.toml` in `directory` (default: the packaged rulebook)."""
    if directory is None:
        return default_rulebooks()
    return Rulebooks([load_file(p) for p in sorted(Path(directory).glob("*.toml"))])


def load_single(path: Path) -> Rulebooks:
    """One version alone in effect for every date of service: `adjudicate --rulebook`,
    and the candidate of a shadow (Monitor Mode)."""
    return Rulebooks([load_file(Path(path))])


def candidate_path(name: str) -> Path:
    """A candidate version shipped with the package (not in effect): `rulebook/candidates/`."""
    return Path(str(resources.files("rules") / "rulebook" / "candidates" / name))


@cache
def default_rulebooks() -> Rulebooks:
    folder = resources.files("rules") / "rulebook"
    return Rulebooks([load_file(Path(str(p))) for p in sorted(folder.iterdir(), key=str) if str(p).endswith(".toml")])
