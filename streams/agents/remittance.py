"""Stage 5 (issue 5): one 835 per decided claim on `claims.remittance.835` (key claim_id,
value the X12 text as bytes), built from the decisions the adjudicate stage hands on over
`claims.internal.decided`.

A claim whose 835 cannot be written (`RemittanceError`: e.g. a claim id longer than the 38
characters CLP01 holds) goes to `claims.remittance.dlq` (not the input DLQ, which holds
undecodable submissions) with its decisions as the value and the headers `error`,
`source-topic` = claims.internal.decided and `stage` = remittance.

At least once: a re-delivered batch, or a claim decided again on a re-delivery upstream,
publishes the claim's 835 again, with the same claim, amounts and codes; its control
numbers (ISA13/GS06/TRN02) are new ones from the ledger's sequence, as every interchange's
are. Readers deduplicate by key (claim_id).

Remittance is held until final (CONTRACT.md *Pended lines and manual review*): a claim with a
PENDED line (in the message, or still open in the ledger) gets no 835; the review API hands
the claim on again once a review made its last line final. What an 835 carries is read with
the ledger's reversals (`streams.ledger.remittance.remittable`): a replacement's reversal first,
even when it was handed on by a review with its own decisions only; nothing of a claim that
was reversed while pended (it was never remitted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from faust.types import EventT

from edi.remit835 import RemittanceError
from contract import topics
from streams.worker import stage
from contract.messages import DecidedBatch, DecidedClaim
from streams.ledger.remittance import build_835, remittance_inputs_all
from streams.worker.app import Worker

log = logging.getLogger("claims.remittance")


def register(w: Worker) -> None:
    w.agent(topics.DECIDED, "remittance", remittance)


async def remittance(w: Worker, stream):
    await stage.run(w, stream, "remittance", topics.DECIDED, handle)


async def handle(w: Worker, events: Sequence[EventT]) -> None:
    claims = []
    for event in events:
        try:
            claims += [(event.message.tp, claim) for claim in DecidedBatch.model_validate_json(event.message.value).claims]
        except Exception as exc:  # noqa: BLE001 - an undecodable message goes to the DLQ alone
            with stage.answering(event.message.tp):
                await stage.dead_letter(w, "remittance", topics.DECIDED, event.message.value, event.message.key, exc, "undecodable")
    inputs = await w.runtime.in_ledger(remittance_inputs_all, w.runtime.ledger, [claim for _, claim in claims])
    for (tp, claim), (remit, facts, number) in zip(claims, inputs, strict=True):
        with stage.answering(tp):
            if remit is None:  # a line is pended (remitted once every line is final), or nothing to remit
                log.info("claim not remitted: a line is pended, or nothing of it is left to remit")
                continue
            await _remit(w, remit, facts, number)


async def _remit(w: Worker, claim: DecidedClaim, facts: Mapping[tuple[str, int], Mapping[str, Any]], number: int) -> None:
    key = claim.claim_id.encode()
    try:
        text = build_835(claim.decisions, facts, number)
    except RemittanceError as exc:
        await stage.dead_letter(w, "remittance", topics.DECIDED, claim.model_dump_json().encode(), key, exc,
                                error_type="remittance", target=topics.REMITTANCE_DLQ)
        return
    await w.topic(topics.REMITTANCE_835).send(key=key, value=text.encode())
