"""Stage 4: claim-day edits, duplicates and authorized units against the ledger, one
transaction per claim, then publish every line's decision."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from streams import pipeline, stage, topics
from streams.models import AdjudicatedLine, ClaimWork
from streams.stage import app, runtime


@app.agent(stage.topic(topics.PRICED), name="adjudicate")
async def adjudicate(stream):
    await stage.run(stream, "adjudicate", topics.PRICED, handle)


def _decide_all(claims: Sequence[ClaimWork]) -> list[list[AdjudicatedLine] | Exception]:
    out: list[list[AdjudicatedLine] | Exception] = []
    with runtime.ledger.transaction():
        for work in claims:
            try:
                out.append(pipeline.adjudicate(runtime.ledger, work, runtime.books))
            except pipeline.LedgerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad claim must not stop the batch
                out.append(exc)
    return out


async def handle(events: Sequence[EventT]) -> None:
    claims = [claim for event in events for claim in stage.decode_batch(event).claims]
    results = await runtime.in_ledger(_decide_all, claims)
    for work, decisions in zip(claims, results):
        if isinstance(decisions, Exception):
            await stage.dead_letter("adjudicate", topics.PRICED, work.model_dump_json().encode(), None, decisions)
            continue
        for decision in decisions:
            await stage.publish_decision("adjudicate", decision, work.submitted_at.timestamp())
