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


def _decide_all(claims: Sequence[ClaimWork | Exception]) -> list[list[AdjudicatedLine] | Exception]:
    out: list[list[AdjudicatedLine] | Exception] = []
    for work in claims:
        if isinstance(work, Exception):
            out.append(work)
            continue
        try:
            out.append(pipeline.adjudicate(runtime.ledger, work, runtime.books))
        except pipeline.LedgerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad claim must not stop the batch
            out.append(exc)
    return out


def _decode(event: EventT) -> ClaimWork | Exception:
    try:
        return stage.decode_work(event)
    except Exception as exc:  # noqa: BLE001
        return exc


async def handle(events: Sequence[EventT]) -> None:
    claims = [_decode(e) for e in events]
    results = await runtime.in_ledger(_decide_all, claims)
    for event, work, decisions in zip(events, claims, results):
        if isinstance(decisions, Exception):
            await stage.dead_letter("adjudicate", topics.PRICED, event.message.value, event.message.key, decisions)
            continue
        for decision in decisions:
            await stage.publish_decision("adjudicate", decision, work.submitted_at.timestamp())
