"""Monitor Mode's impact report: the lines compared under the live and the candidate
policy, added up by rule, provider NPI, procedure code and month of service (issue 26).

Pure: no I/O. `streams.pipeline.shadow` feeds it the two batch runs' answers (`shadow --report`), a
worker in Monitor Mode feeds it each claim's comparison as it goes (`GET
/v1/shadow/impact`), and `streams.tools.impact_report` writes the CSV files and the HTML page.

Every line compared is in exactly one row of every table, so each table's columns add up
to its total, and the total is the `shadow` summary line (lines, changed, allowed before
and after). In the table by rule a changed line's row is the set of rules that made the
difference (`EDIT-A + EDIT-B` when two did), and the lines that did not change are one row
of their own, `(no change)`. Money is Decimal throughout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from contract.models import AdjudicatedLine

ZERO = Decimal("0.00")
#: the tables of the report, by the line's field they group on
DIMENSIONS = ("rule", "provider_npi", "procedure_code", "service_month")
#: what a worker keeps live (months of service would grow without end)
LIVE_DIMENSIONS = ("rule", "provider_npi", "procedure_code")
NO_CHANGE = "(no change)"
UNKNOWN = "(unknown)"
#: the statuses the "newly ..." columns count, by column
NEWLY = {"newly_denied": "DENIED", "newly_paid": "PAID", "newly_pended": "PENDED"}
COLUMNS = ("lines", "changed", "share", "allowed_before", "allowed_after", "difference", *NEWLY)
SHARE_PLACES = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class LineImpact:
    """One line compared: where it belongs, and its outcome under each policy. A side with
    no decision (the line was rejected) has status REJECTED; missing altogether, ABSENT.
    `allowed_*` is what the line adds to the summary's allowed totals (its decision and, in
    a batch run, the reversal a later correction made of it)."""

    claim_id: str | None
    line_number: int | None
    provider_npi: str
    procedure_code: str
    service_date: str
    status_before: str
    status_after: str
    allowed_before: Decimal
    allowed_after: Decimal
    changed: bool
    rules: tuple[str, ...] = ()
    carcs_before: tuple[str, ...] = ()
    carcs_after: tuple[str, ...] = ()

    @property
    def difference(self) -> Decimal:
        return self.allowed_after - self.allowed_before

    def group(self, dimension: str) -> str:
        if dimension == "rule":
            return (" + ".join(self.rules) or "(no rule named)") if self.changed else NO_CHANGE
        if dimension == "service_month":
            return self.service_date[:7] or UNKNOWN
        return getattr(self, dimension) or UNKNOWN


@dataclass(slots=True)
class Row:
    """One group's figures."""

    group: str
    lines: int = 0
    changed: int = 0
    allowed_before: Decimal = ZERO
    allowed_after: Decimal = ZERO
    newly_denied: int = 0
    newly_paid: int = 0
    newly_pended: int = 0

    def add(self, line: LineImpact) -> None:
        self.lines += 1
        self.allowed_before += line.allowed_before
        self.allowed_after += line.allowed_after
        if not line.changed:
            return
        self.changed += 1
        for column, status in NEWLY.items():
            if line.status_after == status and line.status_before != status:
                setattr(self, column, getattr(self, column) + 1)

    @property
    def difference(self) -> Decimal:
        return self.allowed_after - self.allowed_before

    def share(self, of: int) -> Decimal:
        """Changed lines as a share of `of` lines, to four places (0.2624 = 26.24%)."""
        return (Decimal(self.changed) / of).quantize(SHARE_PLACES, ROUND_HALF_UP) if of else Decimal("0.0000")

    def as_json(self, of: int | None = None) -> dict[str, Any]:
        """The row as the API and the CSV files write it: money and shares as decimal strings."""
        return {"group": self.group, "lines": self.lines, "changed": self.changed,
                "share": str(self.share(self.lines if of is None else of)),
                "allowed_before": str(self.allowed_before), "allowed_after": str(self.allowed_after),
                "difference": str(self.difference), "newly_denied": self.newly_denied,
                "newly_paid": self.newly_paid, "newly_pended": self.newly_pended}


@dataclass(slots=True)
class Impact:
    """The running totals of the lines compared, by group of each dimension."""

    dimensions: tuple[str, ...] = DIMENSIONS
    #: keep the changed lines themselves (the report's drill-down; a worker keeps none)
    keep_changed: bool = False
    total: Row = field(default_factory=lambda: Row("TOTAL"))
    groups: dict[str, dict[str, Row]] = field(default_factory=dict)
    changed_lines: list[LineImpact] = field(default_factory=list)

    def __post_init__(self) -> None:
        for dimension in self.dimensions:
            self.groups.setdefault(dimension, {})

    def add(self, line: LineImpact) -> None:
        self.total.add(line)
        if self.keep_changed and line.changed:
            self.changed_lines.append(line)
        for dimension in self.dimensions:
            key = line.group(dimension)
            row = self.groups[dimension].get(key)
            if row is None:
                row = self.groups[dimension][key] = Row(key)
            row.add(line)

    def add_all(self, lines: Iterable[LineImpact]) -> Impact:
        for line in lines:
            self.add(line)
        return self

    def denominator(self, dimension: str, row: Row) -> int:
        """The lines a group's share is of: its own, except for a rule, whose reach is every
        line compared (the candidate checks every line against every rule)."""
        return self.total.lines if dimension == "rule" else row.lines

    def rows(self, dimension: str) -> list[Row]:
        """The table's rows: months in order; otherwise the largest difference in dollars
        first, then the most lines changed (and `(no change)` last in the table by rule)."""
        rows = list(self.groups[dimension].values())
        if dimension == "service_month":
            return sorted(rows, key=lambda r: r.group)
        return sorted(rows, key=lambda r: (r.group == NO_CHANGE, -abs(r.difference), -r.changed, r.group))

    def table(self, dimension: str) -> dict[str, Any]:
        """One table as JSON: its rows and its total (the API's answer, the CSV's content)."""
        return {"by": dimension,
                "rows": [row.as_json(self.denominator(dimension, row)) for row in self.rows(dimension)],
                "total": self.total.as_json()}


# --- lines compared, from published records -------------------------------------------------------


def _carcs(record: Mapping[str, Any] | None) -> tuple[str, ...]:
    return tuple(sorted({a["carc"] for a in record.get("adjustments", [])})) if record else ()


def _where(record: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(provider NPI, procedure code, date of service) of a decision, or of the line a
    rejection carries (`original`, when it is an object)."""
    if record is None:
        return "", "", ""
    source = record if "status" in record else record.get("original")
    if not isinstance(source, Mapping):
        return "", "", ""
    return tuple(str(source.get(f) or "") for f in ("provider_npi", "procedure_code", "service_date"))  # type: ignore[return-value]


def _status(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return "ABSENT"
    return record.get("status", "REJECTED")


def from_records(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, changed: bool,
                 rules: Iterable[str], allowed_before: Decimal, allowed_after: Decimal) -> LineImpact:
    """A line compared in two batch runs, from its first answer in each (a decision or a
    rejection, as batch mode prints them)."""
    either = before or after or {}
    npi, code, day = _where(before) if before is not None else _where(after)
    return LineImpact(claim_id=either.get("claim_id"), line_number=either.get("line_number"), provider_npi=npi,
                      procedure_code=code, service_date=day, status_before=_status(before),
                      status_after=_status(after), allowed_before=allowed_before, allowed_after=allowed_after,
                      changed=changed, rules=tuple(rules) if changed else (),
                      carcs_before=_carcs(before), carcs_after=_carcs(after))


def from_decisions(before: AdjudicatedLine, after: AdjudicatedLine, rules: Iterable[str] | None) -> LineImpact:
    """A line a worker in Monitor Mode decided live (`before`) and under the candidate;
    `rules` is None when the two decisions agree."""
    return LineImpact(claim_id=before.claim_id, line_number=before.line_number, provider_npi=before.provider_npi,
                      procedure_code=before.procedure_code, service_date=before.service_date.isoformat(),
                      status_before=before.status, status_after=after.status, allowed_before=before.allowed_amount,
                      allowed_after=after.allowed_amount, changed=rules is not None, rules=tuple(rules or ()),
                      carcs_before=tuple(sorted({a.carc for a in before.adjustments})),
                      carcs_after=tuple(sorted({a.carc for a in after.adjustments})))
