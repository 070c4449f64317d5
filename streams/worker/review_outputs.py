"""Publishing what a reviewer's decision produced: the line's final record on
`claims.lines.adjudicated` and, once none of its claim's lines is pended, the claim's 835 on
`claims.remittance.835` (CONTRACT.md: remittance held until final).

The ledger stores each final record in its outbox in the transaction of the decision; the
review API drains the outbox at once, and the expiry timer drains whatever a crash left in
it, one drainer at a time (streams/worker/outboxes.py), so a decision stored is published,
once unless its publisher dies between the broker's acknowledgement and the delete. The 835
is built here, not handed to the remittance agent's internal topic, whose partitions each
have one writer (docs/architecture.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edi.remit835 import RemittanceError
from contract import topics
from streams.worker import stage
from contract.models import AdjudicatedLine
from contract.messages import DecidedClaim
from streams.ledger.remittance import build_835, remittable_claims, remittance_inputs
from streams.worker.app import Worker
from streams.ledger.leases import REVIEWED
from streams.worker.outboxes import drain

log = logging.getLogger("claims.review")

#: final records per chunk of the outbox
CHUNK = 1000


async def remit(w: Worker, claim_id: str, decisions: Sequence[AdjudicatedLine]) -> None:
    """The 835 of what `decisions` carry for `claim_id` on claims.remittance.835 (a remittance
    dead letter when it cannot be written): a review's final claim, or an adjustment's pair."""
    claim_ids = [claim_id, *dict.fromkeys(d.claim_id for d in decisions if d.claim_id != claim_id)]
    facts, number = await w.runtime.in_ledger(remittance_inputs, w.runtime.ledger, claim_ids)
    key = claim_id.encode()
    try:
        text = build_835(decisions, facts, number)
    except RemittanceError as exc:
        value = DecidedClaim(claim_id=claim_id, decisions=tuple(decisions)).model_dump_json().encode()
        await stage.dead_letter(w, "review", topics.ADJUDICATED, value, key, exc, error_type="remittance",
                                target=topics.REMITTANCE_DLQ)
        return
    await w.topic(topics.REMITTANCE_835).send(key=key, value=text.encode())


async def drain_outbox(w: Worker, wait: float = 0.0) -> int | None:
    """Publish the final records waiting in the outbox (a review's, or what a crash or a
    broker outage left there) and the 835s of the claims they made final, chunk by chunk
    (`outboxes.drain`); how many, or None when another worker holds the outbox for longer than
    `wait` seconds (it publishes them). Raises if the broker does not take them (they stay in
    the outbox for the timer)."""
    ledger = w.runtime.ledger

    def decision_outbox() -> list[AdjudicatedLine]:  # the ledger call's name: its metric label
        """A chunk of whole claims: a claim cut at a chunk's end would have its 835 written with
        each of the two chunks."""
        rows = ledger.decision_outbox(CHUNK)
        if len(rows) == CHUNK and rows[0].claim_id != rows[-1].claim_id:
            return [r for r in rows if r.claim_id != rows[-1].claim_id]
        return rows

    async def publish(records: Sequence[AdjudicatedLine]) -> None:
        finals = await w.runtime.in_ledger(remittable_claims, ledger, {r.claim_id for r in records})
        for record in records:
            await stage.publish_decision(w, "review", record)
        for claim_id, decisions in finals.items():
            await remit(w, claim_id, decisions)

    return await drain(w, REVIEWED, decision_outbox, publish, ledger.decision_outbox_sent, wait)
