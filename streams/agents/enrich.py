"""Stage 2: eligibility, prior authorization and drug data for every line of a claim, then
its price (AWP in effect or fee schedule, under the contract): two pure steps of the
engine in one agent, so a claim makes one hop fewer between intake and adjudication."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from rules import engine
from contract import topics
from streams.worker import stage
from streams.worker.app import Worker


def register(w: Worker) -> None:
    w.agent(topics.ASSEMBLED, "enrich", enrich)


async def enrich(w: Worker, stream):
    await stage.run(w, stream, "enrich", topics.ASSEMBLED, handle, needs_reference=True)


async def handle(w: Worker, events: Sequence[EventT]) -> None:
    await stage.map_claims(w, "enrich", topics.ASSEMBLED, topics.PRICED, events,
                           lambda claim: engine.price(engine.enrich(claim, w.runtime.reference, w.runtime.books), w.runtime.reference))
