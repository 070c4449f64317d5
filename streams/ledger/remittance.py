"""What the remittance agent, the HTTP API and the review API read from the ledger to write
the same 835 for a claim: what the 837 said, what a claim's 835 carries (remittance held
until final), and the 835 itself."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from contract.messages import DecidedClaim
from contract.models import AdjudicatedLine
from streams.ledger import corrections as corrections_store
from streams.ledger.readahead import ReadAhead, Rows

if TYPE_CHECKING:
    from streams.ledger.store import Ledger


#: what an 837 line carries beyond the contract that its 835 answers with (extra fields of
#: the submitted line, set by `edi.parse837`; absent for claims sent as JSON)
REMITTANCE_FIELDS = ("line_item_control_number", "procedure_description", "patient_last_name", "patient_first_name",
                     "claim_filing_indicator", "interchange_usage")


def remittance_facts(original: Any) -> dict[str, str]:
    """The REMITTANCE_FIELDS of a submitted line as received (short strings only)."""
    if not isinstance(original, Mapping):
        return {}
    return {k: v[:80] for k in REMITTANCE_FIELDS if isinstance(v := original.get(k), str) and v}


def remittance_inputs(ledger: Ledger, claim_ids: Iterable[str]) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """What the 835 of these claims needs from the ledger (call it on the ledger thread):
    what the 837 said about their lines, and the next ISA13 of the payer's sequence."""
    from edi.remit835 import Payer

    return ledger.remittance_facts(claim_ids), ledger.next_control_number(Payer().interchange_id.id)


_FACTS = "SELECT line_number, body FROM remittance_lines WHERE claim_id = ?"
_PENDED = ("SELECT line_number, reason, queue, pended_at FROM pends WHERE claim_id = ? AND state = 'OPEN' "
           "ORDER BY line_number")
_REVERSED_EVENTS = "SELECT body FROM review_history WHERE claim_id = ? AND event = 'REVERSED'"

#: what `remittable` and the 835's facts read of a batch's claims, in one statement (PostgreSQL):
#: rows (tag, claim, sort, n, a, b, c) in each statement's order, dealt out by `_send_reads`
_READS = """
WITH c (claim_id) AS (SELECT DISTINCT unnest(?::text[]))
SELECT 0 AS t, p.claim_id, NULL::text AS s, p.line_number AS n, p.reason AS a, p.queue AS b, p.pended_at AS c
  FROM pends p JOIN c ON p.claim_id = c.claim_id WHERE p.state = 'OPEN'
UNION ALL SELECT 1, h.claim_id, NULL, NULL, h.body, NULL, NULL FROM review_history h JOIN c ON h.claim_id = c.claim_id
  WHERE h.event = 'REVERSED'
UNION ALL SELECT 2, r.reversed_by, r.claim_id, r.line_number, r.body, NULL, NULL FROM reversals r JOIN c ON r.reversed_by = c.claim_id
UNION ALL SELECT 3, f.claim_id, NULL, f.line_number, f.body, NULL, NULL FROM remittance_lines f JOIN c ON f.claim_id = c.claim_id
ORDER BY 1, 2, 3, 4
"""
_READ_SHAPES = {0: (_PENDED, (3, 4, 5, 6)), 1: (_REVERSED_EVENTS, (4,)), 2: (corrections_store.CAUSED, (4,)), 3: (_FACTS, (3, 4))}


def _send_reads(q: ReadAhead, execute: Any, claim_ids: Sequence[str]) -> None:
    """`_READS` for `claim_ids`, sent now (`execute`); its rows answer, when the first is asked
    for, each claim's `pended_lines`, `reversed_while_pended`, `caused` and remittance facts."""
    cursor = execute(_READS, list(claim_ids))

    def answers() -> dict[tuple[str, tuple], Rows]:
        rows: dict[tuple[str, tuple], list[tuple]] = {(sql, (c,)): [] for c in claim_ids for sql, _ in _READ_SHAPES.values()}
        for row in cursor.fetchall():
            sql, columns = _READ_SHAPES[row[0]]
            rows[(sql, (row[1],))].append(tuple(row[i] for i in columns))
        return {key: Rows(found) for key, found in rows.items()}

    q.expect(list(dict.fromkeys((sql, (c,)) for c in claim_ids for sql, _ in _READ_SHAPES.values())), answers)


def facts_of(q: Any, claim_ids: Iterable[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """What the 837 said about the lines of these claims that their 835 answers with."""
    return {(claim_id, int(number)): orjson.loads(body) for claim_id in dict.fromkeys(claim_ids)
            for number, body in q(_FACTS, claim_id)}


def control_numbers(q: Any, sender: str, n: int) -> Callable[[], list[int]]:
    """The next `n` interchange control numbers of `sender` (1..999999999, then 1 again): one
    atomic increment, so no two workers, processes or restarts hand out the same one. Sent
    now; the numbers are read when called: on SQLite before the commit (which a statement in
    progress blocks), on PostgreSQL after it (its answer comes with the commit's round trip)."""
    if n < 1:
        return list
    cursor = q("INSERT INTO control_numbers (sender, last_value) VALUES (?, ?) ON CONFLICT (sender) DO UPDATE "
               "SET last_value = CASE WHEN control_numbers.last_value + ? > 999999999 "
               "THEN control_numbers.last_value + ? - 999999999 ELSE control_numbers.last_value + ? END RETURNING last_value",
               sender, n, n, n, n)

    def numbers() -> list[int]:
        last = int(cursor.fetchone()[0])
        return [(last - n + i) % 999_999_999 + 1 for i in range(n)]

    return numbers


def remittance_inputs_all(ledger: Ledger, claims: Sequence[DecidedClaim]
                          ) -> list[tuple[DecidedClaim | None, dict[tuple[str, int], dict[str, Any]], int]]:
    """For every claim of a batch, in one ledger transaction (one write lock per batch, not
    two per claim): what its 835 carries (`remittable`: None when it has none, e.g. a line
    is pended) and the `remittance_inputs` of the claims that names. On PostgreSQL what that
    reads of the batch's claims is one statement, and the control numbers one increment."""
    from edi.remit835 import Payer

    with ledger.transaction() as tx:
        q = ReadAhead(tx)
        if ledger.postgres and claims:
            _send_reads(q, tx, list(dict.fromkeys(c for claim in claims for c in (claim.claim_id, *(d.claim_id for d in claim.decisions)))))
        remits = [remittable(q, claim) for claim in claims]
        facts = [remit and facts_of(q, [remit.claim_id, *(d.claim_id for d in remit.decisions)]) for remit in remits]
        taken = control_numbers(tx, Payer().interchange_id.id, sum(r is not None for r in remits))
        numbers = None if ledger.postgres else taken()
    numbers = iter(taken() if numbers is None else numbers)
    return [(None, {}, 0) if remit is None else (remit, found, next(numbers)) for remit, found in zip(remits, facts)]


def build_835(decisions: Iterable[AdjudicatedLine | Mapping[str, Any]], facts: Mapping[tuple[str, int], Mapping[str, Any]],
              control_number: int) -> str:
    """The 835 of one decided claim (with the reversals it made, first), as the remittance
    agent publishes it and the API answers it: no submitted lines (the ledger keeps none
    once a claim is decided, so each charge is the allowed amount plus the adjustments),
    what the 837 said from `remittance_inputs`. Raises `edi.remit835.RemittanceError`."""
    from edi import remit835

    return remit835.build(None, decisions, facts=facts, control_number=control_number)


# --- remittance held until final (CONTRACT.md *Pended lines and manual review*) ----------------
#
# A claim with a PENDED line is not remitted until every line is final. What goes in a claim's
# 835 is read from the ledger here, by the remittance agent, the HTTP API's 835 and the review
# API's publishing of a claim made final by a review (`decided_claim`), so they all agree:
# * no 835 while any line of the claim is pended (its open pends);
# * a replacement or void starts with the reversals it made (stored with it), so a replacement
#   whose own lines were pended still carries them once final, before its own payment;
# * a claim reversed while one of its lines was pended was never remitted (it never became
#   final), so there is nothing to take back: its reversal is in no 835. The reversals that
#   claim itself made (it was a replacement, held with its 835) are carried forward into the
#   835 of the claim that reversed it, so a payment that went out is always taken back once.


def pended_lines(q: Any, claim_id: str) -> list[dict[str, Any]]:
    """The claim's lines waiting for a reviewer (open pends), by line number: what the HTTP
    835's 409 names."""
    rows = q(_PENDED, claim_id).fetchall()
    return [{"line_number": int(n), "reason": reason, "queue": queue, "pended_at": at} for n, reason, queue, at in rows]


def reversed_while_pended(q: Any, claim_id: str) -> bool:
    """Whether a correction reversed the claim while one of its lines was pended (so the claim
    was never remitted: it never became final)."""
    rows = q(_REVERSED_EVENTS, claim_id).fetchall()
    return any(orjson.loads(r[0]).get("was") == "OPEN" for r in rows)


def remittable_reversals(q: Any, claim_id: str, _depth: int = 0) -> list[AdjudicatedLine]:
    """The reversals the 835 of `claim_id` (a replacement or void) carries, in the order they
    were made: those it made of a remitted claim; for a claim it reversed that was never
    remitted (reversed while pended), none of that claim's, but the ones that claim made
    in turn (never remitted either), regrouped under `claim_id` (`reversed_by`) so that they
    go in its transaction set, before its own payment."""
    out: list[AdjudicatedLine] = []
    caused = corrections_store.caused(q, claim_id)
    for original in dict.fromkeys(r.claim_id for r in caused):
        if reversed_while_pended(q, original) and _depth < 64:
            out += [r if r.reversed_by == claim_id else r.model_copy(update={"reversed_by": claim_id})
                    for r in remittable_reversals(q, original, _depth + 1)]
        else:
            out += [r for r in caused if r.claim_id == original]
    return out


def remittable(q: Any, claim: DecidedClaim) -> DecidedClaim | None:
    """What the 835 of a decided claim carries, or None when it has none: a line of it is
    pended (in the message, or still open in the ledger), it was reversed while pended, or
    nothing is left to remit (a void of a claim never remitted). Its own decisions as the
    message has them, after the reversals it made as `remittable_reversals` reads them
    (whether the message carried them or not: a claim made final by a review is handed on
    with its own decisions only)."""
    own = [d for d in claim.decisions if d.claim_id == claim.claim_id]
    if any(d.status == "PENDED" for d in own) or pended_lines(q, claim.claim_id):
        return None
    if reversed_while_pended(q, claim.claim_id):
        return None
    carried = [d for d in claim.decisions if d.claim_id != claim.claim_id]
    reversals = remittable_reversals(q, claim.claim_id)
    if carried and [(r.claim_id, r.line_number) for r in carried] == [(r.claim_id, r.line_number) for r in reversals]:
        reversals = carried  # the adjudicate stage's own (the same records, this delivery's time)
    decisions = (*reversals, *own)
    if not any(d.status != "VOIDED" for d in decisions):
        return None
    if decisions == claim.decisions:
        return claim
    return DecidedClaim(claim_id=claim.claim_id, decisions=decisions)


def decided_claim(ledger: Ledger, claim_id: str) -> DecidedClaim | None:
    """The `DecidedClaim` to hand the remittance agent for a claim once a review made its
    last pended line final (`Reviewed.claim_final`): its decisions after the reversals it
    made (a replacement's 835 starts with them); None while a line is pended or when there
    is nothing to remit."""
    with ledger.reading() as q:
        rows = q("SELECT body FROM decisions WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        if not rows:
            return None
        own = tuple(AdjudicatedLine.model_validate_json(r[0]) for r in rows)
        return remittable(q, DecidedClaim(claim_id=claim_id, decisions=own))


def remittance_of(ledger: Ledger, claim_id: str, decisions: Sequence[AdjudicatedLine]
                  ) -> tuple[str, DecidedClaim | list[dict[str, Any]] | None]:
    """What the HTTP API's 835 of a decided claim answers, in one read: ("PENDED", its open
    pends) while a line waits for a reviewer; ("UNREMITTED", None) for a claim reversed while
    a line was pended (never remitted) or a void of one (nothing to remit); else ("OK", what
    its 835 carries)."""
    with ledger.reading() as q:
        pended = pended_lines(q, claim_id)
        if pended:
            return "PENDED", pended
        remit = remittable(q, DecidedClaim(claim_id=claim_id, decisions=tuple(decisions)))
        return ("UNREMITTED", None) if remit is None else ("OK", remit)


def claim_response_inputs(ledger: Ledger, claim_id: str) -> tuple[str | None, bool, list[dict[str, Any]]]:
    """What the HTTP API's FHIR ClaimResponse of a claim needs besides its decisions, in one
    read: the claim it corrects (or None), whether it was reversed while a line was pended
    (never remitted), and the charges of its pended lines (a PENDED record carries none)."""
    with ledger.reading() as q:
        replaces = q("SELECT original_claim_id FROM corrections WHERE claim_id = ?", claim_id).fetchone()
        charges = [{"claim_id": claim_id, "line_number": int(n), "charge_amount": charge} for n, charge in
                   q("SELECT line_number, charge_amount FROM pends WHERE claim_id = ?", claim_id).fetchall()]
        return (replaces[0] if replaces else None), reversed_while_pended(q, claim_id), charges


def remittable_claims(ledger: Ledger, claim_ids: Iterable[str]) -> dict[str, tuple[AdjudicatedLine, ...]]:
    """Of these claims, those whose 835 can go out now, with what it carries (`decided_claim`:
    the reversals to remit first, then the claim's decisions), by claim id: the shape of
    `streams.worker.review_outputs.final_claims`, for the review API's publishing and outbox drain."""
    out = {}
    for claim_id in sorted(set(claim_ids)):
        if (claim := decided_claim(ledger, claim_id)) is not None:
            out[claim_id] = claim.decisions
    return out
