"""Stage 3: price the payable lines (AWP in effect or fee schedule, under the contract)."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from rules import engine
from streams import stage, topics
from streams.stage import app, runtime


@app.agent(stage.topic(topics.ENRICHED), name="price")
async def price(stream):
    await stage.run(stream, "price", topics.ENRICHED, handle)


async def handle(events: Sequence[EventT]) -> None:
    await runtime.reference_ready.wait()
    await stage.map_claims("price", topics.ENRICHED, topics.PRICED, events,
                           lambda claim: engine.price(claim, runtime.reference))
