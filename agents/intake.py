"""Stage 1: validate and normalize each submitted line, assemble claims in the ledger, and
forward each complete claim as one message."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from streams import pipeline, stage, topics
from streams.stage import app, runtime


@app.agent(stage.topic(topics.SUBMITTED), name="intake")
async def intake(stream):
    await stage.run(stream, "intake", topics.SUBMITTED, handle)


def _accept_all(events: Sequence[EventT]) -> list[pipeline.Step]:
    steps = []
    for event in events:
        try:
            steps.append(pipeline.intake(runtime.ledger, event.message.value, event.message.timestamp,
                                         runtime.books, event.message.partition))
        except pipeline.LedgerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the batch
            steps.append(pipeline.Step(dead=[pipeline.DeadLetter(raw=event.message.value or b"", error=f"{type(exc).__name__}: {exc}")]))
    return steps


async def handle(events: Sequence[EventT]) -> None:
    steps = await runtime.in_ledger(_accept_all, events)
    for event, step in zip(events, steps):
        await stage.publish("intake", step, topics.SUBMITTED, event.message.key)
        if step.assembled is not None:
            await stage.forward("intake", topics.ASSEMBLED, step.assembled, event.message.partition)
