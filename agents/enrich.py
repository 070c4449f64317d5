"""Stage 2: eligibility, prior authorization and drug data for every line of a claim."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from rules import engine
from streams import stage, topics
from streams.stage import app, runtime


@app.agent(stage.topic(topics.ASSEMBLED), name="enrich")
async def enrich(stream):
    await stage.run(stream, "enrich", topics.ASSEMBLED, handle)


async def handle(events: Sequence[EventT]) -> None:
    await runtime.reference_ready.wait()
    await stage.map_claims("enrich", topics.ASSEMBLED, topics.ENRICHED, events,
                           lambda claim: engine.enrich(claim, runtime.reference, runtime.books))
