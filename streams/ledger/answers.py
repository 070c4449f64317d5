"""What the ledger says a claim's answers are so far: its status and the records of its lines
(decisions and rejections, as published, with their topic), for the HTTP API's claim status
and its `?wait`, in one transaction however many claims are asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from contract import topics
from streams.ledger import corrections as corrections_store


Answers = tuple[str | None, list[dict[str, Any]]]  # (the ledger's claim status, the line records)


def _answered(q: Any, claim_ids: Sequence[str]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {c: set() for c in claim_ids}
    for start in range(0, len(claim_ids), 400):
        chunk = list(claim_ids[start:start + 400])
        marks = ",".join("?" * len(chunk))
        for table in ("decisions", "rejections"):
            for claim_id, number in q(f"SELECT claim_id, line_number FROM {table} WHERE claim_id IN ({marks})", *chunk):
                if number is not None:
                    out[claim_id].add(number)
    return out


def answers_in(q: Any, claim_id: str) -> Answers:
    row = q("SELECT status FROM claims WHERE claim_id = ?", claim_id).fetchone()
    records = [(n, {"topic": topics.ADJUDICATED.name, **orjson.loads(body)})
               for n, body in q("SELECT line_number, body FROM decisions WHERE claim_id = ?", claim_id)]
    records += [(n, {"topic": topics.REJECTED.name, **orjson.loads(body)})
                for n, body in q("SELECT line_number, body FROM rejections WHERE claim_id = ?", claim_id)]
    records.sort(key=lambda r: (r[0] is None, r[0] or 0))
    return (row[0] if row else None), [r for _, r in records]


def correction_state(ledger: Any, claim_id: str) -> dict[str, Any]:
    with ledger.reading() as q:
        return corrections_store.state(q, claim_id)


def answered_lines(ledger: Any, claim_ids: Sequence[str]) -> dict[str, set[int]]:
    """The line numbers of each claim that have a decision or a rejection (one transaction)."""
    with ledger.reading() as q:
        return _answered(q, claim_ids)


def claim_answers(ledger: Any, claim_id: str) -> Answers:
    """The ledger's claim status (OPEN, ASSEMBLED, DECIDED, REJECTED, or None when unknown)
    and the claim's records (decisions and rejections, as published, plus their `topic`),
    by line number."""
    with ledger.reading() as q:
        return answers_in(q, claim_id)


def completed_claims(ledger: Any, wanted: dict[str, list[frozenset[int]]]) -> dict[str, Answers]:
    """For the claims of which some wanted set of line numbers is fully answered, their
    answers; one transaction for every waiting request."""
    with ledger.reading() as q:
        answered = _answered(q, list(wanted))
        return {claim_id: answers_in(q, claim_id) for claim_id, sets in wanted.items()
                if any(numbers <= answered[claim_id] for numbers in sets)}
