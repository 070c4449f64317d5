"""The ledger's side of manual review (CONTRACT.md *Pended lines and manual review*): the
open pends, a reviewer's decision, the review history, and the outbox of final records.

A pended line's decision lives in `decisions` like any other (PENDED, then its final
record), and what it holds (the duplicate fingerprint, the authorized units) in
`paid_lines` and `unit_usage` as a paid line's would; `pends` is the queue and
`review_history` the append-only trail. `record_pends` and `reverse_pends` run inside the
transaction that decides or reverses the claim; `ReviewStore.review` is one transaction of
its own: the decision, its history row, the release of a denied line's holds and the
final record in the outbox commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from rules import review as policy
from rules.rulebook import Rulebooks
from streams.ledger import corrections as corrections_store
from streams.ledger.access import insert_access
from contract.models import AccessEntry, AdjudicatedLine, ClaimLine


class ReviewNotFound(LookupError):
    """No such line, or the line was never pended."""


class ReviewForbidden(PermissionError):
    """The reviewer may not decide the line's queue."""


class ReviewConflict(Exception):
    """A different decision for a line already decided, or a line reversed by a correction;
    `current` is the line's current record."""

    def __init__(self, message: str, current: AdjudicatedLine):
        super().__init__(message)
        self.current = current


@dataclass(frozen=True, slots=True)
class Reviewed:
    """A reviewer's decision as stored: the final record, whether this request stored it (not
    an idempotent repeat), and, when none of the claim's lines is pended any more, what its
    835 carries (the reversals it made, then its decisions), else None."""

    record: AdjudicatedLine
    stored_now: bool
    claim_final: tuple[AdjudicatedLine, ...] | None
    queue: str


def _history(q, claim_id: str, line_number: int, event: str, actor: str, at: datetime, details: dict[str, Any]) -> None:
    seq = q("SELECT COALESCE(MAX(seq), 0) + 1 FROM review_history WHERE claim_id = ? AND line_number = ?",
            claim_id, line_number).fetchone()[0]
    q("INSERT INTO review_history (claim_id, line_number, seq, event, actor, at, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
      claim_id, line_number, seq, event, actor, at.isoformat(), orjson.dumps(details).decode())


def record_pends(q, decisions: Iterable[AdjudicatedLine], lines: dict[int, ClaimLine]) -> None:
    """The queue entries and first history rows of a claim's newly PENDED lines (`lines`: the
    claim's lines by number)."""
    for d in decisions:
        if d.status != "PENDED" or d.pend is None:
            continue
        pend, line = d.pend, lines[d.line_number]
        q("INSERT INTO pends (claim_id, line_number, reason, queue, authorization_number, charge_amount, suggested_amount, "
          "pended_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'OPEN')", d.claim_id, d.line_number, pend.reason, pend.queue,
          line.authorization_number, str(line.charge_amount), str(pend.suggested_amount), pend.pended_at.isoformat())
        _history(q, d.claim_id, d.line_number, "PENDED", pend.rule, pend.pended_at,
                 {"reason": pend.reason, "queue": pend.queue, "rule": pend.rule,
                  "suggested_amount": str(pend.suggested_amount), "policy_version": d.policy_version})


def reverse_pends(q, claim_id: str, by: str, at: datetime) -> None:
    """A correction reversed `claim_id`: its open pends leave the queue, and every pended line
    (open or decided) gets a REVERSED history row. What they held is released with the rest
    of the claim's holds (streams/ledger/corrections.py)."""
    rows = q("SELECT line_number, state FROM pends WHERE claim_id = ? AND state <> 'REVERSED'", claim_id).fetchall()
    for number, state in rows:
        q("UPDATE pends SET state = 'REVERSED' WHERE claim_id = ? AND line_number = ?", claim_id, number)
        _history(q, claim_id, number, "REVERSED", by, at, {"reversed_by": by, "was": state})


def _decision(q, claim_id: str, line_number: int) -> AdjudicatedLine:
    row = q("SELECT body FROM decisions WHERE claim_id = ? AND line_number = ?", claim_id, line_number).fetchone()
    return AdjudicatedLine.model_validate_json(row[0])


def _current(q, claim_id: str, line_number: int) -> AdjudicatedLine:
    """The line's latest record: its reversal once its claim was corrected, else its decision."""
    row = q("SELECT body FROM reversals WHERE claim_id = ? AND line_number = ?", claim_id, line_number).fetchone()
    return AdjudicatedLine.model_validate_json(row[0]) if row else _decision(q, claim_id, line_number)


class ReviewStore:
    """The review half of the ledger (a part of `Ledger`, like `AssemblyStore`)."""

    def review(self, claim_id: str, line_number: int, body: Any, reviewer: str, queues: Sequence[str] | None,
               books: Rulebooks, now: datetime, access: AccessEntry | None = None) -> Reviewed:
        """Apply a reviewer's decision to a pended line, in one transaction.

        `queues`: the queues the reviewer may decide (None: any). Raises `ReviewNotFound`
        (404), `ReviewForbidden` (403), `policy.InvalidDecision` (422, naming the field),
        `ReviewConflict` (409); the same decision again returns the stored record.
        `access`: the request's access-log entry, appended in the same transaction when the
        decision is answered 200 (stored now or an idempotent repeat); nothing when it raises."""
        with self.transaction() as q:
            reviewed = self._review(q, claim_id, line_number, body, reviewer, queues, books, now)
            if access is not None:
                insert_access(q, access)
            return reviewed

    def _review(self, q, claim_id: str, line_number: int, body: Any, reviewer: str, queues: Sequence[str] | None,
                books: Rulebooks, now: datetime) -> Reviewed:
        lock = " FOR UPDATE" if self.postgres else ""
        row = q(f"SELECT queue, charge_amount, suggested_amount, state FROM pends WHERE claim_id = ? AND line_number = ?{lock}",
                claim_id, line_number).fetchone()
        if row is None:
            raise ReviewNotFound(f"line {line_number} of claim {claim_id!r} is unknown or was never pended")
        queue, charge, suggested, state = row[0], Decimal(row[1]), Decimal(row[2]), row[3]
        if queues is not None and queue not in queues:
            raise ReviewForbidden(f"reviewer {reviewer!r} may not decide the {queue} queue")
        current = _current(q, claim_id, line_number)
        book = books.get(current.policy_version)
        decision = policy.check(body, charge, book)
        if state == "REVERSED":
            raise ReviewConflict(f"the line's claim was reversed by {current.reversed_by!r}; it can no longer be decided", current)
        if state == "DECIDED":
            if policy.same(current, decision, suggested):
                return Reviewed(current, False, None, queue)
            raise ReviewConflict("the line was already decided otherwise", current)
        final = policy.final(current, charge, decision, reviewer, book, now)
        body_json = final.model_dump_json()
        q("UPDATE decisions SET body = ? WHERE claim_id = ? AND line_number = ?", body_json, claim_id, line_number)
        q("UPDATE pends SET state = 'DECIDED' WHERE claim_id = ? AND line_number = ?", claim_id, line_number)
        if final.status == "DENIED":  # a denial releases the units and the duplicate fingerprint it held
            for table in ("paid_lines", "unit_usage"):
                q(f"DELETE FROM {table} WHERE claim_id = ? AND line_number = ?", claim_id, line_number)
        _history(q, claim_id, line_number, "DECIDED", reviewer, now,
                 {"action": decision.action, "status": final.status, "allowed_amount": str(final.allowed_amount),
                  "carc": decision.carc, "rarc": list(decision.rarc), "note": decision.note})
        q("INSERT INTO decision_outbox (claim_id, line_number, body, made_at) VALUES (?, ?, ?, ?)", claim_id, line_number,
          body_json, now.timestamp())
        return Reviewed(final, True, self._if_final(q, claim_id), queue)

    def _if_final(self, q, claim_id: str) -> tuple[AdjudicatedLine, ...] | None:
        """What the claim's 835 carries once none of its lines is pended: the reversals it made
        (a replacement or void) first, then its own decisions; None while a line is pended."""
        rows = q("SELECT body FROM decisions WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        decisions = tuple(AdjudicatedLine.model_validate_json(r[0]) for r in rows)
        if any(d.status == "PENDED" for d in decisions):
            return None
        return (*corrections_store.caused(q, claim_id), *decisions)

    def decision_outbox(self, limit: int = 1000) -> list[AdjudicatedLine]:
        """Final records stored by reviews and not yet published."""
        with self.reading() as q:
            rows = q(f"SELECT body FROM decision_outbox ORDER BY claim_id, line_number LIMIT {int(limit)}").fetchall()
        return [AdjudicatedLine.model_validate_json(r[0]) for r in rows]

    def decision_outbox_sent(self, sent: Iterable[AdjudicatedLine]) -> None:
        with self.transaction() as q:
            for r in sent:
                q("DELETE FROM decision_outbox WHERE claim_id = ? AND line_number = ?", r.claim_id, r.line_number)

    def open_pends(self, queue: str | None = None, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The open pends, oldest first, as the review queue lists them: the line, why it waits,
        the units its authorization has in use (pended holds included), and the claim's other
        lines with their statuses."""
        where, params = ["state = 'OPEN'"], []
        if queue:
            where.append("queue = ?")
            params.append(queue)
        if reason:
            where.append("reason = ?")
            params.append(reason)
        with self.reading() as q:
            rows = q(f"SELECT claim_id, line_number, reason, queue, pended_at, charge_amount, suggested_amount, "
                     f"authorization_number FROM pends WHERE {' AND '.join(where)} "
                     f"ORDER BY pended_at, claim_id, line_number LIMIT {int(limit)}", *params).fetchall()
            out = []
            for claim_id, number, why, in_queue, pended_at, charge, suggested, auth in rows:
                lines = {n: AdjudicatedLine.model_validate_json(b) for n, b in
                         q("SELECT line_number, body FROM decisions WHERE claim_id = ? ORDER BY line_number", claim_id)}
                line = lines[number]
                out.append({
                    "claim_id": claim_id, "line_number": number, "reason": why, "queue": in_queue, "pended_at": pended_at,
                    "procedure_code": line.procedure_code, "ndc11": line.ndc11, "charge_amount": charge,
                    "suggested_amount": suggested, "member_id": line.member_id, "provider_npi": line.provider_npi,
                    "service_date": line.service_date.isoformat(), "modifiers": line.modifiers,
                    "authorization_number": auth, "units_used": str(sum(
                        (Decimal(u) for (u,) in q("SELECT units FROM unit_usage WHERE authorization_number = ?", auth)),
                        Decimal(0))) if auth else None,
                    "policy_version": line.policy_version, "pend": orjson.loads(line.pend.model_dump_json()) if line.pend else None,
                    "pricing": orjson.loads(line.pricing.model_dump_json()) if line.pricing else None,
                    "other_lines": [{"line_number": n, "procedure_code": d.procedure_code, "status": d.status,
                                     "allowed_amount": str(d.allowed_amount)} for n, d in lines.items() if n != number],
                })
            return out

    def pend_stats(self) -> list[tuple[str, str, int, str | None]]:
        """(queue, reason, open pends, oldest pended_at) of every queue and reason with an open pend."""
        with self.reading() as q:
            return [tuple(r) for r in q("SELECT queue, reason, COUNT(*), MIN(pended_at) FROM pends WHERE state = 'OPEN' "
                                        "GROUP BY queue, reason ORDER BY queue, reason").fetchall()]

    def review_history(self, claim_id: str, line_number: int) -> list[dict[str, Any]] | None:
        """Every event of the line's review, oldest first; None when the line was never pended."""
        with self.reading() as q:
            rows = q("SELECT seq, event, actor, at, body FROM review_history WHERE claim_id = ? AND line_number = ? ORDER BY seq",
                     claim_id, line_number).fetchall()
        if not rows:
            return None
        return [{"seq": seq, "event": event, "by": actor, "at": at, **orjson.loads(body)} for seq, event, actor, at, body in rows]
