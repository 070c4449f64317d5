"""Stage 1: validate and normalize each submitted line, assemble claims in the ledger, and
forward the claims a batch completed as one message to the enrich stage."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from faust.types import EventT

from streams import metrics, pipeline, stage, topics
from streams.models import ClaimWork
from streams.stage import app, runtime


@app.agent(stage.topic(topics.SUBMITTED), name="intake")
async def intake(stream):
    await stage.run(stream, "intake", topics.SUBMITTED, handle, needs_reference=True)


def _accept_all(events: Sequence[EventT]) -> list[pipeline.Step]:
    """The batch's front-end checks, then one ledger transaction for all of it: the parsing
    is done before the write lock is taken, so the other workers wait less for it."""
    checked = [_guarded(event.message.value, pipeline.check, event.message.value) for event in events]
    steps = []
    with runtime.ledger.transaction():
        for event, submitted in zip(events, checked):
            msg = event.message
            steps.append(submitted if isinstance(submitted, pipeline.Step) else
                         _guarded(msg.value, pipeline.assemble, runtime.ledger, submitted, msg.timestamp, runtime.books,
                                  msg.partition, msg.offset))
    return steps


def _guarded(raw: bytes | None, fn, *args):
    """`fn(*args)`, or a dead letter of `raw` when it fails: one bad message must not stop the batch
    (a ledger outage does: the batch is tried again)."""
    try:
        return fn(*args)
    except pipeline.LedgerUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001
        return pipeline.Step(dead=[pipeline.DeadLetter(raw=raw or b"", error=f"{type(exc).__name__}: {exc}")])


async def handle(events: Sequence[EventT]) -> None:
    metrics.LINES_IN.labels("intake").inc(len(events))
    steps = await runtime.in_ledger(_accept_all, events)
    runtime.answered({r.claim_id for step in steps for r in (*step.decisions, *step.rejections) if r.claim_id})
    # a claim once per batch: after a crash every replayed line of an assembled claim hands
    # it on again, and the copies in one message would each be answered downstream
    assembled: dict[int, dict[str, ClaimWork]] = defaultdict(dict)
    for event, step in zip(events, steps):
        with stage.answering(event.message.tp):
            await stage.publish("intake", step, topics.SUBMITTED, event.message.key)
        if step.assembled is not None:
            assembled[event.message.partition].setdefault(step.assembled.claim_id, step.assembled)
    for partition, claims in assembled.items():
        with stage.answering_partition(topics.SUBMITTED, partition):
            await stage.forward("intake", topics.ASSEMBLED, list(claims.values()), partition)
