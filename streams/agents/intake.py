"""Stage 1: validate and normalize each submitted line, assemble claims in the ledger, and
forward the claims a batch completed as one message to the enrich stage."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from faust.types import EventT

from contract import topics
from streams.pipeline import steps
from streams.worker import metrics, stage
from contract.models import ClaimWork
from streams.worker.app import Worker


def register(w: Worker) -> None:
    w.agent(topics.SUBMITTED, "intake", intake)


async def intake(w: Worker, stream):
    await stage.run(w, stream, "intake", topics.SUBMITTED, handle, needs_reference=True)


async def handle(w: Worker, events: Sequence[EventT]) -> None:
    metrics.LINES_IN.labels("intake").inc(len(events))
    done = await w.runtime.in_ledger(steps.intake_batch, w.runtime.ledger,
                                   [(e.message.value, e.message.timestamp, e.message.partition, e.message.offset) for e in events],
                                   w.runtime.books)
    w.runtime.answered({r.claim_id for step in done for r in (*step.decisions, *step.rejections) if r.claim_id})
    # a claim once per batch: after a crash every replayed line of an assembled claim hands
    # it on again, and the copies in one message would each be answered downstream
    assembled: dict[int, dict[str, ClaimWork]] = defaultdict(dict)
    for event, step in zip(events, done):
        with stage.answering(event.message.tp):
            await stage.publish(w, "intake", step, topics.SUBMITTED, event.message.key)
        if step.assembled is not None:
            assembled[event.message.partition].setdefault(step.assembled.claim_id, step.assembled)
    for partition, claims in assembled.items():
        with stage.answering_partition(topics.SUBMITTED, partition):
            await stage.forward(w, "intake", topics.ASSEMBLED, list(claims.values()), partition)
