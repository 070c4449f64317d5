"""Stage 4: claim-day edits, duplicates and authorized units against the ledger, one
transaction per claim, then publish every line's decision, and hand the decided claims on
to the remittance agent (`claims.internal.decided`, one message per source partition of a
batch, on the same partition number, like the other internal topics). The 835 is built
there, not here, so this stage only pays for one more send per batch."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from faust.types import EventT

from rules.monitor import ShadowResult, compare_claim
from streams import metrics, pipeline, stage, topics
from streams.models import VOID, ClaimWork, build
from streams.remit_models import DecidedClaim, decided_messages
from streams.stage import app, runtime

log = logging.getLogger("claims.adjudicate")


@app.agent(stage.topic(topics.PRICED), name="adjudicate")
async def adjudicate(stream):
    await stage.run(stream, "adjudicate", topics.PRICED, handle)


def _shadow(work: ClaimWork, seen: list[ShadowResult]) -> pipeline.Observer | None:
    """Monitor Mode's observer of one claim's decision (None without a candidate): it decides
    the claim again under the candidate and keeps the comparison in `seen`; a failure there is
    counted and logged, never the live decision's."""
    if runtime.shadow is None:
        return None

    def observe(history, outcome) -> None:  # noqa: ANN001 - pipeline.Observer
        try:
            seen.append(compare_claim(work, history, outcome.new_decisions, runtime.reference, runtime.shadow))
        except Exception as exc:  # noqa: BLE001 - the candidate never touches the live decision
            metrics.SHADOW_FAILED.inc()
            log.error("monitor mode: the candidate could not decide a claim (%s)", type(exc).__name__)

    return observe


def _decide_all(claims: Sequence[tuple[tuple[int, int], ClaimWork]]) -> tuple[list[pipeline.Step | Exception], list[ShadowResult]]:
    """Every claim, with the (partition, offset) of the message that carried it, in one
    ledger transaction; with a candidate rulebook (Monitor Mode) each is also decided under
    it, from the same history, recording nothing."""
    out: list[pipeline.Step | Exception] = []
    shadows: list[ShadowResult] = []
    with runtime.ledger.transaction():
        for source, work in claims:
            seen: list[ShadowResult] = []
            try:
                out.append(pipeline.adjudicate(runtime.ledger, work, runtime.books, _shadow(work, seen), source))
                shadows += seen  # only once the claim's own savepoint holds
            except pipeline.LedgerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad claim must not stop the batch
                out.append(exc)
    return out, shadows


async def handle(events: Sequence[EventT]) -> None:
    claims = []
    for event in events:
        try:
            claims += [((event.message.partition, event.message.offset), claim) for claim in stage.decode_batch(event).claims]
        except Exception as exc:  # noqa: BLE001 - an undecodable message goes to the DLQ alone
            await stage.dead_letter("adjudicate", topics.PRICED, event.message.value, event.message.key, exc, "undecodable")
    metrics.LINES_IN.labels("adjudicate").inc(sum(len(work.lines) for _, work in claims))
    results, shadows = await runtime.in_ledger(_decide_all, claims)
    runtime.answered({work.claim_id for (_, work), step in zip(claims, results) if not isinstance(step, Exception)})
    decided: dict[int, list[DecidedClaim]] = defaultdict(list)
    for ((partition, _), work), step in zip(claims, results, strict=True):
        if isinstance(step, Exception):
            await stage.dead_letter("adjudicate", topics.PRICED, work.model_dump_json().encode(), None, step)
            continue
        for decision in step.decisions:  # a correction's reversals first, then its own decisions
            await stage.publish_decision("adjudicate", decision, work.submitted_at.timestamp())
        for rejection in step.rejections:  # a correction whose original fails the check
            await stage.publish_rejection("adjudicate", rejection)
        head = work.lines[0].line
        if head.is_correction:
            metrics.count_correction("void" if head.claim_frequency == VOID else "replacement",
                                     sum(d.status == "REVERSED" for d in step.decisions),
                                     [r.reasons[0].code for r in step.rejections])
        if step.decisions:  # none when the claim was rejected: nothing to remit
            # trusted values (the ledger's own decisions): no validation on the hot path
            decided[partition].append(build(DecidedClaim, claim_id=work.claim_id, decisions=tuple(step.decisions)))
    for partition, done in decided.items():
        await forward_decided(done, partition)
    for shadow in shadows:
        await stage.publish_shadow(shadow)


async def forward_decided(claims: Sequence[DecidedClaim], partition: int) -> None:
    """`claims.internal.decided` messages (as few as fit the size limit) for the claims of
    one source partition, sent after their decisions (so an offset commit covers both)."""
    for value in decided_messages(claims):
        await stage.topic(topics.DECIDED).send(key=None, value=value, partition=partition)
