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
    for event in events:
        try:
            work = engine.price(stage.decode_work(event), runtime.reference)
        except Exception as exc:  # noqa: BLE001
            await stage.dead_letter("price", topics.ENRICHED, event.message.value, event.message.key, exc)
            continue
        await stage.forward("price", topics.PRICED, work, event.message.partition)
