"""Monitor Mode over a file (`claims-pipeline shadow`): the claims adjudicated twice, each
run from an empty in-memory ledger, once under the shipped rulebook and once under the
candidate alone; the lines decided differently, then the summary. Nothing is published and
no live ledger is touched."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from contract.topics import ADJUDICATED, REJECTED
from rules.monitor import ZERO, Record, Summary, difference, record_outcome
from rules.reference import ReferenceData
from rules.rulebook import Rulebooks
from streams.pipeline.batch import run_batch
from streams.pipeline.impact import Impact, from_records


def _answers(records: Iterable[Record]) -> tuple[dict[tuple, Record], dict[tuple, Decimal]]:
    """Each line's first answer (its decision or rejection; a reversal is the effect of a
    later claim, not the line's own answer), and what each decided line adds to the allowed
    total a consumer deduping by (claim_id, line_number, status) adds up (its decision, and
    its reversal when a correction reversed it)."""
    first: dict[tuple, Record] = {}
    seen: set[tuple] = set()
    allowed: dict[tuple, Decimal] = {}
    for r in records:
        if r["topic"] == ADJUDICATED.name:
            key = ("decision", r["claim_id"], r["line_number"])
            dedupe = (r["claim_id"], r["line_number"], r["status"])
            if dedupe not in seen:
                seen.add(dedupe)
                allowed[key] = allowed.get(key, Decimal("0.00")) + Decimal(r["allowed_amount"])
            if r["status"] != "REVERSED":
                first.setdefault(key, r)
        elif r["topic"] == REJECTED.name and r.get("claim_id") is not None and r.get("line_number") is not None:
            first.setdefault(("rejection", r["claim_id"], r["line_number"]), r)
    return first, allowed


def run_shadow(lines: list[bytes], ref: ReferenceData, live: Rulebooks, candidate: Rulebooks,
               impact: Impact | None = None) -> Iterator[dict[str, Any]]:
    """Yield one object per changed line, in submission order, then `{"summary": ...}`;
    with `impact`, every line compared is added to it too (the report's tables)."""
    before, allowed_before = _answers(run_batch(lines, ref, live))
    after, allowed_after = _answers(run_batch(lines, ref, candidate))
    summary = Summary(lines=len(before.keys() | after.keys()), allowed_before=sum(allowed_before.values(), ZERO),
                      allowed_after=sum(allowed_after.values(), ZERO))
    for key in [*before, *(k for k in after if k not in before)]:
        b, a = before.get(key), after.get(key)
        changed = record_outcome(b) != record_outcome(a)
        diff = difference(b, a) if changed else None
        if impact is not None:
            impact.add(from_records(b, a, changed, diff["rules"] if diff else (),
                                    allowed_before.get(key, ZERO), allowed_after.get(key, ZERO)))
        if diff is not None:
            summary.count(diff)
            yield diff
    yield summary.as_json()


def render_table(report: list[dict[str, Any]], candidate_version: str, console) -> None:
    """The same report for people: one row per changed line, then the totals by rule."""
    from rich.table import Table

    *diffs, last = report
    totals = last["summary"]
    rows = Table(title=f"Lines decided differently under {candidate_version}")
    for column in ("claim", "line", "live", "candidate", "rules"):
        rows.add_column(column, justify="right" if column == "line" else "left")

    def cell(outcome: tuple) -> str:
        status, allowed, carcs = outcome
        return f"{status} {allowed}" if status == "PAID" else f"{status} {'/'.join(sorted(carcs))}".strip()

    for d in diffs:
        rows.add_row(d["claim_id"], str(d["line_number"]), cell(record_outcome(d["before"])),
                     cell(record_outcome(d["after"])), ", ".join(d["rules"]))
    console.print(rows)
    delta = Decimal(totals["allowed_after"]) - Decimal(totals["allowed_before"])
    console.print(f"{totals['changed']} of {totals['lines']} lines changed; allowed {totals['allowed_before']} -> "
                  f"{totals['allowed_after']} ({delta:+}); by rule: "
                  + (", ".join(f"{rule} {n}" for rule, n in totals["changed_by_rule"].items()) or "none"))
