"""Publishing what reprocessing stored in the ledger's outbox (proposals' new status on
`claims.reprocess.proposals`, an adjustment's records on `claims.lines.adjudicated` and its
835), in the order it was made, then taking it out: the reprocess timer (streams/agents/reprocess.py)
and the approving request (streams/api/reprocess.py) both call it, one at a time across the
workers (streams/worker/outboxes.py); a crash in between publishes it again, identically."""

from __future__ import annotations

import orjson

from contract import topics
from streams.worker import metrics, review_outputs
from contract.models import AdjudicatedLine
from streams.worker.app import Worker
from streams.ledger.leases import REPROCESS
from streams.worker.outboxes import drain


async def publish_outbox(w: Worker, wait: float = 0.0) -> int | None:
    """Publish what reprocessing left in the ledger's outbox, in the order it was made; how
    many, or None when another worker holds the outbox for longer than `wait` seconds (it
    publishes them, in order: one drainer at a time, streams/worker/outboxes.py)."""
    ledger = w.runtime.ledger

    async def publish(items) -> None:
        for _, topic, key, body in items:
            if topic == topics.ADJUDICATED.name:
                await w.topic(topics.ADJUDICATED).send(key=key.encode(), value=body)
                metrics.LINES_OUT.labels("reprocess", "adjudicated").inc()
            elif topic == topics.REMITTANCE_835.name:  # the adjustment's 835: the reversal, then the adjusted claim
                records = [AdjudicatedLine.model_validate(r) for r in orjson.loads(body)]
                await review_outputs.remit(w, key, records)  # the review path's 835 writer
            else:
                await w.topic(topics.REPROCESS_PROPOSALS).send(key=key.encode(), value=body)

    # named as the ledger calls they make (the label of their metric)
    def reprocess_outbox():
        return ledger.reprocess_outbox(500)

    def reprocess_outbox_sent(items) -> None:
        ledger.reprocess_outbox_sent([i for i, *_ in items])

    return await drain(w, REPROCESS, reprocess_outbox, publish, reprocess_outbox_sent, wait)
